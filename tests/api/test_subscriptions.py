"""Webhook subscriptions: the HTTP resource (create, state, delete, replay), bad requests, site scopes,
the OpenAPI description of the payload, and the outbox's filters and transactional queueing."""

from __future__ import annotations

import httpx
import pytest

from api.app import AppContext, create_app
from brightkitchen.bus import InProcessBus
from brightkitchen.changes import ChangeLog, record_change
from brightkitchen.config import AuthConfig
from brightkitchen.events import utc
from brightkitchen.outbox import Filters, Outbox, queue_deliveries
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore
from brightkitchen.users import UserStore
from tests.brightkitchen.test_store import make_event
from tests.serving import serve_in_thread

SUBS = "/api/v1/subscriptions"


def test_subscription_lifecycle(running_api):
    with running_api.client() as http:
        body = {"url": "https://platform.example/hooks/bk", "filters": {"phases": ["open"]}}
        r = http.post(SUBS, json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40  # generated, shown once
        assert created["filters"] == {"sites": [], "cameras": [], "rules": [], "phases": ["open"]}
        assert created["delivery"] == {
            "backlog": 0, "dead": 0, "last_success_at": None, "last_attempt_at": None,
            "last_error": None, "last_error_at": None, "consecutive_failures": 0,
        }
        sub_id = created["id"]
        own = http.post(SUBS, json={"url": "http://10.0.0.5:9000/", "secret": "s" * 16}).json()
        assert own["secret"] is None  # a secret the subscriber chose is not echoed
        listed = http.get(SUBS).json()
        assert [s["id"] for s in listed] == [sub_id, own["id"]] and all("secret" not in s for s in listed)
        one = http.get(f"{SUBS}/{sub_id}").json()
        assert one["url"] == "https://platform.example/hooks/bk" and "secret" not in one
        assert http.post(f"{SUBS}/{sub_id}/replay").json() == {"queued": 0}
        assert http.delete(f"{SUBS}/{sub_id}").status_code == 204
        assert http.get(f"{SUBS}/{sub_id}").status_code == 404
        assert http.delete(f"{SUBS}/{sub_id}").status_code == 404
        assert http.post(f"{SUBS}/{sub_id}/replay").status_code == 404


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"url": "ftp://platform.example/x"}, "body.url"),
        ({"url": "not a url"}, "body.url"),
        ({"url": "https://p.example/", "filters": {"sites": "s1"}}, "body.filters.sites"),
        ({"url": "https://p.example/", "filters": {"sites": [1]}}, "body.filters.sites.0"),
        ({"url": "https://p.example/", "filters": {"phases": ["opened"]}}, "body.filters.phases.0"),
        ({"url": "https://p.example/", "filters": {"camera": ["c1"]}}, "body.filters.camera"),
        ({"url": "https://p.example/", "secret": "short"}, "body.secret"),
        ({"url": "https://p.example/", "events": ["x"]}, "body.events"),
    ],
)
def test_bad_subscriptions_get_422_naming_the_field(running_api, body, loc):
    with running_api.client() as http:
        r = http.post(SUBS, json=body)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text


