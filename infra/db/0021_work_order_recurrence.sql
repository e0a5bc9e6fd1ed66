-- An incident that comes back after its work order was closed (the city verified the fix) or cancelled gets a new
-- work order: the problem recurred, and someone must go again. So "exactly one work order per incident" becomes
-- "at most one *open* work order per incident". Replays still make none: the dispatcher decides only on events the
-- projection has not seen before, and a recurrence's id is derived from the incident and how many orders it had.
ALTER TABLE work_orders DROP CONSTRAINT work_orders_incident_id_key;
CREATE UNIQUE INDEX work_orders_one_open_per_incident ON work_orders (incident_id)
    WHERE state NOT IN ('closed', 'cancelled');
CREATE INDEX work_orders_incident_idx ON work_orders (incident_id, created_at DESC);
