"""Snapshots and publishing off the worker loop: a few threads make the snapshots of opened events, one
thread publishes every revision, in the order the loop emitted them. Work that no event waits for (the raw
frame kept for retraining) runs in a thread of its own at a lower priority, so that a burst of opened events
(every camera at once when the service starts) waits only for their snapshots. At most `max_background`
such jobs wait, each holding a decoded frame; past that, new ones are skipped and counted.

The loop goes on analysing every camera while a snapshot is converted, drawn, encoded and written, or
while a full bus makes publishing wait; only when `max_pending` events wait does the loop wait too, so
nothing is ever dropped. Revisions made before their event's snapshot was ready get its snapshot here.

Snapshots render in `render_threads` threads: conversion and JPEG encoding release the GIL, so a burst of
events (a shift starting without hats on many cameras) uses both cores instead of queueing behind one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from brightkitchen.bus import Bus
from brightkitchen.events import Event
from brightkitchen.metrics import BACKGROUND_SKIPPED
from streams.reader import lower_thread_priority

log = logging.getLogger("streams.publisher")

_STOP = object()


RENDER_THREAD_PREFIX = "snapshot"
BACKGROUND_NICE = 10  # the camera readers' default: the loop, the snapshots and the inference come first


class EventPublisher:
    def __init__(
        self,
        bus: Bus,
        make_snapshot: Callable[[Event, Any], tuple[str, str]],
        on_published: Callable[[Event, float], None],
        max_pending: int = 1000,
        render_threads: int = 2,
        max_background: int = 100,
        background_nice: int = BACKGROUND_NICE,
    ) -> None:
        self.bus = bus
        self.make_snapshot = make_snapshot
        self.on_published = on_published
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._render_threads = render_threads
        self._renderers: ThreadPoolExecutor | None = None
        self._background: ThreadPoolExecutor | None = None
        self._max_background = max_background
        self._background_nice = background_nice
        self._background_waiting = 0
        self._background_lock = threading.Lock()
        self._snapshots: dict[str, tuple[str, str]] = {}  # event id -> (snapshot, sha256) until it closes

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if not self.running:
            self._renderers = ThreadPoolExecutor(self._render_threads, thread_name_prefix=RENDER_THREAD_PREFIX)
            self._background = ThreadPoolExecutor(1, thread_name_prefix=f"{RENDER_THREAD_PREFIX}-background",
                                                  initializer=lower_thread_priority, initargs=(self._background_nice,))
            self._thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Publish everything submitted so far, then end the thread."""
        if self.running:
            assert self._thread is not None
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
        for pool in (self._renderers, self._background):
            if pool is not None:
                pool.shutdown(wait=True)

    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, event: Event, frame_time: float, snapshot_job: Any = None) -> None:
        """Queue an event revision (with what its snapshot is made from, for an opened event). Without the
        thread running (a worker driven tick by tick), it is handled at once."""
        if not self.running:
            self._handle(event, frame_time, self._render(event, snapshot_job))
            return
        assert self._renderers is not None
        rendering = self._renderers.submit(self._render, event, snapshot_job) if snapshot_job is not None else None
        self._queue.put((event, frame_time, rendering))

    def in_background(self, work: Callable[..., None], *args: Any) -> None:
        """Run work in the background thread without holding up any event or snapshot (at once without the
        threads), unless `max_background` jobs wait already. stop() waits for it; a failure is logged."""
        if not self.running:
            self._quietly(work, *args)
            return
        assert self._background is not None
        with self._background_lock:
            if self._background_waiting >= self._max_background:
                BACKGROUND_SKIPPED.inc()
                log.warning("background work %s skipped: %d jobs wait already", _name(work), self._background_waiting)
                return
            self._background_waiting += 1
        self._background.submit(self._in_turn, work, *args)

    def _in_turn(self, work: Callable[..., None], *args: Any) -> None:
        with self._background_lock:
            self._background_waiting -= 1
        self._quietly(work, *args)

    @staticmethod
    def _quietly(work: Callable[..., None], *args: Any) -> None:
        try:
            work(*args)
        except Exception:  # the events went out; what failed here is logged, not lost silently
            log.exception("background work %s failed", _name(work))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._handle(*item)
            except Exception:  # a bug here must not end publishing for every camera
                log.exception("publishing event %s failed", item[0].id)

    def _render(self, event: Event, snapshot_job: Any) -> tuple[str, str] | None:
        if snapshot_job is None:
            return None
        try:
            return self.make_snapshot(event, snapshot_job)
        except Exception:  # the event goes out without its picture rather than not at all
            log.exception("snapshot of event %s failed", event.id)
            return None

    def _handle(self, event: Event, frame_time: float, snapshot: tuple[str, str] | Future | None) -> None:
        if isinstance(snapshot, Future):
            snapshot = snapshot.result()
        if snapshot is not None:
            event.snapshot, event.snapshot_sha256 = snapshot
            self._snapshots[event.id] = snapshot
        elif event.snapshot is None and event.id in self._snapshots:
            event.snapshot, event.snapshot_sha256 = self._snapshots[event.id]
        if event.phase == "closed":
            self._snapshots.pop(event.id, None)
        self.bus.publish(event)
        self.on_published(event, frame_time)


def _name(work: Callable[..., None]) -> str:
    return getattr(work, "__name__", repr(work))
