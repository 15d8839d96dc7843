"""The live event feed: server-sent events and a WebSocket, both resumable from a change seq.

Every message is one stored event revision, read from the change log. A client that reconnects with
the last seq it saw (`Last-Event-ID` or `?after=`) gets every later change exactly once: the stream
reads the log from its cursor and, once caught up, waits for the doorbell that rings after each
stored revision, then reads again from the same cursor. Live and replayed messages come from the same
read, so there is no boundary at which one could be lost or repeated. A caller scoped to some sites
gets only their changes.

Several API replicas on one PostgreSQL database serve the same feed: the doorbell of each also rings
when another replica stored a change (PostgreSQL LISTEN/NOTIFY), so a client may reconnect to any
replica with the last seq it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import psycopg
from fastapi import APIRouter, Header, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import StreamReader, authenticator
from api.ingest import EventHub
from api.redis_stream import RedisStreamPusher
from api.webhooks import WebhookSender
from brightkitchen.changes import Change, ChangeLog, now_ms, record_change
from brightkitchen.config import OutputsConfig
from brightkitchen.db import MAX_INT64
from brightkitchen.events import Event, Phase, utc
from brightkitchen.outbox import Outbox, queue_deliveries
from brightkitchen.store import EventStore
from brightkitchen.users import EVENT_READERS, Principal

log = logging.getLogger("api.feed")

HEARTBEAT_S = 15.0
READ_BATCH = 200
RETENTION_INTERVAL_S = 3600.0


class FeedMessage(BaseModel):
    """One WebSocket message: a stored event revision and its place in the change log."""

    seq: int
    phase: Phase
    event: Event


class Doorbell:
    """Wakes every waiting stream when a change was stored (asyncio, on the app's loop)."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()

    def register(self) -> asyncio.Event:
        ring = asyncio.Event()
        self._waiters.add(ring)
        return ring

    def unregister(self, ring: asyncio.Event) -> None:
        self._waiters.discard(ring)

    def ring(self) -> None:
        for waiter in self._waiters:
            waiter.set()


class ChangeNotifications(threading.Thread):
    """PostgreSQL only: calls `wake` whenever any process stored a change (LISTEN on the change log's
    channel, notified in the storing transaction), and once after each (re)connection."""

    def __init__(self, url: str, channel: str, wake: Callable[[], None]) -> None:
        super().__init__(name="change-notifications", daemon=True)
        self.url, self.channel, self.wake = url, channel, wake
        self._stopping = threading.Event()

    def run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f'LISTEN "{self.channel}"')
                    if failing:
                        log.info("change notifications: listening again")
                        failing = False
                    self.wake()  # whatever was stored while not listening
                    while not self._stopping.is_set():
                        if any(True for _ in conn.notifies(timeout=1.0, stop_after=1)):
                            self.wake()
            except psycopg.Error as e:
                if not failing:
                    log.warning("change notifications: %s; streams fall back to polling meanwhile", e)
                    failing = True
                self._stopping.wait(2.0)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


class Feed:
    """The app's side of the feed: the change log and webhook outbox as store hooks, the doorbell, and
    the pushing outputs (webhook sender, optional Redis stream), all woken after each stored revision."""

    def __init__(self, store: EventStore, hub: EventHub, outputs: OutputsConfig) -> None:
        # Order matters: deliveries are queued for the change recorded just before, in one transaction.
        for hook in (record_change, queue_deliveries):
            if hook not in store.on_stored:
                store.on_stored.append(hook)
        self.hub, self.outputs = hub, outputs
        self.changes = ChangeLog(store)
        self.outbox = Outbox(store)
        self.bell = Doorbell()
        self.webhooks = WebhookSender(self.outbox, outputs.webhooks)
        postgresql = store.db.url if store.db.dialect.name == "postgresql" else None
        self.redis = (
            RedisStreamPusher(self.changes, outputs.redis_stream, postgresql) if outputs.redis_stream else None
        )
        self._channel = store.db.channel("changes")
        self._database_url = store.db.url
        self.notifications: ChangeNotifications | None = None
        self._pump: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Call on the app's event loop, after the hub is bound to it."""
        loop = asyncio.get_running_loop()
        self._pump = loop.create_task(self._run_pump())
        if self._channel is not None:
            self.notifications = ChangeNotifications(
                self._database_url, self._channel, lambda: loop.call_soon_threadsafe(self.stored)
            )
            self.notifications.start()
        self.webhooks.start()
        if self.redis is not None:
            self.redis.start()

    async def stop(self) -> None:
        if self._pump is None:
            return  # never started
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        if self.notifications is not None:
            await run_in_threadpool(self.notifications.stop)
        await run_in_threadpool(self.webhooks.stop)
        if self.redis is not None:
            await run_in_threadpool(self.redis.stop)

    def stored(self) -> None:
        """A change was committed: wake everything that reads the change log."""
        self.bell.ring()
        self.webhooks.wake()
        if self.redis is not None:
            self.redis.wake()

    async def _run_pump(self) -> None:
        # The hub publishes after the storing transaction commits, so a woken reader sees the change.
        stored = self.hub.subscribe()
        next_retention = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                if loop.time() >= next_retention:
                    next_retention = loop.time() + RETENTION_INTERVAL_S
                    await run_in_threadpool(self._apply_retention)
                try:
                    await asyncio.wait_for(stored.get(), RETENTION_INTERVAL_S)
                except TimeoutError:
                    continue
                while not stored.empty():
                    stored.get_nowait()
                self.stored()
        finally:
            self.hub.unsubscribe(stored)

    def _apply_retention(self) -> None:
        try:
            cutoff = now_ms() - int(self.outputs.retention_days * 86400 * 1000)
            deliveries = self.outbox.prune(cutoff)
            changes = self.changes.prune(utc(cutoff / 1000))
            if deliveries or changes:
                log.info("feed retention removed %d changes and %d deliveries", changes, deliveries)
        except Exception:
            log.exception("feed retention failed; trying again later")


