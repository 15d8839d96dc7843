import json
import threading
from datetime import timedelta

import cv2
import numpy as np

from tests.brightkitchen.test_store import T0, make_event


def test_events_flow_from_bus_to_api_with_filters_and_pages(running_api):
    events = [make_event(i, camera=f"c{i % 2}") for i in range(12)]
    for e in events:
        running_api.bus.publish(e)
    running_api.wait_stored(12)
    with running_api.client() as http:
        page = http.get("/api/v1/events", params={"limit": 5}).json()
        assert [e["id"] for e in page["items"]] == [e.id for e in reversed(events)][:5]
        ids = [e["id"] for e in page["items"]]
        while page["next_cursor"]:
            page = http.get("/api/v1/events", params={"limit": 5, "cursor": page["next_cursor"]}).json()
            ids += [e["id"] for e in page["items"]]
        assert ids == [e.id for e in reversed(events)]
        c1 = http.get("/api/v1/events", params={"camera": "c1", "since": (T0 + timedelta(seconds=4)).isoformat()})
        assert [e["track_id"] for e in c1.json()["items"]] == [11, 9, 7, 5]
        naive_utc = http.get("/api/v1/events", params={"until": "2026-11-23T08:00:02"}).json()["items"]
        assert [e["track_id"] for e in naive_utc] == [1, 0]
        one = http.get(f"/api/v1/events/{events[3].id}").json()
        assert one["id"] == events[3].id and one["phase"] == "open" and one["review_state"] == "pending"


def test_bad_requests_get_clear_errors(running_api):
    with running_api.client() as http:
        r = http.get("/api/v1/events", params={"limit": 0})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "query.limit"
        r = http.get("/api/v1/events", params={"since": "yesterday"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "query.since"
        r = http.get("/api/v1/events", params={"cursor": "@@@"})
        assert r.status_code == 400 and r.json()["detail"] == "malformed cursor"
        r = http.get("/api/v1/events/does-not-exist")
        assert r.status_code == 404 and "does-not-exist" in r.json()["detail"]
        assert http.get("/api/v1/events/does-not-exist/snapshot.jpg").status_code == 404


def test_snapshot_is_served_with_its_hash(running_api):
    image = np.zeros((72, 128, 3), np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    event = make_event(0)
    event.snapshot, event.snapshot_sha256 = running_api.snapshots.save(event.id, jpeg, T0.timestamp())
    no_snapshot = make_event(1)
    running_api.bus.publish(event)
    running_api.bus.publish(no_snapshot)
    running_api.wait_stored(2)
    with running_api.client() as http:
        r = http.get(f"/api/v1/events/{event.id}/snapshot.jpg")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content == jpeg
        assert r.headers["x-snapshot-sha256"] == event.snapshot_sha256
        r = http.get(f"/api/v1/events/{no_snapshot.id}/snapshot.jpg")
        assert r.status_code == 404 and "no snapshot" in r.json()["detail"]


def test_server_sent_events_carry_new_and_updated_events(running_api):
    event = make_event(0)
    received: list[tuple[str, dict]] = []
    connected = threading.Event()

    def listen():
        with running_api.client() as http, http.stream("GET", "/api/v1/events/stream") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            for line in r.iter_lines():
                if line == ": connected":
                    connected.set()
                elif line.startswith(("id: ", "event: ", "data: ")):
                    key, _, value = line.partition(": ")
                    fields[key] = value
                elif line == "" and "data" in fields:
                    received.append((fields["id"], json.loads(fields["data"])))
                    fields = {}
                    if len(received) == 2:
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert connected.wait(10)
    running_api.bus.publish(event)
    running_api.bus.publish(event)  # a duplicate is stored once and streamed once
    running_api.bus.publish(event.model_copy(update={"phase": "closed", "revision": 2}))
    t.join(timeout=10)
    # id: is the change seq, global and increasing over every stored revision
    assert [(i, d["id"], d["revision"], d["phase"]) for i, d in received] == [
        ("1", event.id, 1, "open"), ("2", event.id, 2, "closed")
    ]


def test_cameras_health_metrics_and_openapi(running_api):
    running_api.cameras.append(
        {"id": "c1", "name": "Kitchen", "site": "s1", "url": "rtsp://x", "connected": False, "last_error": "refused"}
    )
    with running_api.client() as http:
        cams = http.get("/api/v1/cameras").json()
        assert cams[0]["id"] == "c1" and cams[0]["connected"] is False and cams[0]["last_error"] == "refused"
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["cameras"] == 1 and health["cameras_connected"] == 0
        assert "brightkitchen_events_stored_total" in http.get("/metrics").text
        spec = http.get("/openapi.json").json()
        assert {"/api/v1/events", "/api/v1/events/{event_id}", "/api/v1/events/{event_id}/snapshot.jpg",
                "/api/v1/cameras", "/api/v1/events/stream", "/healthz", "/metrics"} <= set(spec["paths"])
        assert "Event" in spec["components"]["schemas"]
        page = http.get("/")
        assert page.status_code == 200 and "/static/console.js" in page.text
        script = http.get("/static/console.js")
        assert script.headers["content-type"].startswith("text/javascript") and "/api/v1/events/stream" in script.text
