"""The HTTP API: events (list, detail, snapshot, live stream), cameras, health and metrics; login, review
and statistics come from their routers. Every endpoint but health, metrics, login and the page checks who
asks and shows only the sites that principal may see."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from api.auth import (
    Authenticator,
    Reader,
    auth_router,
    redact_access_tokens_in_logs,
    require,
    visible_event,
)
from api.console import add_console_routes
from api.feed import Feed, feed_router
from api.ingest import EventHub, Ingest
from api.live import LiveSessions, LiveSource, live_router
from api.review import review_router
from api.subscriptions import document_webhook, subscriptions_router
from brightkitchen.bus import Bus
from brightkitchen.config import AuthConfig, LiveConfig, OutputsConfig
from brightkitchen.events import Event
from brightkitchen.review import ReviewStore
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventQuery, EventStore, StoreError
from brightkitchen.users import EVENT_READERS, UserStore

log = logging.getLogger("api.app")


class Background(Protocol):
    """Something that runs beside the API, e.g. the worker: started after ingest, stopped before it."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class AppContext:
    store: EventStore
    snapshots: SnapshotStore
    bus: Bus
    camera_status: Callable[[], list[dict[str, Any]]]
    config_schema: Callable[[], str] | None = None
    background: list[Background] = field(default_factory=list)
    # Built in code without settings, the API has no login (the service passes the config's, on by default).
    auth: AuthConfig = field(default_factory=lambda: AuthConfig(enabled=False))
    site_timezones: dict[str, str] = field(default_factory=dict)  # site id -> IANA zone, for daily stats
    clock: Callable[[], float] = time.time  # token expiry and review times
    outputs: OutputsConfig = field(default_factory=OutputsConfig)  # webhook delivery, Redis stream
    live: LiveSource | None = None  # the live view's video (None: no live view)
    live_settings: LiveConfig = field(default_factory=LiveConfig)
    # site id, UTC timestamp -> whether parents may watch then (the service builds it from the config).
    viewing_hours: Callable[[str, float], bool] = lambda site, ts: False
    model_status: Callable[[], list[dict[str, Any]]] | None = None  # the worker's models (hot swap state)


class EventPage(BaseModel):
    items: list[Event]
    next_cursor: str | None


class CameraStatusOut(BaseModel):
    id: str
    name: str
    site: str
    url: str
    connected: bool
    decode_mode: str | None = None
    decode_mode_reason: str | None = None
    input_fps: float = 0.0
    analysed_fps: float = 0.0
    last_frame_at: datetime | None = None
    reconnects: int = 0
    last_error: str | None = None
    motion_gate: str | None = None
    frames_received: int = 0
    frames_decoded: int = 0
    frames_analysed: int = 0
    frames_dropped_stale: int = 0
    frames_replaced: int = 0
    frames_dropped_late: int = 0
    receiver: str | None = None
    receiver_reason: str | None = None
    inference_skipped_still: int = 0
    inference_skipped_schedule: int = 0


class ModelStatusOut(BaseModel):
    name: str
    version: str
    path: str
    sha256: str
    runtime: str = Field(description="engine, provider and precision, e.g. 'openvino OpenVINO CPU bf16'")
    processes: int
    loaded_at: datetime
    swaps: int = Field(description="times a new file or config entry was swapped in while running")
    last_checked_at: datetime | None = None
    last_error: str | None = Field(None, description="why the newest candidate was refused (the old one runs)")
    last_error_at: datetime | None = None
    config_error: str | None = Field(None, description="the changed config file could not be used")


