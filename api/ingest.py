"""Consume the bus: store each event revision once, acknowledge it, then fan it out to live subscribers."""

from __future__ import annotations

import asyncio
import logging
import threading

from brightkitchen.bus import Bus
from brightkitchen.events import Event
from brightkitchen.metrics import EVENTS_STORED
from brightkitchen.store import EventStore

log = logging.getLogger("api.ingest")


class EventHub:
    """Fan-out of stored events to asyncio subscribers (server-sent events)."""

    def __init__(self, max_queue: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max_queue = max_queue

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(self._max_queue)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(q)

    def publish(self, event: Event) -> None:
        """Called from the ingest thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: Event) -> None:
        for q in list(self._subscribers):
            if q.full():  # a subscriber that does not read loses its stream, not the others'
                self._subscribers.discard(q)
                continue
            q.put_nowait(event)


class Ingest(threading.Thread):
    def __init__(self, bus: Bus, store: EventStore, hub: EventHub) -> None:
        super().__init__(name="event-ingest", daemon=True)
        self.bus, self.store, self.hub = bus, store, hub
        self._stop_requested = threading.Event()

    def run(self) -> None:
        while True:
            if self._stop_requested.is_set() and self.bus.durable:
                return  # what was not acknowledged is delivered again, to this process or another
            event = self.bus.receive(timeout=0.2)
            if event is None:
                if self._stop_requested.is_set():
                    return  # stop only once the bus is drained, so no published event is lost
                continue
            stored = self._store(event)
            if stored is None:
                continue  # not stored, not acknowledged
            self.bus.ack(event)  # stored now, or already before (a redelivery)
            if stored:
                EVENTS_STORED.labels(event.phase).inc()
                self.hub.publish(event)

    def _store(self, event: Event) -> bool | None:
        """Retry until stored: a storage failure must neither kill ingestion nor lose the event.
        True: stored; False: a duplicate; None: given up at shutdown."""
        while True:
            try:
                return self.store.upsert(event)
            except Exception:
                log.exception("could not store event %s revision %s; retrying", event.id, event.revision)
                if self._stop_requested.wait(1.0):
                    level = logging.INFO if self.bus.durable else logging.ERROR
                    log.log(level, "event %s revision %s not stored at shutdown%s", event.id, event.revision,
                            " (it stays on the bus)" if self.bus.durable else "")
                    return None

    def stop(self) -> None:
        self._stop_requested.set()
        self.join(timeout=5)
