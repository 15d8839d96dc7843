"""Requests no client should send get a clear 4xx on both databases, never a 5xx: NUL characters
(PostgreSQL cannot even compare text holding one), integers beyond 64 bits (SQLite cannot bind them),
bad filters."""

from __future__ import annotations

import base64

import pytest

from tests.api.test_auth import serve_authed_api
from tests.brightkitchen.test_store import make_event
from tests.databases import url_for

HUGE = "9" * 30
CURSOR_OVERFLOW = base64.urlsafe_b64encode(f"-{HUGE}:x".encode()).decode().rstrip("=")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    for database in url_for(request.param, folder):
        with serve_authed_api(folder, database=database) as running:
            running.users.add_user("admin", "admin", [], "admin-password")
            event = make_event(0)
            running.store.upsert(event)
            running.event_id = event.id
            with running.client(running.login("admin", "admin-password")) as http:
                sub = http.post("/api/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook"}).json()["id"]
                yield running, http, sub


@pytest.mark.parametrize(("path", "status", "says"), [
    ("/api/v1/events?site=%00", 400, "NUL"),
    ("/api/v1/events?camera=a%00b&rule=x", 400, "NUL"),
    ("/api/v1/events/%00", 400, "NUL"),
    ("/api/v1/events/a%00b/audit", 400, "NUL"),
    ("/api/v1/stats?site=%00", 400, "NUL"),
    ("/api/v1/stats.csv?site=%00", 400, "NUL"),
    ("/api/v1/subscriptions/%00", 400, "NUL"),
    ("/api/v1/events/stream?after=1&access_token=%00", 400, "NUL"),
    (f"/api/v1/events?cursor={CURSOR_OVERFLOW}", 400, "malformed cursor"),
    ("/api/v1/events?cursor=!!", 400, "malformed cursor"),
    (f"/api/v1/events/stream?after={HUGE}", 422, "query.after"),
    ("/api/v1/events?since=yesterday", 422, "query.since"),
    ("/api/v1/events?limit=0", 422, "query.limit"),
    (f"/api/v1/events?limit={HUGE}", 422, "query.limit"),
])
def test_bad_queries_get_4xx(api, path, status, says):
    _, http, _ = api
    r = http.get(path)
    assert r.status_code == status and says in r.text, (r.status_code, r.text)


def test_bad_bodies_get_4xx(api):
    running, http, sub = api
    r = http.post("/api/v1/auth/login", json={"username": "ad\x00min", "password": "admin-password"})
    assert r.status_code == 422 and "body.username" in r.text
    r = http.post(f"/api/v1/events/{running.event_id}/review", json={"decision": "confirmed", "note": "a\x00b"})
    assert r.status_code == 422 and "body.note" in r.text
    r = http.post("/api/v1/subscriptions", json={"url": "http://p.example/", "secret": "s" * 16 + "\x00"})
    assert r.status_code == 422 and "body.secret" in r.text
    r = http.post("/api/v1/subscriptions", json={"url": "http://p.example/", "filters": {"sites": ["a b"]}})
    assert r.status_code == 422 and "body.filters.sites.0" in r.text
    r = http.post(f"/api/v1/subscriptions/{sub}/replay", json={"after_seq": int(HUGE)})
    assert r.status_code == 422 and "body.after_seq" in r.text
    r = http.post(f"/api/v1/events/{running.event_id}/review", content=b"decision=confirmed",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422
    assert http.get(f"/api/v1/events/{running.event_id}").json()["review_state"] == "pending"  # nothing changed
