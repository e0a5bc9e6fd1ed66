-- People who use the platform (command staff, dispatchers, crews, viewers, device administrators) and the
-- record of who signed in. Roles and what they may do are code (domain/access.py: one permissions table);
-- this table says who has which role. Passwords are stored only as scrypt hashes.

CREATE TABLE users (
    username         text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    display_name     text NOT NULL,
    role             text NOT NULL CHECK (role IN ('commander', 'dispatcher', 'crew', 'viewer', 'device_admin')),
    crew_id          text REFERENCES crews (id),
    department_code  text REFERENCES departments (code),
    password_hash    text NOT NULL CHECK (password_hash LIKE 'scrypt$%'),
    disabled         boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- a crew user acts as exactly one crew; no other role belongs to a crew
    CHECK ((role = 'crew') = (crew_id IS NOT NULL))
);
CREATE UNIQUE INDEX users_one_per_crew ON users (crew_id) WHERE crew_id IS NOT NULL;

-- Sign-ins and refusals, for the audit trail (append-only, like the work-order log).
CREATE TABLE sign_ins (
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    username  text NOT NULL,
    channel   text NOT NULL CHECK (channel IN ('api', 'dashboard')),
    success   boolean NOT NULL,
    reason    text NOT NULL DEFAULT '',
    client    text NOT NULL DEFAULT ''
);
CREATE INDEX sign_ins_at_idx ON sign_ins (at);
CREATE INDEX sign_ins_username_idx ON sign_ins (username, at DESC);
