-- Third-party clients of the HTTP API (Open311 GeoReport v2 apps) and the citizen reports they submit.
--
-- A client's key is random (256 bits) and shown once by `cityops api-keys add NAME`; only its SHA-256 is kept,
-- which is enough for a key of that strength (a password needs scrypt because people choose weak ones).

CREATE TABLE api_clients (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    key_hash    text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    key_prefix  text NOT NULL,  -- the first characters of the key, so a person can tell keys apart
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

-- What a citizen told through Open311 beyond the incident itself. Contact details stay here: they are never put
-- on the `incidents` topic, nor returned by GET requests.
CREATE TABLE open311_requests (
    incident_id     text PRIMARY KEY REFERENCES incidents (id),
    api_client      text NOT NULL REFERENCES api_clients (name),
    service_code    text NOT NULL,
    description     text NOT NULL DEFAULT '' CHECK (length(description) <= 4000),
    address_string  text,
    email           text,
    first_name      text,
    last_name       text,
    phone           text,
    device_id       text,
    account_id      text,
    media_url       text,
    attributes      jsonb NOT NULL DEFAULT '{}',
    requested_at    timestamptz NOT NULL
);
CREATE INDEX open311_requests_requested_idx ON open311_requests (requested_at DESC);
