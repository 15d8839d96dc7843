-- Events: one row per violation, updated in place as its phase and revision change.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    phase TEXT NOT NULL,
    review_state TEXT NOT NULL,
    site TEXT NOT NULL,
    camera TEXT NOT NULL,
    rule TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_started ON events (started_ms DESC, id DESC);
CREATE INDEX events_site_started ON events (site, started_ms DESC);
CREATE INDEX events_camera_started ON events (camera, started_ms DESC);
CREATE INDEX events_rule_started ON events (rule, started_ms DESC);
