"""The live view's signalling: who may watch which camera, when, and how many at once; WebRTC offer
and answer; sessions that end when the viewing window closes.

The video itself comes from a `LiveSource` (the service passes the streams side's): a track per
viewer of a camera, shared behind it. The browser sends an offer with one receive-only video
transceiver and a data channel; the answer sends H.264 only, and the data channel carries the
camera's state ("live", "offline", ...) and, at the end, why the session ended.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

import aioice.ice
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpsender import RTCRtpSender
from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from api.auth import require
from brightkitchen.config import LiveConfig
from brightkitchen.users import WATCHERS, Principal, can_watch

log = logging.getLogger("api.live")
WATCH_INTERVAL_S = 0.5  # how often a session checks its viewing window and its camera's state
MAX_SDP_CHARS = 64 * 1024
CONNECT_TIMEOUT_S = 15.0  # a viewer whose connection is not up by then is ended (it took a place)


class LiveSource(Protocol):
    """The media side of the live view."""

    def subscribe(self, camera_id: str) -> MediaStreamTrack:
        """A new viewer's video track of the camera; stopping it ends the viewer."""
        ...

    def status(self, camera_id: str) -> dict[str, Any]:
        """At least {"state": "idle" | "connecting" | "live" | "offline", "last_error": str | None}."""
        ...

    def close(self) -> None: ...


def offer_only(addresses: list[str]) -> None:
    """Offer viewers these local addresses only. aioice has no setting for it, so its address lookup is
    replaced (for the whole process; the service runs one live view)."""
    if addresses:
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name (mDNS .local): not loopback


def reachable_candidates(sdp: str, addresses: list[str]) -> str:
    """The offer without remote candidates that local loopback-only addresses cannot reach (so nothing
    is sent off the machine when the live view is kept on it)."""
    if not addresses or not all(_is_loopback(a) for a in addresses):
        return sdp
    lines = []
    for line in sdp.splitlines():
        parts = line.split()
        if line.startswith("a=candidate:") and len(parts) > 4 and not _is_loopback(parts[4]):
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _refuse(status: int, code: str, message: str, **extra: Any) -> HTTPException:
    # Codes let the page say it in the viewer's language; the message says it in English.
    return HTTPException(status, {"code": code, "message": message, **extra})


class Offer(BaseModel):
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    type: Literal["offer"]


class Answer(BaseModel):
    sdp: str
    type: Literal["answer"]
    session: str = Field(description="end it early with DELETE /api/v1/live/sessions/{session}")
    camera: str
    privacy: bool


class LiveCameraOut(BaseModel):
    id: str
    name: str
    site: str
    state: str = Field(description="the live pull: idle (nobody watching), connecting, live, offline")
    connected: bool = Field(description="the analysis stream's connection")
    viewers: int
    max_viewers: int
    privacy: bool
    watchable: bool = Field(description="whether the caller may open it now")
    reason: str | None = Field(None, description="why not: outside_viewing_hours, no_viewing_hours, disabled")
    last_error: str | None = None


@dataclass
class LiveSession:
    id: str
    camera: str
    site: str
    principal: Principal
    pc: RTCPeerConnection
    track: MediaStreamTrack
    started_at: float = field(default_factory=time.time)
    channel: Any = None
    sent_state: str | None = None
    task: asyncio.Task[None] | None = None
    ended: bool = False


