"""The Redis Stream output: XADD every change of the change log to a stream, in seq order.

Driven from the change log with the last pushed seq stored in the database, so a Redis outage (or an
API restart) loses nothing: pushing resumes where it stopped. A batch that reached Redis but whose
cursor was not saved is pushed again, so readers de-duplicate by `seq` (or event id and revision).

On PostgreSQL every API replica runs a pusher; they take turns on a lock held, on a connection of the
pusher's own, from reading the cursor to saving it, so each change is pushed once, not once per replica.
"""

from __future__ import annotations

import logging
import threading

import redis
from prometheus_client import Counter, Gauge

from brightkitchen.changes import Change, ChangeLog, changes_after, read_cursor, write_cursor
from brightkitchen.config import RedisStreamConfig
from brightkitchen.db import Connection, Database

log = logging.getLogger("api.redis_stream")

PUSHED = Counter("brightkitchen_redis_stream_pushed_total", "Changes added to the Redis stream")
LAG = Gauge("brightkitchen_redis_stream_lag", "Stored changes not yet added to the Redis stream")

BATCH = 500
POLL_S = 5.0
MAX_BACKOFF_S = 30.0


def stream_fields(change: Change) -> dict[str, str | int]:
    return {
        "seq": change.seq,
        "event_id": change.event_id,
        "revision": change.revision,
        "phase": change.phase,
        "site": change.site,
        "camera": change.camera,
        "rule": change.rule,
        "event": change.payload,
    }


class RedisStreamPusher(threading.Thread):
    def __init__(self, changes: ChangeLog, settings: RedisStreamConfig, database_url: str | None = None) -> None:
        super().__init__(name="redis-stream", daemon=True)
        self.changes, self.settings = changes, settings
        self.database_url = database_url  # PostgreSQL: pushers of several replicas take turns
        self.cursor_name = f"redis_stream:{settings.stream}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.failures = 0  # consecutive failed pushes: more than 0 while Redis is unreachable

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self.join(timeout=15)

    def run(self) -> None:
        client = redis.Redis.from_url(self.settings.url, socket_timeout=5, socket_connect_timeout=5)
        self._db = Database(self.database_url) if self.database_url else None
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    pushed = self.push_batch(client)
                    if self.failures:
                        log.info("redis stream %s: pushing again", self.settings.stream)
                    self.failures, wait = 0, POLL_S
                    if pushed == BATCH:
                        continue  # more are waiting
                except redis.RedisError as e:
                    self.failures += 1
                    wait = min(MAX_BACKOFF_S, 0.5 * 2 ** min(self.failures, 10))
                    if self.failures == 1:  # once per outage, not once per retry
                        log.warning("redis stream %s: cannot push (%s); retrying", self.settings.stream, e)
                except Exception:
                    self.failures += 1
                    wait = POLL_S
                    log.exception("redis stream %s: push failed; retrying", self.settings.stream)
                # While failing, new changes do not cut the backoff short.
                (self._stopping if self.failures else self._wake).wait(wait)
        finally:
            client.close()
            if self._db is not None:
                self._db.close()

    def push_batch(self, client: redis.Redis) -> int:
        """Push the next changes after the stored cursor; returns how many were pushed."""
        if self._db is not None:
            with self._db.transaction() as conn:
                conn.serialize(self.cursor_name)  # another replica pushing: wait, then read its cursor
                cursor, pushed = self._push(conn, client)
        else:  # one process: the shared connection, not held while Redis is written to
            with self.changes.store.reading() as conn:
                cursor = read_cursor(conn, self.cursor_name)
                batch = changes_after(conn, cursor, BATCH)
            cursor, pushed = self._xadd(client, cursor, batch)
            if pushed:
                self.changes.set_cursor(self.cursor_name, cursor)
        LAG.set(self.changes.last_seq() - cursor)
        return pushed

    def _push(self, conn: Connection, client: redis.Redis) -> tuple[int, int]:
        cursor = read_cursor(conn, self.cursor_name)
        cursor, pushed = self._xadd(client, cursor, changes_after(conn, cursor, BATCH))
        if pushed:
            write_cursor(conn, self.cursor_name, cursor)
        return cursor, pushed

    def _xadd(self, client: redis.Redis, cursor: int, batch: list[Change]) -> tuple[int, int]:
        if batch:
            pipe = client.pipeline(transaction=False)
            for change in batch:
                pipe.xadd(self.settings.stream, stream_fields(change),
                          maxlen=self.settings.maxlen, approximate=True)
            pipe.execute()
            cursor = batch[-1].seq
            PUSHED.inc(len(batch))
        return cursor, len(batch)