def test_bodies_that_are_not_json_get_415(running_api):
    with running_api.client() as http:
        r = http.post(SUBS, content='{"url": "https://p.example/"}', headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and "application/json" in r.json()["detail"]
        r = http.post(SUBS, data={"url": "https://p.example/"})
        assert r.status_code == 415
        r = http.post(SUBS, content="{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422
        sub = http.post(SUBS, json={"url": "https://p.example/"}).json()["id"]
        r = http.post(f"{SUBS}/{sub}/replay", json={"after_seq": 1, "since": "2026-01-01T00:00:00Z"})
        assert r.status_code == 422 and "not both" in r.json()["detail"][0]["msg"]
        r = http.post(f"{SUBS}/{sub}/replay", json={"after_seq": -1})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body.after_seq"


def test_the_openapi_document_describes_the_webhook_payload(running_api):
    with running_api.client() as http:
        spec = http.get("/openapi.json").json()
    hook = spec["webhooks"]["event-revision"]["post"]
    assert hook["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WebhookPayload"
    }
    headers = {p["name"] for p in hook["parameters"]}
    assert headers >= {"x-brightkitchen-signature", "x-brightkitchen-timestamp", "x-brightkitchen-event-id",
                       "x-brightkitchen-delivery"}
    payload = spec["components"]["schemas"]["WebhookPayload"]
    assert set(payload["required"]) == {"event", "seq", "delivery_id"}
    assert {"/api/v1/subscriptions", "/api/v1/subscriptions/{sub_id}/replay"} <= set(spec["paths"])


def test_scoped_subscribers_stay_in_their_sites(tmp_path, database_url):
    store = EventStore(database_url)
    users = UserStore(store)
    _, key_s1 = users.add_key("platform-s1", ["s1"])
    _, key_other = users.add_key("platform-all", [])
    users.add_user("manager", "site_manager", ["s1"], "manager-password")
    ctx = AppContext(store=store, snapshots=SnapshotStore(tmp_path / "snapshots"), bus=InProcessBus(),
                     camera_status=lambda: [], auth=AuthConfig(enabled=True))
    with serve_in_thread(create_app(ctx)) as url, httpx.Client(base_url=url, timeout=10) as http:
        s1 = {"Authorization": f"Bearer {key_s1}"}
        body = {"url": "https://p.example/"}
        assert http.post(SUBS, json=body).status_code == 401
        r = http.post(SUBS, json={**body, "filters": {"sites": ["s1", "s2"]}}, headers=s1)
        assert r.status_code == 403 and "s2" in r.json()["detail"]
        r = http.post(SUBS, json=body, headers=s1)
        assert r.status_code == 201 and r.json()["filters"]["sites"] == ["s1"]  # its sites, not all
        mine = r.json()["id"]
        other = {"X-API-Key": key_other}
        assert http.get(SUBS, headers=other).json() == []
        assert http.get(f"{SUBS}/{mine}", headers=other).status_code == 404
        assert http.delete(f"{SUBS}/{mine}", headers=other).status_code == 404
        assert [s["id"] for s in http.get(SUBS, headers=s1).json()] == [mine]
        token = http.post("/api/v1/auth/login", json={"username": "manager", "password": "manager-password"})
        manager = {"Authorization": f"Bearer {token.json()['token']}"}
        assert http.get(SUBS, headers=manager).status_code == 403
    store.close()


@pytest.fixture
def feed_store(database_url):
    store = EventStore(database_url)
    store.on_stored += [record_change, queue_deliveries]
    yield store
    store.close()


def test_filters_select_the_changes_a_subscription_gets(feed_store):
    outbox = Outbox(feed_store)
    everything = outbox.create("t:a", "https://a.example/", "k" * 16, Filters())
    closed_c2 = outbox.create("t:b", "https://b.example/", "k" * 16,
                              Filters(cameras=["c2"], phases=["closed"]))
    other_site = outbox.create("t:c", "https://c.example/", "k" * 16, Filters(sites=["s9"]))
    rule = outbox.create("t:d", "https://d.example/", "k" * 16, Filters(rules=["no_hat"], cameras=["c1"]))
    for i in range(4):
        opened = make_event(i, camera=f"c{1 + i % 2}")
        feed_store.upsert(opened)
        feed_store.upsert(opened.model_copy(update={"phase": "closed", "revision": 2}))
    backlog = {s.id: s.backlog for s in outbox.list()}
    assert backlog == {everything.id: 8, closed_c2.id: 2, other_site.id: 0, rule.id: 4}
    due = outbox.due(now=2**62)  # the head of each (subscription, camera) queue, nothing behind it
    assert sorted((d.subscription_id, d.camera, d.seq) for d in due) == sorted(
        [(everything.id, "c1", 1), (everything.id, "c2", 3), (closed_c2.id, "c2", 4), (rule.id, "c1", 1)]
    )


def test_an_event_is_never_stored_without_its_change_and_deliveries(feed_store):
    outbox = Outbox(feed_store)
    sub = outbox.create("t:a", "https://a.example/", "k" * 16, Filters())

    def crash(conn, event) -> None:
        raise RuntimeError("the process dies mid-transaction")

    feed_store.on_stored.append(crash)
    with pytest.raises(RuntimeError):
        feed_store.upsert(make_event(0))
    feed_store.on_stored.remove(crash)
    assert feed_store.count() == 0 and ChangeLog(feed_store).after(0) == []
    assert outbox.get(sub.id).backlog == 0
    event = make_event(0)
    assert feed_store.upsert(event) and not feed_store.upsert(event)  # a duplicate queues nothing
    changes = ChangeLog(feed_store).after(0)
    # (on PostgreSQL the rolled-back change may have used up a seq: seqs increase, with gaps)
    assert [c.event_id for c in changes] == [event.id] and outbox.get(sub.id).backlog == 1


def test_retention_forgets_only_what_nothing_needs(feed_store):
    outbox, changes = Outbox(feed_store), ChangeLog(feed_store)
    outbox.create("t:a", "https://a.example/", "k" * 16, Filters(cameras=["c1"]))
    for i in range(4):
        feed_store.upsert(make_event(i, camera=f"c{1 + i % 2}"))  # seq 1, 3 for c1; 2, 4 for c2
    first = outbox.due(now=2**62)[0]
    assert first.seq == 1
    outbox.delivered(first, 204, now=1000)
    changes.set_cursor("redis_stream:x", 2)  # a pushing output has got as far as seq 2
    assert outbox.prune(before_ms=2000) == 1  # the delivered delivery
    assert changes.prune(before=utc(4_000_000_000)) == 2  # seq 1 (delivered) and 2 (no delivery, pushed)
    assert [c.seq for c in changes.after(0)] == [3, 4]  # 3: pending delivery, 4: not pushed yet
    assert changes.last_seq() == 4  # numbers are never reused
