-- Users (people who log in), their sessions, machine API keys, and the review audit trail.
-- Sites are JSON lists of site ids, an empty list meaning every site. Secrets are stored only as hashes.
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    sites TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_name);
CREATE INDEX sessions_expires ON sessions (expires_ms);
CREATE TABLE api_keys (
    name TEXT PRIMARY KEY,
    key_sha256 TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    sites TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE TABLE event_reviews (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    actor TEXT NOT NULL,
    actor_role TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    note TEXT NOT NULL,
    photo TEXT,
    photo_sha256 TEXT
);
CREATE INDEX event_reviews_event ON event_reviews (event_id, seq);
