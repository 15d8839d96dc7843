import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from api.app import AppContext, create_app
from brightkitchen.bus import InProcessBus
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningApi:
    url: str
    bus: InProcessBus
    store: EventStore
    snapshots: SnapshotStore
    cameras: list[dict]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def wait_stored(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.store.count() < n:
            assert time.monotonic() < deadline, f"only {self.store.count()} of {n} events stored"
            time.sleep(0.02)


@pytest.fixture
def running_api(tmp_path) -> Iterator[RunningApi]:
    """The real API served by uvicorn on a free loopback port, over a real SQLite file."""
    bus = InProcessBus()
    store = EventStore(f"sqlite:///{tmp_path}/events.db")
    snapshots = SnapshotStore(tmp_path / "snapshots")
    cameras: list[dict] = []
    ctx = AppContext(store=store, snapshots=snapshots, bus=bus, camera_status=lambda: cameras)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "API did not start"
        time.sleep(0.02)
    yield RunningApi(f"http://127.0.0.1:{port}", bus, store, snapshots, cameras)
    server.should_exit = True
    thread.join(timeout=10)
    store.close()
