"""The event bus between workers (publishers) and the API (the consumer that stores events).

The embedded default is an in-process queue. A bus delivers at least once; the store de-duplicates
by (event id, revision).
"""

from __future__ import annotations

import queue
from typing import Protocol

from brightkitchen.events import Event


class Bus(Protocol):
    def publish(self, event: Event) -> None: ...

    def receive(self, timeout: float) -> Event | None: ...

    def close(self) -> None: ...


class InProcessBus:
    """A bounded in-memory queue; publish blocks briefly rather than dropping when the consumer lags."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=maxsize)

    def publish(self, event: Event) -> None:
        self._queue.put(event, timeout=30.0)

    def receive(self, timeout: float) -> Event | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        pass
