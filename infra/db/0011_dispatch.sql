-- Dispatch (派遣): what the dispatcher decided for each incident, the incidents it holds back for correlation,
-- which incidents each work order covers, and a second delivery channel in the outbox for crews' MQTT tasks.

-- The outbox carries Kafka records (channel 'kafka', topic = a Kafka topic) and crews' tasks (channel 'mqtt',
-- topic = crews/{crew_id}/tasks), written in the same transaction as the change they describe.
ALTER TABLE outbox
    ADD COLUMN channel text NOT NULL DEFAULT 'kafka' CHECK (channel IN ('kafka', 'mqtt'));

-- Device incidents held back for a short window before a work order is created, so that incidents which end up
-- under one parent (a flood, a correlation group) make one work order, not one each (docs/DISPATCH.md).
CREATE TABLE dispatch_holds (
    incident_id  text PRIMARY KEY REFERENCES incidents (id),
    held_at      timestamptz NOT NULL,
    hold_until   timestamptz NOT NULL,
    area_key     text NOT NULL  -- the lock key decisions about this incident are serialised on
);
CREATE INDEX dispatch_holds_until_idx ON dispatch_holds (hold_until);

-- The incidents a work order answers for: its own ('origin') and those put under its incident later
-- ('attached'). Verification by the city looks at all of them.
CREATE TABLE work_order_incidents (
    work_order_id  text NOT NULL REFERENCES work_orders (id),
    incident_id    text NOT NULL REFERENCES incidents (id),
    role           text NOT NULL CHECK (role IN ('origin', 'attached')),
    attached_at    timestamptz NOT NULL,
    PRIMARY KEY (work_order_id, incident_id)
);
CREATE INDEX work_order_incidents_incident_idx ON work_order_incidents (incident_id);

-- Every decision the dispatcher took about an incident event, with its reason: why an incident has a work order,
-- or why it has none (held, merged into its parent, cancelled, unroutable ...). Append-only.
CREATE TABLE dispatch_decisions (
    id             bigserial PRIMARY KEY,
    incident_id    text NOT NULL,
    event_seq      integer,
    decided_at     timestamptz NOT NULL,
    decision       text NOT NULL CHECK (decision IN (
                       'created', 'held', 'released', 'merged', 'attached', 'taken_over', 'escalated',
                       'cancelled', 'no_action', 'unroutable', 'error')),
    work_order_id  text,
    detail         text NOT NULL DEFAULT ''
);
CREATE INDEX dispatch_decisions_incident_idx ON dispatch_decisions (incident_id, id);

CREATE INDEX work_orders_open_idx ON work_orders (state, updated_at)
    WHERE state NOT IN ('closed', 'cancelled');
