-- Work orders, their append-only audit log (one row per transition) and recorded SLA breaches.

CREATE TABLE work_orders (
    id                  text PRIMARY KEY,
    incident_id         text NOT NULL UNIQUE REFERENCES incidents (id),  -- exactly one order per incident
    title               text NOT NULL,
    source              text NOT NULL CHECK (source IN ('sensor', 'citizen', 'patrol', 'dispatcher')),
    category_code       text NOT NULL,
    department_code     text NOT NULL REFERENCES departments (code),
    unit_code           text NOT NULL,
    priority            text NOT NULL CHECK (priority IN ('P1', 'P2', 'P3', 'P4')),
    state               text NOT NULL CHECK (state IN (
                            'created', 'dispatched', 'accepted', 'en_route', 'on_site', 'resolved',
                            'verifying', 'closed', 'rejected', 'reopened', 'cancelled')),
    crew_id             text REFERENCES crews (id),
    position            geometry(Point, 4326),
    grid_cell_code      text,
    district_code       text,
    version             integer NOT NULL DEFAULT 0,
    escalation_level    integer NOT NULL DEFAULT 0,
    reopen_count        integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    ack_due_at          timestamptz,  -- SLA: the crew accepts by then
    arrive_due_at       timestamptz,  -- SLA: the crew is on site by then
    resolve_due_at      timestamptz,  -- SLA: the crew reports it resolved by then
    verify_until        timestamptz   -- verification by the city ends then (the readings must stay normal)
);
CREATE INDEX work_orders_state_idx ON work_orders (state);
CREATE INDEX work_orders_crew_idx ON work_orders (crew_id) WHERE crew_id IS NOT NULL;
CREATE INDEX work_orders_department_idx ON work_orders (department_code, created_at DESC);

CREATE TABLE work_order_events (
    work_order_id  text NOT NULL REFERENCES work_orders (id),
    seq            integer NOT NULL CHECK (seq > 0),
    action         text NOT NULL,
    from_state     text NOT NULL,
    to_state       text NOT NULL,
    actor_kind     text NOT NULL CHECK (actor_kind IN ('system', 'dispatcher', 'crew')),
    actor_id       text NOT NULL,
    at             timestamptz NOT NULL,
    priority       text NOT NULL,
    crew_id        text,
    position       geometry(Point, 4326),
    note           text NOT NULL DEFAULT '',
    PRIMARY KEY (work_order_id, seq)
);
CREATE INDEX work_order_events_at_idx ON work_order_events (at);

-- The audit log is append-only: corrections are new events, never edits.
CREATE FUNCTION work_order_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'work_order_events is append-only (% refused on work order %)', TG_OP, OLD.work_order_id;
END;
$$;
CREATE TRIGGER work_order_events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON work_order_events
    FOR EACH ROW EXECUTE FUNCTION work_order_events_append_only();

CREATE TABLE sla_breaches (
    work_order_id  text NOT NULL REFERENCES work_orders (id),
    stage          text NOT NULL CHECK (stage IN ('acknowledge', 'arrive', 'resolve')),
    due_at         timestamptz NOT NULL,
    detected_at    timestamptz NOT NULL,
    priority       text NOT NULL,
    department_code text NOT NULL,
    PRIMARY KEY (work_order_id, stage, due_at)
);

-- The transactional outbox: events written in the same transaction as the change they describe, then published
-- to Kafka (and crews' MQTT topics) by the dispatcher's relay. A crash between the two publishes again; every
-- event carries its work order id and seq, so consumers drop what they have seen.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    topic         text NOT NULL,
    key           text NOT NULL,
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
