"""Assemble one brightkitchen process from a config: store, snapshots, bus, worker and API.

A process has a role: `all` (worker and API, the embedded default), `api` (stores what the bus brings
and serves the API; run several behind a load balancer) or `worker` (analyses cameras and publishes
events; run one per box). Processes of different roles are joined by the Redis bus and a shared
PostgreSQL database and snapshot folder.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.app import AppContext, create_app
from brightkitchen.assignment import CameraAssignment, shared_camera_status
from brightkitchen.bus import Bus, open_bus
from brightkitchen.config import Config, ConfigError, json_schema
from brightkitchen.db import redact
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore, is_postgresql, sqlite_path
from streams.live import FeedOptions, LiveVideo, face_detector, live_cameras, viewing_hours
from streams.worker import Worker

log = logging.getLogger("brightkitchen.service")
PRUNE_INTERVAL_S = 600.0
Role = Literal["all", "api", "worker"]
ROLES: tuple[Role, ...] = ("all", "api", "worker")


def database_url(config: Config) -> str:
    """The configured database; a SQLite path relative to the config file's folder."""
    url = config.storage.database
    if is_postgresql(url):
        return url
    return "sqlite:///" + str(config.resolve_path(str(sqlite_path(url))))


def check_role(config: Config, role: Role) -> None:
    """A process of one role only needs the others through Redis: say so when the config has none."""
    if role != "all" and config.bus.kind != "redis":
        raise ConfigError(f"--role {role}", [(
            "bus.kind", f"a process of role {role} reaches the other processes through Redis: set bus.kind: redis"
        )])


@dataclass
class Service:
    config: Config
    role: Role
    bus: Bus
    snapshots: SnapshotStore
    store: EventStore | None  # not in a worker-only process
    worker: Worker | None  # not in an API-only process
    assignment: CameraAssignment | None  # when cameras are shared out among worker processes

    def app(self) -> FastAPI:
        if self.store is None:
            assert self.worker is not None
            return worker_app(self.worker, self.assignment, self.bus)
        background: list[Any] = []
        if self.worker is not None:
            background.append(self.assignment or self.worker)
        ctx = AppContext(
            store=self.store,
            snapshots=self.snapshots,
            bus=self.bus,
            camera_status=self.worker.camera_status if self.worker else shared_camera_status(self.config),
            config_schema=json_schema,
            background=background,
            auth=self.config.api.auth,
            site_timezones={site.id: site.timezone for site in self.config.sites},
            outputs=self.config.outputs,
            live=self.live_video() if self.config.live.enabled else None,
            live_settings=self.config.live,
            viewing_hours=viewing_hours(self.config),
            model_status=self.worker.model_status if self.worker else None,
        )
        return create_app(ctx)

    def live_video(self) -> LiveVideo:
        worker, live = self.config.worker, self.config.live
        options = FeedOptions(open_timeout_s=worker.open_timeout_s, read_timeout_s=worker.read_timeout_s,
                              backoff_max_s=min(worker.backoff_max_s, 10.0), idle_close_s=live.idle_close_s)
        return LiveVideo(live_cameras(self.config), options, face_detector=face_detector(self.config),
                         bitrate_kbps=live.privacy_bitrate_kbps, detect_every=live.privacy_detect_every)

    def close(self) -> None:
        self.bus.close()  # a Redis bus sends what it still holds
        if self.store is not None:
            self.store.close()


def build_service(config: Config, role: Role = "all") -> Service:
    check_role(config, role)
    store = None
    if role != "worker":
        url = database_url(config)
        store = EventStore(url)
        if store.applied_migrations:
            log.info("database %s migrated: %s", redact(url), ", ".join(store.applied_migrations))
    snapshots = SnapshotStore(
        config.resolve_path(config.storage.snapshots_dir),
        retention_days=config.storage.snapshot_retention_days,
        max_count=config.storage.snapshot_max_count,
    )
    bus = open_bus(config.bus)
    try:
        worker = Worker(config, bus, snapshots) if role != "api" else None
    except Exception:  # e.g. a missing model file: do not leave the database open
        if store is not None:
            store.close()
        raise
    assignment = None
    if worker is not None and config.assignment.kind == "redis":
        assignment = CameraAssignment(worker, config.assignment)
    elif role == "worker":
        log.warning("assignment.kind is all: this worker analyses every camera; with several workers set "
                    "assignment.kind: redis, or each camera is analysed by each of them")
    return Service(config, role, bus, snapshots, store, worker, assignment)


def worker_app(worker: Worker, assignment: CameraAssignment | None, bus: Bus) -> FastAPI:
    """A worker-only process serves its health and metrics (no API, no database)."""
    running: Any = assignment or worker

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202 - FastAPI's lifespan
        running.start()
        yield
        running.stop()

    app = FastAPI(title="brightkitchen worker", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        statuses = worker.camera_status()
        return {
            "status": "ok",
            "role": "worker",
            "worker_id": assignment.worker_id if assignment else None,
            "cameras": sorted(worker.running_cameras()),
            "connected": sorted(c["id"] for c in statuses if c.get("connected")),
        }

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _prune_forever(snapshots: SnapshotStore, stop: threading.Event) -> None:
    while not stop.wait(PRUNE_INTERVAL_S):
        removed = snapshots.prune()
        if removed:
            log.info("snapshot retention removed %d files", removed)


def _exit_normally(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run_service(
    config: Config, host: str, port: int, duration_s: float | None = None, role: Role = "all"
) -> None:
    """Run the process's parts until interrupted (or for duration_s seconds)."""
    service = build_service(config, role)
    server = uvicorn.Server(uvicorn.Config(service.app(), host=host, port=port, log_level="info"))
    stop = threading.Event()
    if role != "worker":  # snapshot retention runs beside the API (one place, not on every worker)
        threading.Thread(target=_prune_forever, args=(service.snapshots, stop), daemon=True).start()
        service.snapshots.prune()
    if duration_s is not None:
        timer = threading.Timer(duration_s, lambda: setattr(server, "should_exit", True))
        timer.daemon = True  # an interrupted run must not wait for it
        timer.start()
    log.info("%s serving on http://%s:%d/", "worker" if role == "worker" else "API", host, port)
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down gracefully on SIGTERM, then raises it again: exit normally instead, so that
        # the bus still sends what it holds (below).
        signal.signal(signal.SIGTERM, _exit_normally)
        if service.worker is not None and hasattr(signal, "SIGHUP"):
            # kill -HUP: re-read the config's model entries and the model files; changed models swap in.
            worker = service.worker
            signal.signal(signal.SIGHUP, lambda *_: worker.reload_models())
    try:
        server.run()
    finally:
        stop.set()
        service.close()
