-- Who handles problems and where: departments, the unit grid (万米单元网格), communities, districts, crews.

CREATE TABLE departments (
    code        text PRIMARY KEY,
    name        text NOT NULL,
    name_zh     text NOT NULL DEFAULT ''
);

CREATE TABLE districts (
    code        text PRIMARY KEY,
    name        text NOT NULL,
    geom        geometry(MultiPolygon, 4326) NOT NULL
);
CREATE INDEX districts_geom_idx ON districts USING gist (geom);

CREATE TABLE communities (
    code            text PRIMARY KEY,
    district_code   text NOT NULL REFERENCES districts (code),
    name            text NOT NULL,
    geom            geometry(MultiPolygon, 4326) NOT NULL
);
CREATE INDEX communities_geom_idx ON communities USING gist (geom);

-- About 100 m x 100 m cells, the smallest unit of management.
CREATE TABLE grid_cells (
    code            text PRIMARY KEY,
    community_code  text REFERENCES communities (code),
    district_code   text REFERENCES districts (code),
    geom            geometry(Polygon, 4326) NOT NULL
);
CREATE INDEX grid_cells_geom_idx ON grid_cells USING gist (geom);
CREATE INDEX grid_cells_district_idx ON grid_cells (district_code);

-- A department's responsible unit (e.g. the drainage team for Kallio), based at a depot.
CREATE TABLE department_units (
    code             text PRIMARY KEY,
    department_code  text NOT NULL REFERENCES departments (code),
    name             text NOT NULL,
    depot            geometry(Point, 4326)
);

-- The districts a unit is responsible for (a city-wide unit, such as a fire station, covers several).
CREATE TABLE department_unit_districts (
    unit_code      text NOT NULL REFERENCES department_units (code),
    district_code  text NOT NULL REFERENCES districts (code),
    PRIMARY KEY (unit_code, district_code)
);
CREATE INDEX department_unit_districts_district_idx ON department_unit_districts (district_code);

CREATE TABLE crews (
    id               text PRIMARY KEY,
    department_code  text NOT NULL REFERENCES departments (code),
    unit_code        text REFERENCES department_units (code),
    name             text NOT NULL,
    skills           text[] NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'busy', 'off_duty')),
    position         geometry(Point, 4326),
    position_at      timestamptz,
    credential_hash  text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crews_department_idx ON crews (department_code);
