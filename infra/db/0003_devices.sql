-- The device registry. A device's MQTT credential is stored only as Mosquitto's $7$ PBKDF2 hash, so the
-- broker's password file can be regenerated from this table without any plaintext.

CREATE TABLE device_types (
    code                 text PRIMARY KEY,
    name                 text NOT NULL,
    category_code        text NOT NULL,
    expected_interval_s  integer NOT NULL CHECK (expected_interval_s > 0),
    fiware_model         text,
    -- [{"name": "water_level_cm", "unit": "cm", "minimum": 0, "maximum": 500, "fiware_attribute": ...}, ...]
    metrics              jsonb NOT NULL
);

CREATE TABLE devices (
    id                   text PRIMARY KEY,
    type_code            text NOT NULL REFERENCES device_types (code),
    category_code        text NOT NULL,
    department_code      text NOT NULL REFERENCES departments (code),
    position             geometry(Point, 4326) NOT NULL,
    grid_cell_code       text REFERENCES grid_cells (code),
    district_code        text REFERENCES districts (code),
    expected_interval_s  integer NOT NULL CHECK (expected_interval_s > 0),
    status               text NOT NULL DEFAULT 'provisioned'
                         CHECK (status IN ('provisioned', 'online', 'offline', 'faulty', 'decommissioned')),
    status_at            timestamptz,
    last_seen_at         timestamptz,
    battery_pct          real CHECK (battery_pct BETWEEN 0 AND 100),
    credential_hash      text,
    registered_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_position_idx ON devices USING gist (position);
CREATE INDEX devices_grid_cell_idx ON devices (grid_cell_code);
CREATE INDEX devices_district_idx ON devices (district_code);
CREATE INDEX devices_status_idx ON devices (status);
