-- Device connection history: birth messages (online) and MQTT Last Wills (offline), as ingest received them.
-- Retained replays (the broker repeating a device's last status when ingest resubscribes) are not changes and
-- are not stored here; they only fill devices.status when nothing newer is known.
CREATE TABLE device_status_events (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    state       text NOT NULL CHECK (state IN ('online', 'offline')),
    PRIMARY KEY (device_id, ts, state)
);
CREATE INDEX device_status_events_ts_idx ON device_status_events (ts);
