-- Crew position history on plain PostgreSQL. Same table as 0005_crew_positions.timescale.sql.
CREATE TABLE crew_positions (
    ts             timestamptz NOT NULL,
    crew_id        text NOT NULL,
    position       geometry(Point, 4326) NOT NULL,
    work_order_id  text,
    PRIMARY KEY (crew_id, ts)
);
CREATE INDEX crew_positions_ts_brin ON crew_positions USING brin (ts);
