"""Beyond one box, with real processes: `brightkitchen serve --role api|worker` over the PostgreSQL and
Redis that scripts/services.sh starts. An API replica killed mid-way loses and doubles nothing; a
worker killed with SIGKILL has its cameras taken over by the others, and no camera is analysed twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
import yaml

from brightkitchen.config import RedisBusConfig
from brightkitchen.demo import demo_config
from brightkitchen.redis_bus import RedisBus
from streams.rtsp_launcher import free_port
from tests.brightkitchen.test_store import make_event
from tests.databases import postgres_schema, unavailable

REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Process:
    role: str
    port: int
    log: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict | None:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).json()
        except httpx.HTTPError:
            return None

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@dataclass
class Deployment:
    """Processes of one config (its own schema, stream and key prefix), all stopped afterwards."""

    folder: Path
    database: str
    prefix: str
    processes: list[Process] = field(default_factory=list)
    config_path: Path | None = None

    def write_config(self, cameras: int, outputs: dict | None = None, **bus: object) -> None:
        data = demo_config(self.folder, "unused").model_dump(mode="json", exclude_none=True)
        camera = data["sites"][0]["cameras"][0]
        clip = str(self.folder / "clip.h264")
        data["sites"][0]["cameras"] = [{**camera, "id": f"cam-{i}", "url": clip} for i in range(cameras)]
        data["storage"].update(database=self.database, snapshots_dir=str(self.folder / "snapshots"))
        data["bus"] = {"kind": "redis", "redis": {"url": REDIS, "stream": f"{self.prefix}:bus", **bus}}
        data["assignment"] = {"kind": "redis", "url": REDIS, "prefix": f"{self.prefix}:assignment",
                              "heartbeat_s": 0.5, "ttl_s": 2.0}
        data["api"]["auth"]["enabled"] = False
        data["outputs"] = outputs or {}
        self.config_path = self.folder / "brightkitchen.yaml"
        self.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    def start(self, role: str) -> Process:
        port = free_port()
        log = self.folder / f"{role}-{len(self.processes)}.log"
        cmd = [sys.executable, "-m", "brightkitchen.cli", "serve", "-c", str(self.config_path), "--role", role,
               "--port", str(port)]
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        process = Process(role, port, log, proc)
        self.processes.append(process)
        return process

    def wait_healthy(self, process: Process, wait_until: Callable[..., object]) -> None:
        def healthy() -> bool:
            assert process.proc.poll() is None, process.output()[-3000:]
            return process.health() is not None

        wait_until(healthy, timeout_s=60, what=f"the {process.role} process to serve", interval_s=0.2)

    def stop_all(self) -> None:
        for p in self.processes:
            if p.proc.poll() is None:
                os.killpg(p.proc.pid, signal.SIGTERM)
        for p in self.processes:
            try:
                p.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.proc.pid, signal.SIGKILL)
                p.proc.wait()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        unavailable(f"no Redis at 127.0.0.1:6379 ({e}); scripts/services.sh starts one")
    prefix = f"brightkitchen-test:{uuid.uuid4().hex[:12]}"
    with postgres_schema() as database:
        deploy = Deployment(tmp_path, database, prefix)
        try:
            yield deploy
        finally:
            deploy.stop_all()
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


def stored_changes(database: str) -> Counter[tuple[str, int]]:
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT event_id, revision FROM changes").fetchall()
    return Counter((r[0], r[1]) for r in rows)


def stored_events(database: str) -> set[tuple[str, int]]:
    with psycopg.connect(database) as conn:
        return {(r[0], r[1]) for r in conn.execute("SELECT id, revision FROM events").fetchall()}


def test_an_api_replica_killed_mid_way_loses_nothing_and_stores_nothing_twice(deployment, wait_until):
    deployment.write_config(cameras=0, claim_idle_s=1.0, batch=50)
    apis = [deployment.start("api") for _ in range(2)]
    for api in apis:
        deployment.wait_healthy(api, wait_until)
    stream = f"{deployment.prefix}:bus"
    publisher = RedisBus(RedisBusConfig(url=REDIS, stream=stream))
    published = []
    for i in range(600):
        opened = make_event(i, camera=f"c{i % 3}")
        published += [opened, opened.model_copy(update={"phase": "closed", "revision": 2})]
    for event in published:
        publisher.publish(event)
    publisher.close()  # every entry is in the stream now

    victim = apis[0]
    wait_until(lambda: sum(stored_changes(deployment.database).values()) >= 100, timeout_s=60,
               what="the replicas to store a first part", interval_s=0.02)
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=10)
    client = redis.Redis.from_url(REDIS, decode_responses=True)
    consumers = {c["name"]: c["pending"] for c in client.xinfo_consumers(stream, "brightkitchen-api")}
    assert sum(consumers.values()) > 0, consumers  # the killed replica had read entries it never acknowledged

    final = {(e.id, e.revision) for e in published if e.revision == 2}
    wait_until(lambda: stored_events(deployment.database) == final, timeout_s=120,
               what="every event stored at its last revision by the surviving replica", interval_s=0.2)
    wait_until(lambda: client.xpending(stream, "brightkitchen-api")["pending"] == 0, timeout_s=30,
               what="every entry acknowledged")
    changes = stored_changes(deployment.database)
    assert max(changes.values()) == 1 and set(changes) <= {(e.id, e.revision) for e in published}
    # A taken-over entry can come after a newer revision of its event was stored: the event only moves
    # forward, so that older revision is not stored. Every last revision is.
    assert final <= set(changes)
    skipped = len(published) - len(changes)
    assert skipped <= sum(consumers.values())
    health = apis[1].health()
    assert health is not None and health["events"] == 600
    client.close()


EVENT_LINE = re.compile(r"streams\.worker: event (open|updated|closed) ([0-9a-f]{32}) rule=\S+ camera=(\S+)")


def published_revisions(process: Process) -> Counter[str]:
    """event id -> revisions a worker published, from its log."""
    return Counter(m.group(2) for m in EVENT_LINE.finditer(process.output()))


def ownership(workers: list[Process]) -> dict[int, set[str]]:
    """worker index -> the cameras it analyses now (from its health)."""
    owned = {}
    for i, w in enumerate(workers):
        health = w.health() if w.proc.poll() is None else None
        if health is not None:
            owned[i] = set(health["cameras"])
    return owned


def test_a_killed_worker_s_cameras_move_to_the_others_and_none_is_analysed_twice(
    deployment, demo_clip, wait_until
):
    (deployment.folder / "clip.h264").symlink_to(demo_clip)
    cameras = {f"cam-{i}" for i in range(4)}
    deployment.write_config(cameras=len(cameras), claim_idle_s=2.0)
    api = deployment.start("api")
    workers = [deployment.start("worker") for _ in range(3)]
    for p in [api, *workers]:
        deployment.wait_healthy(p, wait_until)
    samples: list[dict[int, set[str]]] = []

    def sample() -> dict[int, set[str]]:
        owned = ownership(workers)
        samples.append(owned)
        return owned

    def covered_once() -> bool:
        owned = sample()
        every = [c for cams in owned.values() for c in cams]
        return sorted(every) == sorted(cameras)

    wait_until(covered_once, timeout_s=60, what="every camera analysed by one worker", interval_s=0.2)
    wait_until(lambda: api.health() and api.health()["events"] > 0, timeout_s=120,
               what="events from the workers stored by the API", interval_s=0.5)

    owned = sample()
    victim = max(owned, key=lambda i: len(owned[i]))
    moved = owned[victim]
    assert moved, owned
    os.killpg(workers[victim].proc.pid, signal.SIGKILL)
    workers[victim].proc.wait(timeout=10)
    killed_at = time.monotonic()
    wait_until(covered_once, timeout_s=30, what="the killed worker's cameras taken over", interval_s=0.2)
    takeover_s = time.monotonic() - killed_at
    survivors = [w for i, w in enumerate(workers) if i != victim]
    assert not ownership(workers).get(victim)
    # The new owners really analyse them: their readers are connected.
    def connected_elsewhere() -> bool:
        connected = set()
        for w in survivors:
            health = w.health()
            connected |= set(health["connected"]) if health else set()
        return moved <= connected

    wait_until(connected_elsewhere, timeout_s=30, what="the moved cameras connected on their new workers")
    time.sleep(3)
    sample()

    # Never two workers with one camera, in any sample.
    for owned in samples:
        every = [c for cams in owned.values() for c in cams]
        assert len(every) == len(set(every)), owned

    # Graceful stop of the survivors: their open events are closed and sent; the API stores them all.
    for w in survivors:
        os.killpg(w.proc.pid, signal.SIGTERM)
    for w in survivors:
        assert w.proc.wait(timeout=30) == 0, w.output()[-3000:]
    expected = Counter()
    for w in survivors:
        expected.update(published_revisions(w))
    killed = published_revisions(workers[victim])
    assert sum(expected.values()) > 0

    def stored_per_event() -> Counter[str]:
        return Counter(event_id for event_id, _ in stored_changes(deployment.database).elements())

    wait_until(lambda: all(stored_per_event()[e] == n for e, n in expected.items()), timeout_s=30,
               what="every revision the surviving workers published stored")
    stored = stored_per_event()
    assert {e: stored[e] for e in expected} == dict(expected)  # each exactly once
    assert all(stored[e] <= n for e, n in killed.items())  # the killed one's: at most what it published
    assert set(stored) <= set(expected) | set(killed)  # nothing from nowhere
    print(f"takeover after SIGKILL: {takeover_s:.1f} s (ttl 2 s, heartbeat 0.5 s)")



def test_an_api_killed_with_a_webhook_backlog_delivers_it_after_a_restart(deployment, wait_until):
    from tests.api.test_webhooks import SECRET, Receiver

    webhooks = {"timeout_s": 2, "initial_backoff_s": 0.2, "max_backoff_s": 1}  # a lease outlives 36 s at most
    deployment.write_config(cameras=0, outputs={"webhooks": webhooks}, claim_idle_s=1.0)
    api = deployment.start("api")
    deployment.wait_healthy(api, wait_until)
    receiver = Receiver()  # down until started
    try:
        r = httpx.post(f"{api.url}/api/v1/subscriptions", json={"url": receiver.url, "secret": SECRET}, timeout=10)
        assert r.status_code == 201, r.text
        sub = r.json()["id"]
        publisher = RedisBus(RedisBusConfig(url=REDIS, stream=f"{deployment.prefix}:bus"))
        published = [make_event(i, camera=f"c{i % 2}") for i in range(10)]
        for event in published:
            publisher.publish(event)
        publisher.close()

        def state() -> dict:
            return httpx.get(f"{api.url}/api/v1/subscriptions/{sub}", timeout=10).json()["delivery"]

        wait_until(lambda: state()["backlog"] == 10 and state()["consecutive_failures"] >= 1, timeout_s=30,
                   what="a backlog the receiver (down) did not take")
        os.killpg(api.proc.pid, signal.SIGKILL)
        api.proc.wait(timeout=10)
        receiver.start()
        api = deployment.start("api")  # a new process over the same database
        deployment.wait_healthy(api, wait_until)
        wait_until(lambda: len(receiver.accepted) == 10, timeout_s=60, what="the backlog delivered")
        wait_until(lambda: state()["backlog"] == 0, timeout_s=10, what="the outbox empty")
    finally:
        receiver.stop()
    keys = [a.key for a in receiver.accepted]
    assert sorted(keys) == sorted((e.id, 1) for e in published)  # all, none twice
    assert all(a.verified for a in receiver.accepted)
