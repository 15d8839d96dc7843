-- The event feed: a change log every output reads, webhook subscriptions and their durable outbox.
-- Numbers are never reused (AUTOINCREMENT): clients resume from a seq, so a pruned seq must stay gone.

-- One row per stored event revision, written in the transaction that stores it. seq is commit order.
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    site TEXT NOT NULL,
    camera TEXT NOT NULL,
    rule TEXT NOT NULL,
    phase TEXT NOT NULL,
    payload TEXT NOT NULL,
    stored_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX changes_event_revision ON changes (event_id, revision);
CREATE INDEX changes_stored ON changes (stored_ms);

-- Filters are JSON arrays, an empty array matches everything.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    sites TEXT NOT NULL DEFAULT '[]',
    cameras TEXT NOT NULL DEFAULT '[]',
    rules TEXT NOT NULL DEFAULT '[]',
    phases TEXT NOT NULL DEFAULT '[]',
    created_ms BIGINT NOT NULL,
    last_success_ms BIGINT,
    last_attempt_ms BIGINT,
    last_error TEXT,
    last_error_ms BIGINT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0
);

-- The outbox: one row per (subscription, change). state is pending, delivered or dead.
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL UNIQUE,
    subscription_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    camera TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    last_attempt_ms BIGINT,
    last_status INTEGER,
    last_error TEXT,
    delivered_ms BIGINT
);
CREATE UNIQUE INDEX deliveries_subscription_seq ON deliveries (subscription_id, seq);
CREATE INDEX deliveries_pending ON deliveries (subscription_id, camera, seq) WHERE state = 'pending';
CREATE INDEX deliveries_seq ON deliveries (seq);

-- How far a pushing output (e.g. a Redis stream) has got in the change log.
CREATE TABLE feed_cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
