-- Incidents and their provenance: the rule (id, version, condition) and the readings that triggered them.

CREATE TABLE incidents (
    id               text PRIMARY KEY,
    rule_id          text NOT NULL,
    rule_version     integer NOT NULL,
    source           text NOT NULL,  -- a device id, or a grid cell for composite rules
    category_code    text NOT NULL,
    severity         text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    state            text NOT NULL CHECK (state IN ('open', 'cleared', 'closed')),
    title            text NOT NULL,
    condition        text NOT NULL,
    position         geometry(Point, 4326),
    grid_cell_code   text,
    district_code    text,
    parent_id        text REFERENCES incidents (id),
    opened_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    cleared_at       timestamptz,
    closed_at        timestamptz,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    CHECK (cleared_at IS NULL OR cleared_at >= opened_at),
    CHECK (closed_at IS NULL OR closed_at >= opened_at)
);
-- One open incident per (source, rule): repeats update it.
CREATE UNIQUE INDEX incidents_one_open_per_source_rule ON incidents (source, rule_id) WHERE state = 'open';
CREATE INDEX incidents_state_opened_idx ON incidents (state, opened_at DESC);
CREATE INDEX incidents_parent_idx ON incidents (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX incidents_district_idx ON incidents (district_code, opened_at DESC);

-- The readings behind an incident, by the key they are stored under in `readings`.
CREATE TABLE incident_evidence (
    incident_id  text NOT NULL REFERENCES incidents (id),
    device_id    text NOT NULL,
    metric       text NOT NULL,
    ts           timestamptz NOT NULL,
    value        double precision NOT NULL,
    PRIMARY KEY (incident_id, device_id, metric, ts)
);
