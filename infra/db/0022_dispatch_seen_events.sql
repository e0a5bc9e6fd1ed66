-- The incident events the dispatcher has decided on, kept apart from the projection's timeline.
--
-- Until now the dispatcher decided only on events new to `incident_events`. But the detection worker projects the
-- same events into that table, so whenever the worker's projection got there first the dispatcher saw nothing new
-- and decided nothing: an incident could stay open with no work order, no hold and no decision (seen in the failure
-- drill). The dispatcher's own record of what it has decided makes a replay harmless without depending on who
-- projected first.
CREATE TABLE dispatch_seen_events (
    incident_id  text NOT NULL,
    seq          integer NOT NULL CHECK (seq > 0),
    seen_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (incident_id, seq)
);

-- Events projected before this table existed were decided on, or lost, by the old rule; they are not decided again.
INSERT INTO dispatch_seen_events (incident_id, seq, seen_at)
SELECT incident_id, seq, recorded_at FROM incident_events;
