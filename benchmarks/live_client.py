"""A WebRTC viewer of the live view without a browser (aiortc): offers like the page does, counts the
H.264 frames that arrive. Used by the live benchmark (many viewers) and by tests of the signalling."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import RTCRtpReceiver


@dataclass
class Viewer:
    """One viewer's connection and what it has received."""

    pc: RTCPeerConnection
    session: str | None = None
    frames: int = 0
    first_frame_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    messages: list[dict[str, Any]] = field(default_factory=list)
    answer_sdp: str = ""
    last_pts: int | None = None  # RTP time (90 kHz) of the newest frame
    _task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pc.close()


class _CountingDecoder:
    """Stands in for aiortc's decoder: one frame (with its RTP time) per complete encoded frame."""

    def decode(self, encoded_frame: Any) -> list[Any]:
        return [SimpleNamespace(pts=encoded_frame.timestamp)]


def count_without_decoding() -> None:
    """Make this process's viewers count the complete frames they receive without decoding them, so one
    machine can play many viewers (aiortc still receives, decrypts, reorders and reassembles every
    frame). Without it, each viewer decodes what it gets, as a browser does."""
    import aiortc.rtcrtpreceiver

    aiortc.rtcrtpreceiver.get_decoder = lambda codec: _CountingDecoder()


class Refused(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def offer_pc() -> tuple[RTCPeerConnection, Any]:
    """A peer connection with what the page offers: a receive-only video transceiver, H.264 first, and a
    data channel for the server's messages."""
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video", direction="recvonly")
    codecs = RTCRtpReceiver.getCapabilities("video").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType == "video/H264"])
    channel = pc.createDataChannel("status")
    return pc, channel


async def watch(base_url: str, camera: str, token: str | None = None, *,
                client: httpx.AsyncClient | None = None) -> Viewer:
    """Open a viewer of `camera`; decoded frames are counted in the background until `close()`.
    Raises Refused with the API's status and detail when the server says no."""
    pc, channel = offer_pc()
    viewer = Viewer(pc)
    channel.on("message", lambda m: viewer.messages.append(json.loads(m)))

    @pc.on("track")
    def on_track(track: Any) -> None:
        viewer._task = asyncio.ensure_future(_count(viewer, track))

    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    own = client is None
    client = client or httpx.AsyncClient(base_url=base_url, timeout=30)
    try:
        r = await client.post(f"/api/v1/live/{camera}/offer", json={"sdp": pc.localDescription.sdp,
                                                                    "type": "offer"}, headers=headers)
    finally:
        if own:
            await client.aclose()
    if r.status_code != 200:
        await pc.close()
        raise Refused(r.status_code, r.json().get("detail"))
    answer = r.json()
    viewer.session = answer["session"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    viewer.answer_sdp = answer["sdp"]
    return viewer


async def _count(viewer: Viewer, track: Any) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        viewer.frames += 1
        viewer.last_pts = frame.pts
        if viewer.first_frame_s is None:
            viewer.first_frame_s = time.monotonic() - viewer.started
