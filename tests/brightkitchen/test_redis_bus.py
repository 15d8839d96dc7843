"""The Redis Streams bus against real Redis: acknowledged once stored, entries of a consumer that died
taken over by another, bad entries set aside, and a worker that keeps its events while Redis is down."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from brightkitchen.config import BusConfig, ConfigError, RedisBusConfig, parse_config
from brightkitchen.events import Event
from brightkitchen.redis_bus import RedisBus
from streams.rtsp_launcher import free_port
from tests.brightkitchen.test_store import make_event
from tests.databases import unavailable

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def stream() -> Iterator[str]:
    """A stream name of this test's own on the shared Redis, deleted afterwards."""
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        unavailable(f"no Redis at 127.0.0.1:6379 ({e}); scripts/services.sh starts one")
    name = f"brightkitchen-test:bus:{uuid.uuid4().hex}"
    yield name
    client.delete(name, f"{name}:invalid")
    client.close()


def settings(stream: str, url: str = REDIS, **kw) -> RedisBusConfig:
    return RedisBusConfig(url=url, stream=stream, **kw)


def drain(bus: RedisBus, n: int, ack: bool = True, timeout_s: float = 10.0) -> list[Event]:
    got: list[Event] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        event = bus.receive(timeout=0.2)
        if event is not None:
            got.append(event)
            if ack:
                bus.ack(event)
    return got


def test_events_reach_the_group_once_and_are_acknowledged(stream):
    worker, api = RedisBus(settings(stream)), RedisBus(settings(stream, consumer="api-1"))
    events = [make_event(i) for i in range(20)]
    for e in events:
        worker.publish(e)
    got = drain(api, 20)
    assert [(e.id, e.revision) for e in got] == [(e.id, e.revision) for e in events]  # in order
    assert api.receive(timeout=0.3) is None
    assert api.pending()["pending"] == 0
    worker.close()
    api.close()


def test_entries_of_a_consumer_that_died_are_taken_over(stream):
    publisher = RedisBus(settings(stream))
    dead = RedisBus(settings(stream, consumer="api-dead", claim_idle_s=0.5))
    alive = RedisBus(settings(stream, consumer="api-alive", claim_idle_s=0.5, batch=5))
    events = [make_event(i) for i in range(10)]
    for e in events[:6]:
        publisher.publish(e)
    taken = drain(dead, 3, ack=False)  # read, never acknowledged: the process died before storing
    assert len(taken) == 3
    for e in events[6:]:
        publisher.publish(e)
    got = drain(alive, 10, timeout_s=15)
    assert sorted(e.id for e in got) == sorted(e.id for e in events)  # nothing lost
    assert alive.pending()["pending"] == 0
    # The same consumer name, restarted, first takes up what it had read (nothing left here).
    again = RedisBus(settings(stream, consumer="api-dead", claim_idle_s=0.5))
    assert again.receive(timeout=0.3) is None
    for bus in (publisher, dead, alive, again):
        bus.close()


def test_a_restarted_consumer_takes_up_its_own_pending_entries_first(stream):
    publisher = RedisBus(settings(stream))
    first = RedisBus(settings(stream, consumer="api-1", claim_idle_s=3600))
    for i in range(3):
        publisher.publish(make_event(i))
    assert len(drain(first, 3, ack=False)) == 3
    restarted = RedisBus(settings(stream, consumer="api-1", claim_idle_s=3600))
    assert len(drain(restarted, 3)) == 3 and restarted.pending()["pending"] == 0
    for bus in (publisher, first, restarted):
        bus.close()


def test_entries_that_are_not_events_are_set_aside(stream):
    client = redis.Redis.from_url(REDIS)
    client.xadd(stream, {"event": b"{not json"})
    client.xadd(stream, {"something": b"else"})
    good = make_event(0)
    RedisBus(settings(stream)).publish(good)
    api = RedisBus(settings(stream, consumer="api-1"))
    got = drain(api, 1)
    assert [e.id for e in got] == [good.id]
    aside = client.xrange(f"{stream}:invalid")
    assert len(aside) == 2 and b"error" in aside[0][1]
    assert api.pending()["pending"] == 0
    client.close()


@pytest.fixture
def private_redis() -> Iterator[tuple[str, Callable[[], subprocess.Popen]]]:
    """A Redis URL on a free port where nothing listens until start() is called."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed; scripts/services.sh installs it")
    port = free_port()
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        procs.append(subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        return procs[-1]

    yield f"redis://127.0.0.1:{port}/0", start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_worker_keeps_its_events_while_redis_is_down(private_redis):
    url, start = private_redis
    worker = RedisBus(settings("bus", url=url))
    events = [make_event(i) for i in range(5)]
    for e in events:
        worker.publish(e)  # does not block: kept while Redis is unreachable
    api = RedisBus(settings("bus", url=url, consumer="api-1"))
    assert api.receive(timeout=0.3) is None  # nothing to read, and no crash
    start()
    got = drain(api, 5, timeout_s=20)
    assert [e.id for e in got] == [e.id for e in events]
    worker.close()
    api.close()


def test_bus_config_is_checked(tmp_path):
    base = {"sites": [{"id": "s1"}], "models": [{"name": "m", "path": "m.onnx"}]}
    config = parse_config({**base, "bus": {"kind": "redis", "redis": {"url": "redis://r:6379/0"}}}, "x", tmp_path, {})
    assert config.bus.redis.group == "brightkitchen-api" and config.bus.redis.maxlen == 1_000_000
    assert BusConfig().kind == "inprocess"
    with pytest.raises(ConfigError) as bad:
        parse_config({**base, "bus": {"kind": "redis"}}, "x", tmp_path, {})
    assert "needs bus.redis" in str(bad.value)
