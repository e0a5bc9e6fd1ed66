-- Crew updates as the platform applied them: once per (crew, message id), with the outcome and, when refused,
-- the reason the crew was told. A QoS 1 redelivery or a Kafka replay finds its receipt and changes nothing.
CREATE TABLE crew_update_receipts (
    crew_id        text NOT NULL,
    message_id     text NOT NULL,
    received_at    timestamptz NOT NULL,  -- when the platform received it (the gateway's Kafka record time)
    reported_at    timestamptz NOT NULL,  -- the crew app's own time for it
    action         text NOT NULL,
    work_order_id  text,
    outcome        text NOT NULL CHECK (outcome IN ('applied', 'refused', 'position')),
    reason         text NOT NULL DEFAULT '',
    PRIMARY KEY (crew_id, message_id)
);
CREATE INDEX crew_update_receipts_received_idx ON crew_update_receipts (received_at);
CREATE INDEX crew_update_receipts_refused_idx ON crew_update_receipts (crew_id, received_at)
    WHERE outcome = 'refused';
