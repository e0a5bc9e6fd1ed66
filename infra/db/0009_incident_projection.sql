-- The projection of the `incidents` topic (docs/RULES.md, "The database projection"), and the incident's
-- own timeline for the case page.
--
-- Events of one incident are applied in seq order and only once (`seq` is the last applied). The topic is keyed
-- by incident id, so events of *different* incidents of one (source, rule) can reach the projection out of order
-- across partitions: the engine's "one open incident per (source, rule)" holds in the engine (property-tested in
-- rules/), not in every moment of the projection, so the unique index of 0006 becomes an ordinary one.

DROP INDEX incidents_one_open_per_source_rule;
CREATE INDEX incidents_source_rule_idx ON incidents (source, rule_id) WHERE state <> 'closed';

ALTER TABLE incidents
    ADD COLUMN kind text NOT NULL DEFAULT 'device' CHECK (kind IN ('device', 'composite', 'correlation', 'report')),
    ADD COLUMN flapping boolean NOT NULL DEFAULT false,
    ADD COLUMN seq integer NOT NULL DEFAULT 0,
    ADD COLUMN detail text NOT NULL DEFAULT '',
    -- when the projection first stored the incident (wall clock), for publish-to-incident latency
    ADD COLUMN projected_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX incidents_top_level_open_idx ON incidents (opened_at DESC) WHERE parent_id IS NULL AND state <> 'closed';

-- A `correlated` event (keyed by the parent) can be projected before the child's own `opened` (keyed by the
-- child, maybe another partition): the link is kept here and applied to the child whenever it arrives.
CREATE TABLE incident_correlations (
    child_id       text PRIMARY KEY,
    parent_id      text NOT NULL REFERENCES incidents (id),
    correlated_at  timestamptz NOT NULL
);
CREATE INDEX incident_correlations_parent_idx ON incident_correlations (parent_id);

-- Every applied event of an incident: its timeline (opened, updated, cleared, acknowledged ...).
CREATE TABLE incident_events (
    incident_id  text NOT NULL REFERENCES incidents (id),
    seq          integer NOT NULL CHECK (seq > 0),
    type         text NOT NULL CHECK (type IN ('opened', 'updated', 'reopened', 'cleared', 'closed',
                                               'acknowledged', 'correlated')),
    at           timestamptz NOT NULL,  -- event time
    severity     text NOT NULL,
    state        text NOT NULL,
    detail       text NOT NULL DEFAULT '',
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (incident_id, seq)
);
CREATE INDEX incident_events_at_idx ON incident_events (at);

-- Acknowledgements by people, kept even when the engine's next event does not know of them yet.
CREATE TABLE incident_acknowledgements (
    incident_id      text PRIMARY KEY REFERENCES incidents (id),
    acknowledged_by  text NOT NULL,
    acknowledged_at  timestamptz NOT NULL,
    note             text NOT NULL DEFAULT ''
);
