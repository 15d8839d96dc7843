"""The event bus between workers (publishers) and the API (the consumer that stores events).

The embedded default is an in-process queue; across processes and boxes it is a Redis stream
(brightkitchen/redis_bus.py). A bus delivers at least once; the consumer acknowledges an event once it is
stored, and the store de-duplicates by (event id, revision).
"""

from __future__ import annotations

import queue
from typing import Protocol

from brightkitchen.config import BusConfig
from brightkitchen.events import Event


class Bus(Protocol):
    # True when events received but not acknowledged outlive the process (they are delivered again);
    # False when the consumer must drain the bus before it stops.
    durable: bool

    def publish(self, event: Event) -> None: ...

    def receive(self, timeout: float) -> Event | None: ...

    def ack(self, event: Event) -> None: ...

    def close(self) -> None: ...


class InProcessBus:
    """A bounded in-memory queue; publish blocks briefly rather than dropping when the consumer lags."""

    durable = False

    def __init__(self, maxsize: int = 10_000) -> None:
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=maxsize)

    def publish(self, event: Event) -> None:
        self._queue.put(event, timeout=30.0)

    def receive(self, timeout: float) -> Event | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def ack(self, event: Event) -> None:
        pass  # nothing to keep: an event in this process is gone with it anyway

    def close(self) -> None:
        pass


def open_bus(settings: BusConfig) -> Bus:
    """The bus the config names."""
    if settings.kind == "redis":
        from brightkitchen.redis_bus import RedisBus

        assert settings.redis is not None  # checked by the config
        return RedisBus(settings.redis)
    return InProcessBus()
