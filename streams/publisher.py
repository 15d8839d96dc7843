"""Snapshots and publishing off the worker loop: one thread makes the snapshot of each opened event and
publishes every revision, in the order the loop emitted them.

The loop goes on analysing every camera while a snapshot is converted, drawn, encoded and written, or
while a full bus makes publishing wait; only when `max_pending` events wait does the loop wait too, so
nothing is ever dropped. Revisions made before their event's snapshot was ready get its snapshot here.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from brightkitchen.bus import Bus
from brightkitchen.events import Event

log = logging.getLogger("streams.publisher")

_STOP = object()


class EventPublisher:
    def __init__(
        self,
        bus: Bus,
        make_snapshot: Callable[[Event, Any], tuple[str, str]],
        on_published: Callable[[Event, float], None],
        max_pending: int = 1000,
    ) -> None:
        self.bus = bus
        self.make_snapshot = make_snapshot
        self.on_published = on_published
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._snapshots: dict[str, tuple[str, str]] = {}  # event id -> (snapshot, sha256) until it closes

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if not self.running:
            self._thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Publish everything submitted so far, then end the thread."""
        if self.running:
            assert self._thread is not None
            self._queue.put(_STOP)
            self._thread.join(timeout_s)

    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, event: Event, frame_time: float, snapshot_job: Any = None) -> None:
        """Queue an event revision (with what its snapshot is made from, for an opened event). Without the
        thread running (a worker driven tick by tick), it is handled at once."""
        if self.running:
            self._queue.put((event, frame_time, snapshot_job))
        else:
            self._handle(event, frame_time, snapshot_job)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._handle(*item)
            except Exception:  # a bug here must not end publishing for every camera
                log.exception("publishing event %s failed", item[0].id)

    def _handle(self, event: Event, frame_time: float, snapshot_job: Any) -> None:
        if snapshot_job is not None:
            try:
                event.snapshot, event.snapshot_sha256 = self.make_snapshot(event, snapshot_job)
                self._snapshots[event.id] = (event.snapshot, event.snapshot_sha256)
            except Exception:  # the event goes out without its picture rather than not at all
                log.exception("snapshot of event %s failed", event.id)
        elif event.snapshot is None and event.id in self._snapshots:
            event.snapshot, event.snapshot_sha256 = self._snapshots[event.id]
        if event.phase == "closed":
            self._snapshots.pop(event.id, None)
        self.bus.publish(event)
        self.on_published(event, frame_time)
