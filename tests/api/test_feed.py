"""Server-sent events and WebSocket: resume from a change seq without gaps or duplicates, also across
the boundary between replayed and live changes; bad resume positions; site scopes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api.app import AppContext, create_app
from api.feed import FeedMessage
from brightkitchen.bus import InProcessBus
from brightkitchen.config import AuthConfig
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore
from brightkitchen.users import UserStore
from tests.brightkitchen.test_store import make_event
from tests.serving import serve_in_thread

Message = tuple[int, str, dict]  # (seq from id:, event: phase, data: Event JSON)


def read_sse(url: str, n: int, *, headers: dict | None = None, params: dict | None = None,
             on_connected: Callable[[], None] | None = None) -> list[Message]:
    """The first n messages of the event stream."""
    out: list[Message] = []
    with httpx.Client(base_url=url, timeout=10) as http, http.stream(
        "GET", "/api/v1/events/stream", headers=headers, params=params
    ) as r:
        assert r.status_code == 200, r.read()
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if line == ": connected" and on_connected:
                on_connected()
            elif line.startswith(("id: ", "event: ", "data: ")):
                key, _, value = line.partition(": ")
                fields[key] = value
            elif line == "" and "data" in fields:
                out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                fields = {}
                if len(out) == n:
                    return out
    raise AssertionError(f"the stream ended after {len(out)} of {n} messages")


def publish_stored(api, events) -> None:
    expected = api.store.count() + len({e.id for e in events})
    for e in events:
        api.bus.publish(e)
    api.wait_stored(expected)


def test_sse_resumes_with_last_event_id_then_follows_live(running_api):
    first = [make_event(i) for i in range(3)]
    publish_stored(running_api, first)  # seq 1..3
    live = [make_event(3 + i) for i in range(2)]

    def publish_live() -> None:
        for e in live:
            running_api.bus.publish(e)

    # Last-Event-ID (sent by EventSource on reconnect) wins over the URL's ?after=
    got = read_sse(running_api.url, 4, headers={"Last-Event-ID": "1"}, params={"after": 0},
                   on_connected=publish_live)
    assert [(seq, phase, data["id"]) for seq, phase, data in got] == [
        (seq, "open", e.id) for seq, e in zip(range(2, 6), first[1:] + live, strict=True)
    ]
    got = read_sse(running_api.url, 2, params={"after": 3})
    assert [seq for seq, _, _ in got] == [4, 5]
    assert got[0][2] == json.loads(live[0].model_dump_json())  # data: is the Event, exactly


def test_sse_has_no_gap_or_duplicate_between_replay_and_live(running_api):
    events = [make_event(i, camera=f"c{i % 3}") for i in range(60)]
    started = threading.Event()

    def publish() -> None:
        for i, e in enumerate(events):
            running_api.bus.publish(e)
            if i == 20:
                started.set()  # connect while changes are being stored

    with ThreadPoolExecutor(2) as pool:
        publishing = pool.submit(publish)
        assert started.wait(10)
        reading = pool.submit(read_sse, running_api.url, len(events), params={"after": 0})
        publishing.result()
        got = reading.result(timeout=30)
    assert [seq for seq, _, _ in got] == list(range(1, len(events) + 1))
    assert [data["id"] for _, _, data in got] == [e.id for e in events]


def test_sse_rejects_bad_resume_positions(running_api):
    publish_stored(running_api, [make_event(0)])
    with running_api.client() as http:
        r = http.get("/api/v1/events/stream", headers={"Last-Event-ID": "abc:1"})
        assert r.status_code == 400 and "Last-Event-ID" in r.json()["detail"]
        r = http.get("/api/v1/events/stream", params={"after": -1})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "query.after"
        r = http.get("/api/v1/events/stream", params={"after": 99})
        assert r.status_code == 400 and "beyond the newest change (1)" in r.json()["detail"]


def ws_url(http_url: str, query: str = "") -> str:
    return http_url.replace("http://", "ws://") + "/api/v1/events/ws" + query


def test_websocket_resumes_after_a_seq_and_follows_live(running_api):
    events = [make_event(i) for i in range(5)]
    publish_stored(running_api, events[:3])
    with connect(ws_url(running_api.url, "?after=1")) as ws:
        got = [FeedMessage.model_validate_json(ws.recv(timeout=10)) for _ in range(2)]
        running_api.bus.publish(events[3])
        got.append(FeedMessage.model_validate_json(ws.recv(timeout=10)))
    assert [(m.seq, m.phase, m.event.id) for m in got] == [(i + 1, "open", events[i].id) for i in (1, 2, 3)]
    assert got[0].event == events[1]
    running_api.bus.publish(events[4])  # while disconnected
    with connect(ws_url(running_api.url, f"?after={got[-1].seq}")) as ws:
        resumed = FeedMessage.model_validate_json(ws.recv(timeout=10))
        assert (resumed.seq, resumed.event.id) == (5, events[4].id)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # nothing twice


def test_websocket_closes_on_a_bad_position(running_api):
    with connect(ws_url(running_api.url, "?after=7")) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008 and "beyond the newest change" in closed.value.rcvd.reason


def test_streams_show_a_scoped_key_only_its_sites(tmp_path, database_url):
    store = EventStore(database_url)
    _, key = UserStore(store).add_key("platform-s1", ["s1"])
    bus = InProcessBus()
    ctx = AppContext(store=store, snapshots=SnapshotStore(tmp_path / "snapshots"), bus=bus,
                     camera_status=lambda: [], auth=AuthConfig(enabled=True))
    events = [make_event(i, site=f"s{1 + i % 2}") for i in range(4)]  # s1, s2, s1, s2
    with serve_in_thread(create_app(ctx)) as url:
        for e in events:
            bus.publish(e)
        got = read_sse(url, 2, headers={"Authorization": f"Bearer {key}"}, params={"after": 0})
        assert [(seq, data["site"]) for seq, _, data in got] == [(1, "s1"), (3, "s1")]
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/api/v1/events/stream").status_code == 401
        with connect(ws_url(url, f"?after=0&access_token={key}")) as ws:
            assert [FeedMessage.model_validate_json(ws.recv(timeout=10)).seq for _ in range(2)] == [1, 3]
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)
        with connect(ws_url(url)) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008 and "authentication required" in closed.value.rcvd.reason
    store.close()
