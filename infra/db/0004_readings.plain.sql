-- Readings and their rollups on plain PostgreSQL (no TimescaleDB on this machine).
-- Same tables and columns as 0004_readings.timescale.sql; rollups are ordinary tables that the persistence
-- agent keeps current in the same transaction as the rows it inserts (only newly inserted rows are added, so a
-- replayed batch never counts twice). Queries bucket time with date_bin and read the rollups the same way on
-- both paths.

CREATE TABLE readings (
    ts           timestamptz NOT NULL,
    device_id    text NOT NULL,
    metric       text NOT NULL,
    value        double precision NOT NULL,
    ingested_at  timestamptz NOT NULL,  -- when ingest accepted it
    stored_at    timestamptz NOT NULL DEFAULT clock_timestamp(),  -- when this row was written
    seq          bigint,
    PRIMARY KEY (device_id, metric, ts)
);
CREATE INDEX readings_ts_brin ON readings USING brin (ts);


CREATE TABLE readings_1m (
    bucket     timestamptz NOT NULL,
    device_id  text NOT NULL,
    metric     text NOT NULL,
    n          integer NOT NULL,
    sum        double precision NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE INDEX readings_1m_bucket_idx ON readings_1m (bucket);

CREATE TABLE readings_1h (
    bucket     timestamptz NOT NULL,
    device_id  text NOT NULL,
    metric     text NOT NULL,
    n          integer NOT NULL,
    sum        double precision NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE INDEX readings_1h_bucket_idx ON readings_1h (bucket);
