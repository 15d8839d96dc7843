"""The Redis Streams bus between worker processes and API replicas, on any number of boxes.

Workers add each event revision to one stream (XADD, trimmed to about `maxlen` entries). API replicas
read it in one consumer group (XREADGROUP), so each entry goes to one of them, and acknowledge an
entry (XACK) only once its event is stored, or found already stored. An entry read by a consumer that
died before acknowledging stays pending in the group; after `claim_idle_s` another consumer takes it
over (XAUTOCLAIM) and stores it. Delivery is therefore at least once, and the store's de-duplication by
(event id, revision) makes a second delivery harmless: nothing is lost, nothing is stored twice.

A worker does not wait for Redis: published events go to a bounded local buffer that a sender thread
adds to the stream, retrying while Redis is unreachable. When the buffer is full, publish blocks (and
then fails) like the in-process bus.

Trimming is approximate (MAXLEN ~) and drops the oldest entries whether or not they were stored: keep
`maxlen` above the number of events published during the longest API outage you want to survive.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from typing import Any

import redis
from prometheus_client import Counter
from pydantic import ValidationError

from brightkitchen.config import RedisBusConfig
from brightkitchen.events import Event

log = logging.getLogger("brightkitchen.redis_bus")

CLAIMED = Counter("brightkitchen_bus_claimed_total", "Bus entries taken over from a consumer that stopped")
INVALID = Counter("brightkitchen_bus_invalid_total", "Bus entries that are not an event (set aside)")

SEND_BATCH = 200
MAX_BACKOFF_S = 10.0
DEAD_CONSUMER_IDLE_MS = 3600 * 1000  # consumers idle this long with nothing pending are removed
CONSUMER_CLEANUP_S = 600.0


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisBus:
    """Publishes (workers) and consumes (API) one Redis stream; one object can do both."""

    durable = True  # unacknowledged entries survive this process: stopping need not drain

    def __init__(self, settings: RedisBusConfig) -> None:
        self.settings = settings
        self.consumer = settings.consumer or default_consumer()
        # Reads block up to the caller's timeout: the socket timeout must be longer.
        self._client = redis.Redis.from_url(settings.url, socket_timeout=30, socket_connect_timeout=5)
        # Consumer state, used by the one thread that calls receive and ack (the API's ingest).
        self._ready = False
        self._entries: deque[tuple[bytes, dict[bytes, bytes] | None]] = deque()
        self._unacked: dict[tuple[str, int], set[bytes]] = {}
        self._own_pending_from: bytes | None = b"0"  # first take up what this consumer name left
        self._next_claim = 0.0
        self._claim_cursor: bytes | str = "0-0"
        self._next_cleanup = 0.0
        self._failing = False
        # Publisher state.
        self._outgoing: queue.Queue[str | None] = queue.Queue(maxsize=settings.buffer)
        self._sender: threading.Thread | None = None
        self._sender_lock = threading.Lock()
        self._closing = threading.Event()

    # -- publishing (workers) -------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        if self._sender is None:
            with self._sender_lock:
                if self._sender is None:
                    self._sender = threading.Thread(target=self._send_forever, name="bus-sender", daemon=True)
                    self._sender.start()
        self._outgoing.put(event.model_dump_json(), timeout=30.0)

    def _send_forever(self) -> None:
        failures = 0
        while True:
            first = self._outgoing.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < SEND_BATCH:
                try:
                    item = self._outgoing.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._outgoing.put(None)  # stop after this batch
                    break
                batch.append(item)
            while True:
                try:
                    pipe = self._client.pipeline(transaction=False)
                    for data in batch:
                        pipe.xadd(self.settings.stream, {"event": data}, maxlen=self.settings.maxlen,
                                  approximate=True)
                    pipe.execute()
                    if failures:
                        log.info("bus %s: publishing again", self.settings.stream)
                    failures = 0
                    break
                except redis.RedisError as e:
                    # A batch that partly reached Redis is sent again whole: consumers de-duplicate.
                    failures += 1
                    if failures == 1:
                        log.warning("bus %s: cannot publish (%s); %d events kept, retrying",
                                    self.settings.stream, e, len(batch) + self._outgoing.qsize())
                    if self._closing.wait(min(MAX_BACKOFF_S, 0.2 * 2 ** min(failures, 6))):
                        log.error("bus %s: closing with %d events not published", self.settings.stream,
                                  len(batch) + self._outgoing.qsize())
                        return

    # -- consuming (API) ------------------------------------------------------------------------

    def receive(self, timeout: float) -> Event | None:
        """The next event to store; call `ack` once it is stored. None when none came within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._entries:
                try:
                    self._fill(max(0.0, deadline - time.monotonic()))
                    if self._failing:
                        log.info("bus %s: reading again", self.settings.stream)
                        self._failing = False
                except redis.RedisError as e:
                    self._ready = False
                    self._own_pending_from = b"0"
                    if not self._failing:
                        log.warning("bus %s: cannot read (%s); retrying", self.settings.stream, e)
                        self._failing = True
                    time.sleep(max(0.0, deadline - time.monotonic()))
                    return None
            if not self._entries:
                return None
            entry_id, fields = self._entries.popleft()
            event = self._event(entry_id, fields)
            if event is not None:
                self._unacked.setdefault((event.id, event.revision), set()).add(entry_id)
                return event
            if time.monotonic() >= deadline:
                return None

    def ack(self, event: Event) -> None:
        """The event is stored (or was already): its entries may leave the group's pending list."""
        ids = self._unacked.pop((event.id, event.revision), None)
        if not ids:
            return
        try:
            self._client.xack(self.settings.stream, self.settings.group, *ids)
        except redis.RedisError as e:  # still pending: delivered again later, and found already stored
            log.warning("bus %s: could not acknowledge %s (%s)", self.settings.stream, event.id, e)

    def _event(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> Event | None:
        if fields is None:  # trimmed from the stream while pending: nothing left to store
            log.error("bus %s: entry %s was trimmed before it was stored (raise bus.redis.maxlen)",
                      self.settings.stream, entry_id.decode())
            self._ack_quietly(entry_id)
            return None
        try:
            return Event.model_validate_json(fields[b"event"])
        except (KeyError, ValidationError) as e:
            # Kept for a person to look at, and acknowledged: it would fail the same way every time.
            INVALID.inc()
            aside = f"{self.settings.stream}:invalid"
            log.error("bus %s: entry %s is not an event (%s); moved to %s", self.settings.stream,
                      entry_id.decode(), str(e).splitlines()[0], aside)
            try:
                self._client.xadd(aside, {**fields, b"entry": entry_id, b"error": str(e)[:500]},
                                  maxlen=10_000, approximate=True)
            except redis.RedisError:
                return None  # not set aside: stays pending, and is tried again later
            self._ack_quietly(entry_id)
            return None

    def _ack_quietly(self, entry_id: bytes) -> None:
        try:
            self._client.xack(self.settings.stream, self.settings.group, entry_id)
        except redis.RedisError as e:  # stays pending and comes again
            log.warning("bus %s: could not acknowledge %s (%s)", self.settings.stream, entry_id.decode(), e)

    def _fill(self, block_s: float) -> None:
        s = self.settings
        if not self._ready:
            try:
                self._client.xgroup_create(s.stream, s.group, id="0", mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            self._ready = True
        try:
            self._fill_from_group(block_s)
        except redis.ResponseError as e:
            if "NOGROUP" in str(e):  # the stream or group was deleted: create it again
                self._ready = False
                self._own_pending_from = b"0"
                return
            raise

    def _fill_from_group(self, block_s: float) -> None:
        s = self.settings
        if self._own_pending_from is not None:  # what this consumer name read before a restart or outage
            found = self._client.xreadgroup(s.group, self.consumer, {s.stream: self._own_pending_from},
                                            count=s.batch)
            entries = found[0][1] if found else []
            if entries:
                self._own_pending_from = entries[-1][0]
                self._entries.extend(entries)
                return
            self._own_pending_from = None
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + max(0.2, s.claim_idle_s / 4)
            cursor, entries, *_ = self._client.xautoclaim(
                s.stream, s.group, self.consumer, min_idle_time=int(s.claim_idle_s * 1000),
                start_id=self._claim_cursor, count=s.batch,
            )
            self._claim_cursor = cursor
            if entries:
                CLAIMED.inc(len(entries))
                log.info("bus %s: took over %d entries of a stopped consumer", s.stream, len(entries))
                self._entries.extend(entries)
                return
        if now >= self._next_cleanup:
            self._next_cleanup = now + CONSUMER_CLEANUP_S
            self._remove_dead_consumers()
        found = self._client.xreadgroup(s.group, self.consumer, {s.stream: ">"}, count=s.batch,
                                        block=max(1, int(block_s * 1000)))
        if found:
            self._entries.extend(found[0][1])

    def _remove_dead_consumers(self) -> None:
        for consumer in self._client.xinfo_consumers(self.settings.stream, self.settings.group):
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name != self.consumer and consumer["pending"] == 0 and consumer["idle"] > DEAD_CONSUMER_IDLE_MS:
                self._client.xgroup_delconsumer(self.settings.stream, self.settings.group, name)

    # -- both -----------------------------------------------------------------------------------

    def pending(self) -> dict[str, Any]:
        """The group's pending entries (read, not acknowledged), for health and tests."""
        info = self._client.xpending(self.settings.stream, self.settings.group)
        return {"pending": info["pending"], "consumers": len(info["consumers"] or [])}

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is buffered (up to timeout_s), then let go of Redis."""
        if self._sender is not None:
            try:
                self._outgoing.put(None, timeout=timeout_s)
            except queue.Full:
                pass
            self._sender.join(timeout=timeout_s)
            self._closing.set()
            self._sender.join(timeout=1.0)
        self._client.close()
