-- Indexes the dashboard's queries need (dashboard/queries.py), so the wall's counters stay fast at city scale:
-- the SLA board and the mean times read work orders created since a cut-off; the work-order counters read the
-- orders that reached a final state today.
CREATE INDEX work_orders_created_idx ON work_orders (created_at);
CREATE INDEX work_orders_state_updated_idx ON work_orders (state, updated_at);
