"""The Redis Stream output against real Redis: entries appear in seq order, and an outage (a Redis
server that is down, then up) or an API restart loses nothing and repeats nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from fastapi import FastAPI

from api.app import AppContext, create_app
from brightkitchen.bus import InProcessBus
from brightkitchen.config import ConfigError, OutputsConfig, RedisStreamConfig, parse_config
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore
from streams.rtsp_launcher import free_port
from tests.brightkitchen.test_store import make_event
from tests.serving import serve_in_thread

SHARED_REDIS = "redis://127.0.0.1:6379/0"


def unavailable(reason: str) -> None:
    """Skip here without Redis; CI installs and starts it, so there a missing Redis fails."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(SHARED_REDIS, socket_connect_timeout=2, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as e:
        unavailable(f"no Redis at 127.0.0.1:6379 ({e}); scripts/services.sh starts one")
    yield client
    client.close()


@dataclass
class Api:
    app: FastAPI
    bus: InProcessBus
    store: EventStore


@contextmanager
def serve_api(database: str, stream: RedisStreamConfig) -> Iterator[Api]:
    bus = InProcessBus()
    store = EventStore(database)
    with tempfile.TemporaryDirectory() as snapshots:
        ctx = AppContext(store=store, snapshots=SnapshotStore(Path(snapshots)), bus=bus,
                         camera_status=lambda: [], outputs=OutputsConfig(redis_stream=stream))
        app = create_app(ctx)
        try:
            with serve_in_thread(app):
                yield Api(app, bus, store)
        finally:
            store.close()


def entries(client: redis.Redis, stream: str) -> list[dict]:
    return [fields for _, fields in client.xrange(stream)]


def test_every_change_is_added_to_the_stream_in_order(database_url, shared_redis, wait_until):
    stream = f"brightkitchen-test:{uuid.uuid4().hex}"
    events = [make_event(i, camera=f"c{i % 2}") for i in range(4)]
    try:
        with serve_api(database_url, RedisStreamConfig(url=SHARED_REDIS, stream=stream)) as api:
            for e in events:
                api.bus.publish(e)
            api.bus.publish(events[0].model_copy(update={"phase": "closed", "revision": 2}))
            wait_until(lambda: shared_redis.xlen(stream) == 5, what="5 stream entries")
        got = entries(shared_redis, stream)
    finally:
        shared_redis.delete(stream)
    assert [int(f["seq"]) for f in got] == [1, 2, 3, 4, 5]
    assert [(f["event_id"], int(f["revision"]), f["phase"]) for f in got] == [
        (e.id, 1, "open") for e in events
    ] + [(events[0].id, 2, "closed")]
    assert json.loads(got[1]["event"])["camera"] == "c1" and got[1]["camera"] == "c1"
    assert {"site", "rule"} <= set(got[0])


@pytest.fixture
def private_redis() -> Iterator[tuple[str, Callable[[], None]]]:
    """A Redis URL on a free port where nothing listens until start() is called."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed; scripts/services.sh installs it")
    port = free_port()
    procs: list[subprocess.Popen] = []

    def start() -> None:
        procs.append(subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))

    yield f"redis://127.0.0.1:{port}/0", start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_redis_outage_and_an_api_restart_lose_nothing(database_url, private_redis, wait_until):
    url, start_redis = private_redis
    settings = RedisStreamConfig(url=url, stream="events")
    db = database_url
    events = [make_event(i) for i in range(6)]
    with serve_api(db, settings) as api:
        for e in events[:3]:
            api.bus.publish(e)
        pusher = api.app.state.feed.redis
        wait_until(lambda: pusher.failures >= 1 and api.store.count() == 3, what="a push to fail while down")
        start_redis()
        client = redis.Redis.from_url(url, decode_responses=True)
        wait_until(lambda: _xlen(client, "events") == 3, what="the backlog pushed once Redis is up")
        api.bus.publish(events[3])
        wait_until(lambda: _xlen(client, "events") == 4, what="a live change")
    with serve_api(db, settings) as api:  # resumes from the stored cursor: nothing pushed twice
        for e in events[4:]:
            api.bus.publish(e)
        wait_until(lambda: _xlen(client, "events") == 6, what="changes after the restart")
    got = entries(client, "events")
    client.close()
    assert [int(f["seq"]) for f in got] == [1, 2, 3, 4, 5, 6]
    assert [f["event_id"] for f in got] == [e.id for e in events]


def _xlen(client: redis.Redis, stream: str) -> int:
    try:
        return client.xlen(stream)
    except redis.ConnectionError:
        return -1  # the server is still starting


def test_outputs_config_is_validated(tmp_path):
    base = {"sites": [{"id": "s1"}], "models": [{"name": "m", "path": "m.onnx"}]}
    outputs = {"redis_stream": {"url": "redis://r:6379/0"}}
    config = parse_config({**base, "outputs": outputs}, "x.yaml", tmp_path, {})
    assert config.outputs.redis_stream.stream == "brightkitchen:events"
    assert config.outputs.webhooks.max_age_s == 7 * 86400 and config.outputs.webhooks.client_errors == "retry"
    with pytest.raises(ConfigError) as bad:
        outputs = {"redis_stream": {"url": "http://r"}, "webhook": {}}
        parse_config({**base, "outputs": outputs}, "x.yaml", tmp_path, {})
    paths = [path for path, _ in bad.value.errors]
    assert "outputs.redis_stream.url" in paths and "outputs.webhook" in paths