class LiveSessions:
    """Open viewer sessions: limits per camera, viewing windows, the end of each."""

    def __init__(self, source: LiveSource | None, settings: LiveConfig,
                 cameras: Callable[[], list[dict[str, Any]]], viewing_hours: Callable[[str, float], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.settings = settings
        self.cameras = cameras
        self.viewing_hours = viewing_hours
        self.clock = clock
        self.sessions: dict[str, LiveSession] = {}
        offer_only(settings.ice_addresses)

    def _camera(self, who: Principal, camera_id: str) -> dict[str, Any]:
        for camera in self.cameras():
            if camera["id"] == camera_id and can_watch(who, camera["site"]):
                return camera
        raise _refuse(404, "no_camera", f"no camera {camera_id!r}")

    def viewers(self, camera_id: str) -> int:
        return sum(1 for s in self.sessions.values() if s.camera == camera_id and not s.ended)

    def why_not(self, who: Principal, site: str) -> str | None:
        """None if the principal may watch the site now, else the reason's code."""
        if self.source is None or not self.settings.enabled:
            return "disabled"
        if who.role == "parent" and not self.viewing_hours(site, self.clock()):
            return "outside_viewing_hours"
        return None

    def listing(self, who: Principal) -> list[LiveCameraOut]:
        out = []
        for camera in self.cameras():
            if not can_watch(who, camera["site"]):
                continue
            status = self.source.status(camera["id"]) if self.source else {"state": "idle"}
            reason = self.why_not(who, camera["site"])
            out.append(LiveCameraOut(
                id=camera["id"], name=camera.get("name") or camera["id"], site=camera["site"],
                state=status.get("state", "idle"), connected=bool(camera.get("connected")),
                viewers=self.viewers(camera["id"]), max_viewers=self.settings.max_viewers_per_camera,
                privacy=status.get("mode") == "privacy", watchable=reason is None, reason=reason,
                last_error=status.get("last_error"),
            ))
        return out

    async def open(self, who: Principal, camera_id: str, offer: Offer) -> Answer:
        camera = self._camera(who, camera_id)
        reason = self.why_not(who, camera["site"])
        if reason == "disabled":
            raise _refuse(503, "disabled", "the live view is turned off on this server")
        if reason == "outside_viewing_hours":
            raise _refuse(403, reason, "outside the school's viewing hours for parents")
        limit = self.settings.max_viewers_per_camera
        if self.viewers(camera_id) >= limit:
            raise _refuse(503, "viewer_limit", f"this camera already has its maximum of {limit} viewers; "
                          "try again later", max_viewers=limit)
        if "H264" not in offer.sdp:
            raise _refuse(400, "no_h264", "the browser offered no H.264 video; the live view sends H.264")
        assert self.source is not None
        ice = [RTCIceServer(urls=url) for url in self.settings.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice or None))
        try:
            track = self.source.subscribe(camera_id)
        except KeyError:
            raise _refuse(404, "no_camera", f"camera {camera_id!r} has no live view (disabled?)") from None
        session = LiveSession(secrets.token_urlsafe(12), camera_id, camera["site"], who, pc, track)
        self.sessions[session.id] = session
        try:
            sdp = reachable_candidates(offer.sdp, self.settings.ice_addresses)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=offer.type))
            sender = pc.addTrack(track)
            transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
            h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
            transceiver.setCodecPreferences(h264)
            pc.on("datachannel", lambda channel: self._attach(session, channel))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as error:
            await self.end(session.id, "error")
            log.warning("live offer for %s refused: %s", camera_id, error)
            raise _refuse(400, "bad_offer", f"the offer cannot be answered: {error}") from None
        session.task = asyncio.create_task(self._watch(session))
        log.info("live session %s: %s (%s) watches %s", session.id, who.name, who.role, camera_id)
        return Answer(sdp=pc.localDescription.sdp, type="answer", session=session.id, camera=camera_id,
                      privacy=self.source.status(camera_id).get("mode") == "privacy")

    def _attach(self, session: LiveSession, channel: Any) -> None:
        session.channel = channel
        session.sent_state = None  # tell the new channel the current state at once

    def _send(self, session: LiveSession, message: dict[str, Any]) -> None:
        channel = session.channel
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(message))

    async def _watch(self, session: LiveSession) -> None:
        """Until the session ends: tell the page the camera's state; end it when the window closes."""
        try:
            while not session.ended:
                if session.pc.connectionState in ("failed", "closed"):
                    await self.end(session.id, "disconnected")
                    return
                if (session.pc.connectionState != "connected"
                        and time.time() - session.started_at > CONNECT_TIMEOUT_S):
                    await self.end(session.id, "never connected")
                    return
                if self.why_not(session.principal, session.site) is not None:
                    self._send(session, {"type": "end", "reason": "outside_viewing_hours"})
                    await asyncio.sleep(0.2)  # let the message leave before the connection closes
                    await self.end(session.id, "outside_viewing_hours")
                    return
                status = self.source.status(session.camera) if self.source else {}
                state = status.get("state", "idle")
                if state != session.sent_state and session.channel is not None:
                    self._send(session, {"type": "state", "state": state, "error": status.get("last_error")})
                    session.sent_state = state
                await asyncio.sleep(WATCH_INTERVAL_S)
        except asyncio.CancelledError:
            pass

    async def end(self, session_id: str, reason: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        session.ended = True
        if session.task is not None and session.task is not asyncio.current_task():
            session.task.cancel()
        await session.pc.close()
        session.track.stop()
        log.info("live session %s ended: %s", session.id, reason)
        return True

    async def close(self) -> None:
        for session_id in list(self.sessions):
            await self.end(session_id, "server stopping")


Watcher = Annotated[Principal, Depends(require(WATCHERS))]


def live_router(sessions: LiveSessions) -> APIRouter:
    router = APIRouter(prefix="/api/v1/live", tags=["live"])
    problems = {400: {}, 403: {}, 404: {}, 503: {}}

    @router.get("/cameras", response_model=list[LiveCameraOut])
    def cameras(who: Watcher) -> list[LiveCameraOut]:
        """The cameras the caller may watch (a parent: its own school's), with their live state and
        whether they can be opened now."""
        return sessions.listing(who)

    @router.post("/{camera_id}/offer", response_model=Answer, responses=problems)
    async def offer(camera_id: str, body: Offer, who: Watcher) -> Answer:
        """Open a viewer: a WebRTC offer with one receive-only video transceiver (H.264) and a data
        channel, answered with the server's description. A parent may watch only its own school and
        only within the school's viewing hours; each camera takes `live.max_viewers_per_camera`."""
        return await sessions.open(who, camera_id, body)

    @router.delete("/sessions/{session_id}", status_code=204, responses={404: {}})
    async def close(session_id: str, who: Watcher) -> None:
        """End a viewer session (the page does when it is closed)."""
        session = sessions.sessions.get(session_id)
        if session is None or session.principal.name != who.name:
            raise _refuse(404, "no_session", f"no live session {session_id!r}")
        await sessions.end(session_id, "closed by the viewer")

    return router
