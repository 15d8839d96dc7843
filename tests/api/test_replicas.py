"""Two API replicas on one PostgreSQL database serve one feed: a stream on one replica gets at once what
the other stored, a client can resume on either, and the Redis stream output is pushed once, not once
per replica."""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from api.app import AppContext, create_app
from brightkitchen.bus import InProcessBus
from brightkitchen.config import OutputsConfig, RedisStreamConfig
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore
from tests.api.test_feed import read_sse
from tests.brightkitchen.test_store import make_event
from tests.databases import postgres_schema, unavailable
from tests.serving import serve_in_thread

REDIS = "redis://127.0.0.1:6379/0"


@contextmanager
def replicas(database: str, n: int, outputs: OutputsConfig) -> Iterator[list[tuple[str, InProcessBus]]]:
    with ExitStack() as stack:
        out = []
        for _ in range(n):
            store = EventStore(database)
            stack.callback(store.close)
            bus = InProcessBus()
            snapshots = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            ctx = AppContext(store=store, snapshots=SnapshotStore(snapshots), bus=bus, camera_status=list,
                             outputs=outputs)
            out.append((stack.enter_context(serve_in_thread(create_app(ctx))), bus))
        yield out


def test_a_stream_on_one_replica_follows_what_another_stored():
    with postgres_schema() as database, replicas(database, 2, OutputsConfig()) as ((a_url, _), (b_url, b_bus)):
        events = [make_event(i) for i in range(3)]
        connected = threading.Event()
        got: list = []
        reader = threading.Thread(target=lambda: got.extend(read_sse(a_url, 3, on_connected=connected.set)))
        reader.start()
        assert connected.wait(10)
        for e in events:
            b_bus.publish(e)  # stored by replica b
        # Well within the 15 s after which a stream reads again by itself: woken by the notification.
        reader.join(timeout=5)
        assert not reader.is_alive(), "replica a's stream was not woken by replica b's changes"
        assert [data["id"] for _, _, data in got] == [e.id for e in events]
        # Resume on the other replica after the first seq: the same feed.
        resumed = read_sse(b_url, 2, params={"after": got[0][0]})
        assert [seq for seq, _, _ in resumed] == [seq for seq, _, _ in got[1:]]


def test_replicas_push_each_change_to_the_redis_stream_once(wait_until):
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as e:
        unavailable(f"no Redis at 127.0.0.1:6379 ({e}); scripts/services.sh starts one")
    stream = f"brightkitchen-test:{uuid.uuid4().hex}"
    outputs = OutputsConfig(redis_stream=RedisStreamConfig(url=REDIS, stream=stream))
    try:
        with postgres_schema() as database, replicas(database, 2, outputs) as apis:
            events = [make_event(i) for i in range(40)]
            for i, e in enumerate(events):
                apis[i % 2][1].publish(e)
            wait_until(lambda: client.xlen(stream) >= 40, timeout_s=20, what="40 stream entries")
            time.sleep(2)  # and no more come: nothing pushed twice
            assert client.xlen(stream) == 40
        seqs = [int(f["seq"]) for _, f in client.xrange(stream)]
    finally:
        client.delete(stream)
        client.close()
    assert seqs == sorted(seqs) and len(set(seqs)) == 40
