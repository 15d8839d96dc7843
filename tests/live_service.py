"""A real API with the live view over a real loopback RTSP camera, and its users, for the live view's
tests (signalling over HTTP and a real browser)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from api.app import AppContext, create_app
from brightkitchen.bus import InProcessBus
from brightkitchen.config import AuthConfig, Config, LiveConfig, parse_config
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore
from brightkitchen.users import UserStore
from streams.live import FeedOptions, LiveVideo, live_cameras, viewing_hours
from streams.rtsp_launcher import RtspServerProcess
from tests.serving import serve_in_thread

PASSWORD = "correct-horse"
USERS = {  # name -> role, sites
    "admin": ("admin", []),
    "regulator": ("regulator", ["s1", "s2"]),
    "manager1": ("site_manager", ["s1"]),
    "parent1": ("parent", ["s1"]),
    "parent2": ("parent", ["s2"]),
}


def window_around(now: datetime, before_s: float, after_s: float) -> dict[str, Any]:
    """A daily viewing window (UTC) from now - before_s to now + after_s."""
    start, end = now - timedelta(seconds=before_s), now + timedelta(seconds=after_s)
    return {"start": start.time().isoformat(timespec="seconds"), "end": end.time().isoformat(timespec="seconds")}


def live_config(urls: dict[str, str], *, viewing: dict[str, Any], max_viewers: int = 8,
                privacy: str = "none") -> Config:
    """Two schools: s1 with cam1 and viewing hours `viewing`, s2 with cam2 (always open for parents)."""
    data = {
        "sites": [
            {"id": "s1", "name": "School 1", "timezone": "UTC", "viewing_hours": "viewing",
             "schedules": {"viewing": [viewing]},
             "cameras": [{"id": "cam1", "name": "Kitchen 1", "url": urls["cam1"], "privacy": privacy}]},
            {"id": "s2", "name": "School 2", "timezone": "UTC", "viewing_hours": "always",
             "schedules": {"always": [{"start": "00:00", "end": "00:00"}]},
             "cameras": [{"id": "cam2", "name": "Kitchen 2", "url": urls["cam2"]}]},
        ],
        "models": [{"name": "m", "path": "m.onnx"}],
        "live": {"max_viewers_per_camera": max_viewers, "idle_close_s": 1, "ice_addresses": ["127.0.0.1"]},
    }
    return parse_config(data, "test", Path("."), environ={})


@dataclass
class LiveService:
    url: str
    rtsp: RtspServerProcess
    live: LiveVideo
    app: Any
    store: EventStore
    bus: InProcessBus
    snapshots: SnapshotStore
    tokens: dict[str, str]

    def sessions(self) -> dict[str, Any]:
        return self.app.state.live.sessions

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@contextmanager
def live_service(tmp_path: Path, rtsp: RtspServerProcess, *, viewing: dict[str, Any] | None = None,
                 max_viewers: int = 8, privacy: str = "none",
                 face_detector: Callable[[], Any] | None = None) -> Iterator[LiveService]:
    now = datetime.now(UTC)
    config = live_config({"cam1": rtsp.url("/cam1"), "cam2": rtsp.url("/cam2")},
                         viewing=viewing or window_around(now, 3600, 3600), max_viewers=max_viewers,
                         privacy=privacy)
    store = EventStore(f"sqlite:///{tmp_path}/events.db")
    users = UserStore(store)
    for name, (role, sites) in USERS.items():
        users.add_user(name, role, sites, PASSWORD)
    cameras = [{"id": c.id, "name": c.name, "site": s.id, "url": c.url, "connected": True}
               for s, c in config.cameras()]
    options = FeedOptions(open_timeout_s=2, read_timeout_s=2, backoff_initial_s=0.2, backoff_max_s=1,
                          idle_close_s=config.live.idle_close_s)
    live = LiveVideo(live_cameras(config), options, face_detector=face_detector)
    settings: LiveConfig = config.live
    bus, snapshots = InProcessBus(), SnapshotStore(tmp_path / "snapshots")
    ctx = AppContext(store=store, snapshots=snapshots, bus=bus,
                     camera_status=lambda: cameras, auth=AuthConfig(enabled=True), live=live,
                     live_settings=settings, viewing_hours=viewing_hours(config))
    app = create_app(ctx)
    with serve_in_thread(app) as url:
        tokens = {}
        with httpx.Client(base_url=url, timeout=30) as client:
            for name in USERS:
                r = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
                r.raise_for_status()
                tokens[name] = r.json()["token"]
        yield LiveService(url, rtsp, live, app, store, bus, snapshots, tokens)
    store.close()


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)
