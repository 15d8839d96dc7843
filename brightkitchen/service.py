"""Assemble one brightkitchen process from a config: store, snapshots, bus, worker and API."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass

import uvicorn

from api.app import AppContext, create_app
from brightkitchen.bus import InProcessBus
from brightkitchen.config import Config, json_schema
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore, sqlite_path
from streams.worker import Worker

log = logging.getLogger("brightkitchen.service")
PRUNE_INTERVAL_S = 600.0


def database_url(config: Config) -> str:
    return "sqlite:///" + str(config.resolve_path(str(sqlite_path(config.storage.database))))


@dataclass
class Service:
    config: Config
    store: EventStore
    snapshots: SnapshotStore
    worker: Worker

    def app(self):  # noqa: ANN201 - FastAPI
        ctx = AppContext(
            store=self.store,
            snapshots=self.snapshots,
            bus=self.worker.bus,
            camera_status=self.worker.camera_status,
            config_schema=json_schema,
            background=[self.worker],
            auth=self.config.api.auth,
            site_timezones={site.id: site.timezone for site in self.config.sites},
            outputs=self.config.outputs,
            model_status=self.worker.model_status,
        )
        return create_app(ctx)


def build_service(config: Config) -> Service:
    store = EventStore(database_url(config))
    if store.applied_migrations:
        log.info("database migrated: %s", ", ".join(store.applied_migrations))
    snapshots = SnapshotStore(
        config.resolve_path(config.storage.snapshots_dir),
        retention_days=config.storage.snapshot_retention_days,
        max_count=config.storage.snapshot_max_count,
    )
    worker = Worker(config, InProcessBus(), snapshots)
    return Service(config, store, snapshots, worker)


def _prune_forever(snapshots: SnapshotStore, stop: threading.Event) -> None:
    while not stop.wait(PRUNE_INTERVAL_S):
        removed = snapshots.prune()
        if removed:
            log.info("snapshot retention removed %d files", removed)


def run_service(config: Config, host: str, port: int, duration_s: float | None = None) -> None:
    """Run worker and API until interrupted (or for duration_s seconds)."""
    service = build_service(config)
    server = uvicorn.Server(uvicorn.Config(service.app(), host=host, port=port, log_level="info"))
    stop = threading.Event()
    threading.Thread(target=_prune_forever, args=(service.snapshots, stop), daemon=True).start()
    if duration_s is not None:
        timer = threading.Timer(duration_s, lambda: setattr(server, "should_exit", True))
        timer.daemon = True  # an interrupted run must not wait for it
        timer.start()
    service.snapshots.prune()
    if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
        # kill -HUP: re-read the config's model entries and the model files; changed models swap in.
        signal.signal(signal.SIGHUP, lambda *_: service.worker.reload_models())
    log.info("serving on http://%s:%d/", host, port)
    try:
        server.run()
    finally:
        stop.set()
        service.store.close()
