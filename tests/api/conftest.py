import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from api.app import AppContext, create_app
from brightkitchen.bus import InProcessBus
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore
from tests.databases import database_url  # noqa: F401 - a fixture
from tests.serving import serve_in_thread


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
def running_api(tmp_path, database_url) -> Iterator[RunningApi]:  # noqa: F811 - the fixture
    """The real API served by uvicorn on a free loopback port, over a real database (SQLite, PostgreSQL)."""
    bus = InProcessBus()
    store = EventStore(database_url)
    snapshots = SnapshotStore(tmp_path / "snapshots")
    cameras: list[dict] = []
    ctx = AppContext(store=store, snapshots=snapshots, bus=bus, camera_status=lambda: cameras)
    with serve_in_thread(create_app(ctx)) as url:
        yield RunningApi(url, bus, store, snapshots, cameras)
    store.close()