class Problem(BaseModel):
    detail: Any


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def create_app(ctx: AppContext) -> FastAPI:
    hub = EventHub()
    ingest = Ingest(ctx.bus, ctx.store, hub)
    auth = Authenticator(UserStore(ctx.store, ctx.clock), ctx.auth, ctx.clock)
    feed = Feed(ctx.store, hub, ctx.outputs)
    live = LiveSessions(ctx.live, ctx.live_settings, ctx.camera_status, ctx.viewing_hours, ctx.clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop())
        feed.start()
        redact_access_tokens_in_logs()
        if not auth.enabled:
            log.warning("authentication is disabled (api.auth.enabled: false): every request acts as a local admin")
        ingest.start()
        for task in ctx.background:
            task.start()
        yield
        await live.close()
        if ctx.live is not None:
            ctx.live.close()
        for task in reversed(ctx.background):
            task.stop()
        ingest.stop()
        await feed.stop()

    app = FastAPI(
        title="brightkitchen",
        version="0.1.0",
        summary="Violation events from kitchen cameras (明厨亮灶)",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.feed = feed
    app.state.auth = auth
    app.include_router(auth_router(auth))
    reviews = ReviewStore(ctx.store, ctx.clock)
    app.include_router(review_router(ctx.store, reviews, ctx.snapshots, ctx.site_timezones))
    app.include_router(live_router(live))
    add_console_routes(app)
    app.state.live = live

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        page = resources.files("api").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @app.get("/api/v1/events", response_model=EventPage, responses={400: {"model": Problem}}, tags=["events"])
    def list_events(
        who: Reader,
        site: str | None = None,
        camera: str | None = None,
        rule: str | None = None,
        since: Annotated[datetime | None, Query(description="ISO 8601; without offset means UTC")] = None,
        until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> EventPage:
        """Events, newest first, filtered; follow `next_cursor` for older ones."""
        query = EventQuery(site, camera, rule, _utc(since), _utc(until), limit, cursor, sites=who.sites)
        try:
            items, next_cursor = ctx.store.list(query)
        except StoreError as e:
            raise HTTPException(400, str(e)) from None
        return EventPage(items=items, next_cursor=next_cursor)

    # Before /api/v1/events/{event_id}, which would otherwise take "stream" for an id.
    app.include_router(feed_router(feed))
    app.include_router(subscriptions_router(feed))
    document_webhook(app.webhooks)

    @app.get("/api/v1/events/{event_id}", response_model=Event, responses={404: {"model": Problem}}, tags=["events"])
    def get_event(event_id: str, who: Reader) -> Event:
        return visible_event(ctx.store, who, event_id)

    @app.get(
        "/api/v1/events/{event_id}/snapshot.jpg",
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": Problem}},
        tags=["events"],
    )
    def get_snapshot(event_id: str, who: Reader) -> FileResponse:
        event = visible_event(ctx.store, who, event_id)
        path = ctx.snapshots.path(event.snapshot) if event.snapshot else None
        if path is None:
            raise HTTPException(404, f"event {event_id!r} has no snapshot (never taken or removed by retention)")
        return FileResponse(path, media_type="image/jpeg", headers={"X-Snapshot-SHA256": event.snapshot_sha256 or ""})

    @app.get("/api/v1/cameras", response_model=list[CameraStatusOut], tags=["cameras"])
    def cameras(who: Reader) -> list[CameraStatusOut]:
        """Every configured camera of the sites the caller sees, with its live stream status."""
        return [CameraStatusOut.model_validate(c) for c in ctx.camera_status() if who.sees(c["site"])]

    @app.get("/api/v1/config/schema", tags=["config"], dependencies=[Depends(require(EVENT_READERS))])
    def config_schema() -> Response:
        """The JSON schema of the config file."""
        if ctx.config_schema is None:
            raise HTTPException(404, "no config schema")
        return Response(ctx.config_schema(), media_type="application/schema+json")

    @app.get("/api/v1/models", response_model=list[ModelStatusOut], tags=["models"],
             dependencies=[Depends(require(EVENT_READERS))])
    def models() -> list[ModelStatusOut]:
        """The worker's models: what runs (version, file hash, runtime), swaps, and refused replacements."""
        return [ModelStatusOut.model_validate(m) for m in (ctx.model_status() if ctx.model_status else [])]

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        statuses = ctx.camera_status()
        return {
            "status": "ok" if ingest.is_alive() else "degraded",
            "ingest_alive": ingest.is_alive(),
            "cameras": len(statuses),
            "cameras_connected": sum(1 for c in statuses if c.get("connected")),
            "events": ctx.store.count(),
        }

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
