-- Crew position history as a hypertable. Same table as 0005_crew_positions.plain.sql.
CREATE TABLE crew_positions (
    ts             timestamptz NOT NULL,
    crew_id        text NOT NULL,
    position       geometry(Point, 4326) NOT NULL,
    work_order_id  text,
    PRIMARY KEY (crew_id, ts)
);
SELECT create_hypertable('crew_positions', by_range('ts', INTERVAL '1 day'));
SELECT add_retention_policy('crew_positions', drop_after => INTERVAL '400 days');
