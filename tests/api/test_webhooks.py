"""Webhook delivery against real HTTP receivers: down then up, ordering per camera, API restart with a
backlog, client-error policy, dead deliveries and replay, signatures and the example receiver."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from api.app import AppContext, create_app
from api.webhooks import backoff_s, retry_after_s, sign
from brightkitchen.bus import InProcessBus
from brightkitchen.config import OutputsConfig, WebhookDeliveryConfig
from brightkitchen.events import Event
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore
from streams.rtsp_launcher import free_port
from tests.brightkitchen.test_store import make_event
from tests.serving import serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "webhook_receiver.py"
SECRET = "test-secret-0123456789"
FAST = WebhookDeliveryConfig(initial_backoff_s=0.05, max_backoff_s=0.3, timeout_s=3)


def load_example():
    spec = importlib.util.spec_from_file_location("webhook_receiver_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


@dataclass
class Arrival:
    headers: dict[str, str]
    payload: dict
    verified: bool

    @property
    def key(self) -> tuple[str, int]:
        return self.payload["event"]["id"], self.payload["event"]["revision"]


@dataclass
class Receiver:
    """A real HTTP receiver on a loopback port; refuses connections until started. `answer(payload)`
    gives the status for each delivery; every delivery that got a 2xx is recorded in `accepted`."""

    port: int = field(default_factory=free_port)
    answer: Callable[[dict], int] | None = None
    accepted: list[Arrival] = field(default_factory=list)
    rejected: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = example.verify(SECRET, headers["x-brightkitchen-timestamp"], body,
                                          headers["x-brightkitchen-signature"])
                payload = json.loads(body)
                status = receiver.answer(payload) if receiver.answer else 204
                if 200 <= status < 300:
                    receiver.accepted.append(Arrival(headers, payload, verified))
                else:
                    receiver.rejected += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@dataclass
class FeedApi:
    url: str
    bus: InProcessBus
    store: EventStore

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def subscribe(self, url: str, **filters: list[str]) -> str:
        with self.client() as http:
            r = http.post("/api/v1/subscriptions", json={"url": url, "secret": SECRET, "filters": filters})
            assert r.status_code == 201, r.text
            return r.json()["id"]

    def state(self, sub_id: str) -> dict:
        with self.client() as http:
            return http.get(f"/api/v1/subscriptions/{sub_id}").json()["delivery"]


@contextmanager
def serve_api(database: str, webhooks: WebhookDeliveryConfig = FAST) -> Iterator[FeedApi]:
    """The real API on uvicorn over a database; a second call over the same database is a restart."""
    bus = InProcessBus()
    store = EventStore(database)
    with tempfile.TemporaryDirectory() as snapshots:
        ctx = AppContext(store=store, snapshots=SnapshotStore(Path(snapshots)), bus=bus,
                         camera_status=lambda: [], outputs=OutputsConfig(webhooks=webhooks))
        try:
            with serve_in_thread(create_app(ctx)) as url:
                yield FeedApi(url, bus, store)
        finally:
            store.close()


def revisions(n_events: int, cameras: tuple[str, ...] = ("c0", "c1")) -> list[Event]:
    """Each event opened then closed, events of several cameras interleaved."""
    out = []
    for i in range(n_events):
        opened = make_event(i, camera=cameras[i % len(cameras)])
        out += [opened, opened.model_copy(update={"phase": "closed", "revision": 2})]
    return out


def failing(state: dict, backlog: int, failures: int) -> bool:
    return state["backlog"] == backlog and state["consecutive_failures"] >= failures


def assert_exactly_once_in_order(accepted: list[Arrival], published: list[Event]) -> None:
    keys = [a.key for a in accepted]
    assert sorted(keys) == sorted((e.id, e.revision) for e in published)  # all of them, none twice
    assert all(a.verified for a in accepted)
    for camera in {e.camera for e in published}:
        seqs = [a.payload["seq"] for a in accepted if a.payload["event"]["camera"] == camera]
        assert seqs == sorted(seqs), f"camera {camera} delivered out of order"
        assert [k for k in keys if k[0] in {e.id for e in published if e.camera == camera}] == [
            (e.id, e.revision) for e in published if e.camera == camera
        ]


def test_a_receiver_down_then_up_gets_everything_once_in_order_per_camera(database_url, receiver, wait_until):
    events = revisions(6)
    with serve_api(database_url) as api:
        sub = api.subscribe(receiver.url)
        for e in events:
            api.bus.publish(e)
        wait_until(lambda: failing(api.state(sub), len(events), 4), what="failed attempts while down")
        state = api.state(sub)
        assert state["last_success_at"] is None
        assert "ConnectError" in state["last_error"]
        receiver.start()
        wait_until(lambda: api.state(sub)["backlog"] == 0, what="the backlog to drain")
        state = api.state(sub)
        assert state["consecutive_failures"] == 0 and state["last_success_at"] is not None
        with api.client() as http:
            metrics = http.get("/metrics").text
    assert_exactly_once_in_order(receiver.accepted, events)
    first = receiver.accepted[0]
    assert first.headers["x-brightkitchen-event-id"] == first.payload["event"]["id"]
    assert first.headers["x-brightkitchen-delivery"] == first.payload["delivery_id"]
    assert first.headers["content-type"] == "application/json"
    assert 'brightkitchen_webhook_deliveries_total{result="retry"}' in metrics
    assert 'brightkitchen_webhook_deliveries_total{result="delivered"}' in metrics
    assert "brightkitchen_webhook_backlog" in metrics


def test_a_failing_camera_waits_while_other_cameras_go_on(database_url, receiver, wait_until):
    events = revisions(6)
    released = threading.Event()

    def answer(payload: dict) -> int:
        return 204 if payload["event"]["camera"] == "c1" or released.is_set() else 503

    receiver.answer = answer
    receiver.start()
    with serve_api(database_url) as api:
        sub = api.subscribe(receiver.url)
        for e in events:
            api.bus.publish(e)
        c1 = [e for e in events if e.camera == "c1"]
        wait_until(lambda: len(receiver.accepted) == len(c1) and receiver.rejected >= 3, what="camera c1")
        assert {a.payload["event"]["camera"] for a in receiver.accepted} == {"c1"}
        assert api.state(sub)["last_error"].startswith("HTTP 503")
        released.set()
        wait_until(lambda: len(receiver.accepted) == len(events), what="camera c0 after the release")
    assert_exactly_once_in_order(receiver.accepted, events)


def test_an_api_restart_with_a_backlog_delivers_it(database_url, receiver, wait_until):
    events = revisions(4)
    db = database_url
    with serve_api(db) as api:
        sub = api.subscribe(receiver.url)
        for e in events:
            api.bus.publish(e)
        wait_until(lambda: failing(api.state(sub), len(events), 2), what="failed attempts")
    receiver.start()
    with serve_api(db) as api:
        wait_until(lambda: api.state(sub)["backlog"] == 0, what="the new API instance to deliver the backlog")
        more = revisions(1, cameras=("c2",))
        for e in more:
            api.bus.publish(e)
        wait_until(lambda: len(receiver.accepted) == len(events + more), what="new events after the restart")
    assert_exactly_once_in_order(receiver.accepted, events + more)


def test_client_errors_are_retried_by_default(database_url, receiver, wait_until):
    answers = iter([400, 422])
    receiver.answer = lambda payload: next(answers, 204)
    receiver.start()
    with serve_api(database_url) as api:
        sub = api.subscribe(receiver.url)
        api.bus.publish(make_event(0))
        wait_until(lambda: receiver.accepted, what="delivery after two 4xx answers")
        assert receiver.rejected == 2 and api.state(sub)["dead"] == 0


def test_dead_deliveries_do_not_block_the_camera_and_can_be_replayed(database_url, receiver, wait_until):
    poisoned, later = make_event(0), make_event(1)  # one camera
    fixed = threading.Event()
    receiver.answer = lambda p: 400 if p["event"]["id"] == poisoned.id and not fixed.is_set() else 204
    receiver.start()
    with serve_api(database_url, FAST.model_copy(update={"client_errors": "dead"})) as api:
        sub = api.subscribe(receiver.url)
        api.bus.publish(poisoned)
        api.bus.publish(later)
        wait_until(lambda: len(receiver.accepted) == 1, what="the camera's next event")
        state = api.state(sub)
        assert state["dead"] == 1 and state["backlog"] == 0 and state["last_error"].startswith("HTTP 400")
        assert receiver.accepted[0].key == (later.id, 1)
        fixed.set()
        with api.client() as http:
            r = http.post(f"/api/v1/subscriptions/{sub}/replay")
            assert r.status_code == 200 and r.json() == {"queued": 1}
        wait_until(lambda: len(receiver.accepted) == 2, what="the replayed delivery")
        assert receiver.accepted[1].key == (poisoned.id, 1) and api.state(sub)["dead"] == 0


def test_deliveries_older_than_the_max_age_die_and_replay_after_a_seq_resends(database_url, receiver, wait_until):
    short = FAST.model_copy(update={"max_age_s": 0.2})
    events = revisions(2)
    with serve_api(database_url, short) as api:
        sub = api.subscribe(receiver.url)
        for e in events:
            api.bus.publish(e)
        wait_until(lambda: api.state(sub)["dead"] == len(events), what="every delivery to die")
        receiver.start()
        with api.client() as http:
            assert http.post(f"/api/v1/subscriptions/{sub}/replay").json() == {"queued": len(events)}
            wait_until(lambda: len(receiver.accepted) == len(events), what="the replay")
            first_ids = {a.payload["delivery_id"] for a in receiver.accepted}
            # everything after the first change again: a replay resends delivered ones too
            r = http.post(f"/api/v1/subscriptions/{sub}/replay", json={"after_seq": 1})
            assert r.json() == {"queued": len(events) - 1}
            wait_until(lambda: len(receiver.accepted) == 2 * len(events) - 1, what="the second replay")
    again = receiver.accepted[len(events):]
    assert sorted(a.payload["seq"] for a in again) == list(range(2, len(events) + 1))
    assert not first_ids & {a.payload["delivery_id"] for a in again}  # a replay is a new delivery


def test_a_new_subscription_can_replay_history_since_a_time(database_url, receiver, wait_until):
    receiver.start()
    events = revisions(2)
    with serve_api(database_url) as api:
        for e in events:
            api.bus.publish(e)
        closed = [(e.id, 2) for e in events]
        wait_until(lambda: [(x.id, x.revision) for x in (api.store.get(i) for i, _ in closed) if x] == closed)
        sub = api.subscribe(receiver.url, cameras=["c1"])
        with api.client() as http:
            r = http.post(f"/api/v1/subscriptions/{sub}/replay", json={"since": "2000-01-01T00:00:00"})
            assert r.json() == {"queued": 2}
        wait_until(lambda: len(receiver.accepted) == 2, what="history of camera c1")
    assert [a.key for a in receiver.accepted] == [(e.id, e.revision) for e in events if e.camera == "c1"]


def test_backoff_doubles_up_to_the_cap_with_jitter():
    settings = WebhookDeliveryConfig(initial_backoff_s=1, max_backoff_s=300)
    waits = [backoff_s(n, settings, rand=lambda: 1.0) for n in (1, 2, 3, 9, 10, 200)]
    assert waits == [1, 2, 4, 256, 300, 300]
    assert backoff_s(3, settings, rand=lambda: 0.0) == 2.0  # jitter keeps at least half
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after_s(httpx.Response(503)) is None


def test_signatures_verify_and_tampering_is_detected():
    body = b'{"event":{"id":"e1","revision":1},"seq":1,"delivery_id":"d1"}'
    now = 1_800_000_000
    signature = sign(SECRET, now, body)
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    assert example.verify(SECRET, str(now), body, signature, now=now + 10)
    assert not example.verify(SECRET, str(now), body.replace(b"e1", b"e2"), signature, now=now)
    assert not example.verify("another-secret-0000", str(now), body, signature, now=now)
    assert not example.verify(SECRET, str(now + 1), body, signature, now=now)  # the timestamp is signed
    assert not example.verify(SECRET, str(now), body, signature, now=now + 301)  # too old: a replayed capture


@pytest.fixture
def example_receiver() -> Iterator[tuple[str, subprocess.Popen]]:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0", "--secret", SECRET],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stderr.readline()
        assert line.startswith("listening on "), line
        yield line.removeprefix("listening on ").strip(), proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_example_receiver_accepts_signed_deliveries_and_rejects_tampered_ones(
    database_url, example_receiver, wait_until
):
    url, proc = example_receiver
    with serve_api(database_url) as api:
        sub = api.subscribe(url)
        event = make_event(0)
        api.bus.publish(event)
        wait_until(lambda: api.state(sub)["last_success_at"], what="a delivery to the example receiver")
    printed = json.loads(proc.stdout.readline())
    assert (printed["id"], printed["revision"], printed["seq"]) == (event.id, 1, 1)

    body = json.dumps({"event": {"id": "e9", "revision": 1}, "seq": 9, "delivery_id": "d9"}).encode()
    now = int(time.time())
    headers = {"X-Brightkitchen-Timestamp": str(now), "X-Brightkitchen-Signature": sign(SECRET, now, body),
               "Content-Type": "application/json"}
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.post("/", content=body.replace(b'"e9"', b'"e8"'), headers=headers).status_code == 401
        forged = {**headers, "X-Brightkitchen-Signature": "v1=00"}
        assert http.post("/", content=body, headers=forged).status_code == 401
        assert http.post("/", content=body, headers=headers).status_code == 204
        assert http.post("/", content=body, headers=headers).status_code == 204  # a duplicate: acknowledged
    assert json.loads(proc.stdout.readline())["id"] == "e9"
    proc.terminate()
    assert proc.stdout.read() == ""  # the duplicate was not handled again
