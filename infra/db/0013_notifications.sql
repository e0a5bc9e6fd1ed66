-- Notifications to department supervisors (SLA breaches, escalations, orders no crew can take, orders waiting
-- for verification by hand). The dashboard reads this table; each row is also published to Kafka
-- `notifications` through the outbox. `dedupe_key` makes a timer that fires twice notify once.
CREATE TABLE notifications (
    id               bigserial PRIMARY KEY,
    created_at       timestamptz NOT NULL,
    department_code  text REFERENCES departments (code),
    unit_code        text,
    work_order_id    text,
    incident_id      text,
    kind             text NOT NULL CHECK (kind IN (
                         'sla_breach', 'escalated', 'no_crew', 'verify_by_hand', 'verification_failed',
                         'unroutable', 'dispatch_error')),
    message          text NOT NULL,
    dedupe_key       text NOT NULL UNIQUE,
    read_at          timestamptz,
    read_by          text
);
CREATE INDEX notifications_department_idx ON notifications (department_code, created_at DESC);
CREATE INDEX notifications_unread_idx ON notifications (created_at DESC) WHERE read_at IS NULL;
