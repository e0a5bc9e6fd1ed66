-- Every changing request to the HTTP API: who, what, on what, with what result, when. Append-only, like the
-- work-order log: corrections are new rows, never edits.
CREATE TABLE api_audit (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    principal        text NOT NULL,        -- 'user:<username>', 'client:<api client>' or 'anonymous'
    role             text NOT NULL DEFAULT '',
    method           text NOT NULL,
    path             text NOT NULL,
    action           text NOT NULL,        -- e.g. 'work_order.accept', 'incident.acknowledge', 'open311.request'
    target           text NOT NULL DEFAULT '',  -- the id acted on (work order, incident, crew)
    status           integer NOT NULL,     -- the HTTP status answered
    result           text NOT NULL CHECK (result IN ('done', 'refused', 'replayed')),
    detail           text NOT NULL DEFAULT '',
    idempotency_key  text,
    client           text NOT NULL DEFAULT ''  -- the remote address
);
CREATE INDEX api_audit_at_idx ON api_audit (at);
CREATE INDEX api_audit_target_idx ON api_audit (target, at);

CREATE FUNCTION api_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'api_audit is append-only (% refused on row %)', TG_OP, OLD.id;
END;
$$;
CREATE TRIGGER api_audit_no_update_or_delete
    BEFORE UPDATE OR DELETE ON api_audit
    FOR EACH ROW EXECUTE FUNCTION api_audit_append_only();