class Follower:
    """One client's position in the change log: replays from its cursor, then follows live."""

    def __init__(self, feed: Feed) -> None:
        self._feed = feed
        self._ring = feed.bell.register()
        self.cursor = 0

    async def open(self, after: int | None) -> None:
        """Start after `after`, or after the newest change (only new ones) when None."""
        newest = await run_in_threadpool(self._feed.changes.last_seq)
        if after is not None and after > newest:
            raise ValueError(f"seq {after} is beyond the newest change ({newest}): resume from one received")
        self.cursor = newest if after is None else after

    async def batch(self, wait_s: float) -> list[Change]:
        """The next changes after the cursor; waits up to `wait_s` for one, [] when none came."""
        # Clear before reading: a ring during the read means another read, not a missed change.
        self._ring.clear()
        changes = await run_in_threadpool(self._feed.changes.after, self.cursor, READ_BATCH)
        if not changes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ring.wait(), wait_s)
            self._ring.clear()
            changes = await run_in_threadpool(self._feed.changes.after, self.cursor, READ_BATCH)
        if changes:
            self.cursor = changes[-1].seq
        return changes

    def close(self) -> None:
        self._feed.bell.unregister(self._ring)


def sse_message(change: Change) -> str:
    return f"id: {change.seq}\nevent: {change.phase}\ndata: {change.payload}\n\n"


def ws_message(change: Change) -> str:
    return f'{{"seq":{change.seq},"phase":"{change.phase}","event":{change.payload}}}'


def _last_event_id(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise HTTPException(400, f"Last-Event-ID must be a change seq (an integer >= 0), not {value!r}")
    return int(value)


def _websocket_principal(websocket: WebSocket) -> Principal:
    """Who opened the WebSocket: the same credentials as HTTP, or `?access_token=` (browsers' WebSocket
    cannot send headers). Raises ValueError when it may not read events."""
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    credential = (
        (token if scheme.lower() == "bearer" else None)
        or websocket.headers.get("x-api-key")
        or websocket.query_params.get("access_token")
    )
    if credential and "\x00" in credential:
        raise ValueError("invalid credentials")
    try:
        who = authenticator(websocket).identify(credential)  # type: ignore[arg-type]
    except HTTPException as e:
        raise ValueError(str(e.detail)) from None
    if who.role not in EVENT_READERS:
        raise ValueError(f"the {who.role} role may not read events")
    return who


def feed_router(feed: Feed) -> APIRouter:
    router = APIRouter(tags=["events"])

    @router.get(
        "/api/v1/events/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 400: {"description": "bad resume position"}},
    )
    async def stream_events(
        request: Request,
        who: StreamReader,
        after: Annotated[int | None, Query(ge=0, le=MAX_INT64, description="resume after this change seq")] = None,
        last_event_id: Annotated[
            str | None, Header(description="set by EventSource on reconnect; wins over `after`")
        ] = None,
    ) -> StreamingResponse:
        """Server-sent events: one message per stored event revision. `id:` is its change seq,
        `event:` its phase, `data:` the Event JSON. Without a resume position only new changes come."""
        start = _last_event_id(last_event_id) if last_event_id else after
        follower = Follower(feed)
        try:
            await follower.open(start)
        except ValueError as e:
            follower.close()
            raise HTTPException(400, str(e)) from None

        async def messages() -> AsyncIterator[str]:
            try:
                yield ": connected\n\n"
                while not await request.is_disconnected():
                    changes = await follower.batch(HEARTBEAT_S)
                    if not changes:
                        yield ": heartbeat\n\n"
                    for change in changes:
                        if who.sees(change.site):
                            yield sse_message(change)
            finally:
                follower.close()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(messages(), media_type="text/event-stream", headers=headers)

    @router.websocket("/api/v1/events/ws")
    async def events_websocket(
        websocket: WebSocket, after: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None
    ) -> None:
        """Text messages, each a FeedMessage JSON {seq, phase, event}; resume with `?after=SEQ`."""
        await websocket.accept()
        follower = Follower(feed)
        try:
            who = _websocket_principal(websocket)
            await follower.open(after)
        except ValueError as e:
            follower.close()
            await websocket.close(code=1008, reason=str(e)[:120])
            return
        receiving = asyncio.ensure_future(websocket.receive())  # only to notice the client leaving
        reading: asyncio.Future[list[Change]] | None = None
        try:
            while True:
                reading = reading or asyncio.ensure_future(follower.batch(HEARTBEAT_S))
                done, _ = await asyncio.wait({reading, receiving}, return_when=asyncio.FIRST_COMPLETED)
                if receiving in done:
                    if receiving.result()["type"] == "websocket.disconnect":
                        return
                    receiving = asyncio.ensure_future(websocket.receive())  # client messages are ignored
                if reading in done:
                    for change in reading.result():
                        if who.sees(change.site):
                            await websocket.send_text(ws_message(change))
                    reading = None
        except WebSocketDisconnect:
            return
        finally:
            for task in (receiving, reading):
                if task is not None:
                    task.cancel()
            follower.close()

    return router
