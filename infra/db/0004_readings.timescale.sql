-- cityops: no-transaction
-- Readings and their rollups on TimescaleDB: hypertables, compression, retention and continuous aggregates.
-- Same tables and columns as 0004_readings.plain.sql. Continuous aggregates cannot be created inside a
-- transaction, hence the marker above: the runner executes this file statement by statement.

CREATE EXTENSION IF NOT EXISTS timescaledb;

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
SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'));
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'ts'
);
SELECT add_compression_policy('readings', compress_after => INTERVAL '7 days');
SELECT add_retention_policy('readings', drop_after => INTERVAL '400 days');

-- Real-time aggregates (materialized_only = false): recent minutes not yet materialized are computed on read,
-- matching the plain path, whose rollups are current as soon as a batch commits.
CREATE MATERIALIZED VIEW readings_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket,
       device_id,
       metric,
       count(*)::integer AS n,
       sum(value) AS sum,
       min(value) AS min,
       max(value) AS max
FROM readings
GROUP BY time_bucket(INTERVAL '1 minute', ts), device_id, metric
WITH NO DATA;
SELECT add_continuous_aggregate_policy('readings_1m',
    start_offset => INTERVAL '3 hours', end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_retention_policy('readings_1m', drop_after => INTERVAL '90 days');

-- A hierarchical continuous aggregate (TimescaleDB >= 2.9) on top of the minute rollup.
CREATE MATERIALIZED VIEW readings_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       device_id,
       metric,
       sum(n)::integer AS n,
       sum(sum) AS sum,
       min(min) AS min,
       max(max) AS max
FROM readings_1m
GROUP BY time_bucket(INTERVAL '1 hour', bucket), device_id, metric
WITH NO DATA;
SELECT add_continuous_aggregate_policy('readings_1h',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
