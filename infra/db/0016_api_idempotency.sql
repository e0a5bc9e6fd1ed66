-- Idempotency keys of the HTTP API: the first successful response to a changing request, replayed for a repeat.
--
-- A key belongs to whoever sent it (a user, or an Open311 client), so two clients' keys never collide. The row is
-- inserted in the same transaction as the change: a concurrent repeat waits on the key and then replays, and a
-- refused request (rolled back) leaves no row, so its key may be used again.
CREATE TABLE api_idempotency (
    principal     text NOT NULL,   -- 'user:<username>' or 'client:<api client name>'
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    method        text NOT NULL,
    path          text NOT NULL,
    request_hash  text NOT NULL,   -- SHA-256 of method, path, query and canonical body
    status        integer,         -- NULL until the change commits (never visible outside its transaction)
    body          bytea,
    content_type  text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (principal, key)
);
CREATE INDEX api_idempotency_created_idx ON api_idempotency (created_at);
