"""RTP packets -> H.264 / H.265 access units (RFC 3550, RFC 6184, RFC 7798), for the built-in RTSP client.

A payload is kept as memoryviews of the received buffer and joined only when its picture is decoded, so
a camera whose pictures are mostly skipped (keyframes-only decoding) costs a small parse per packet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

START_CODE = b"\x00\x00\x00\x01"
RTP_VERSION = 2
# Pictures a decoder can start from: H.264 IDR slices; H.265 IRAP pictures (BLA, IDR, CRA).
H264_IDR = 5
H265_IRAP = range(16, 22)
NOTHING: Sequence[AccessUnit] = ()


@dataclass(eq=False, slots=True)
class AccessUnit:
    """One picture as an Annex-B byte stream, in pieces; `complete` is False when a packet of it was lost."""

    timestamp: int  # the RTP timestamp, unwrapped (it keeps counting past 2**32)
    keyframe: bool = False
    complete: bool = True
    parts: list[bytes | memoryview] = field(default_factory=list)

    def data(self) -> bytes:
        return b"".join(self.parts)


class RtpError(ValueError):
    """A packet that is not RTP (the connection is out of step, or the server sends something else)."""


class Depacketizer:
    """Groups one RTP stream's packets into access units: at the marker bit, or when the timestamp moves on.

    A gap in sequence numbers marks the picture being assembled incomplete: the caller skips it and
    waits for the next keyframe rather than decode a damaged picture and the ones that refer to it.
    """

    def __init__(self, codec: str) -> None:
        if codec not in ("h264", "hevc"):
            raise ValueError(f"no RTP depacketizer for {codec!r}; H.264 and H.265 are supported")
        self._add = self._add_h264 if codec == "h264" else self._add_h265
        self._unit: AccessUnit | None = None
        self._last_raw: int | None = None  # the last 32-bit timestamp seen, to unwrap the next
        self._timestamp = 0
        self._seq: int | None = None
        self._in_fragment = False

    def push(self, packet: memoryview) -> Sequence[AccessUnit]:
        """Take one RTP packet (header included) -> the access units it completes (usually none)."""
        if len(packet) < 12 or packet[0] >> 6 != RTP_VERSION:
            raise RtpError("not an RTP version 2 packet")
        first, second = packet[0], packet[1]
        seq = (packet[2] << 8) | packet[3]
        raw = int.from_bytes(packet[4:8], "big")
        start = 12 + 4 * (first & 0x0F)  # CSRC list
        if first & 0x10:  # header extension: 4 bytes, then its length in 32-bit words
            if len(packet) < start + 4:
                raise RtpError("RTP header extension cut short")
            start += 4 + 4 * ((packet[start + 2] << 8) | packet[start + 3])
        end = len(packet) - (packet[-1] if first & 0x20 else 0)  # padding
        if end < start:
            raise RtpError("RTP packet shorter than its header")

        done: list[AccessUnit] = []
        if self._unit is not None and raw != self._last_raw:  # the last picture's marker never came
            done.append(self._finish())
        lost = self._seq is not None and seq != (self._seq + 1) & 0xFFFF
        self._seq = seq
        if self._unit is None:
            if self._last_raw is not None:
                self._timestamp += (raw - self._last_raw + 2**31) % 2**32 - 2**31  # signed 32-bit step
            self._last_raw = raw
            self._unit = AccessUnit(self._timestamp)
            self._in_fragment = False
        if lost:
            self._unit.complete = False
        if end > start:
            self._add(self._unit, packet[start:end])
        if second & 0x80:  # marker: the last packet of the picture
            done.append(self._finish())
        return done or NOTHING

    def _finish(self) -> AccessUnit:
        unit, self._unit = self._unit, None
        assert unit is not None
        if self._in_fragment:  # a fragmented NAL unit never got its end
            unit.complete = False
        return unit

    def _add_h264(self, unit: AccessUnit, payload: memoryview) -> None:
        nal_type = payload[0] & 0x1F
        if nal_type == 28:  # FU-A: one NAL unit in fragments
            if len(payload) < 2:
                raise RtpError("FU-A packet without its header")
            header = payload[1]
            inner = header & 0x1F
            self._fragment(unit, header, bytes(((payload[0] & 0xE0) | inner,)), payload[2:], inner == H264_IDR)
        elif nal_type == 24:  # STAP-A: several NAL units, each after its 16-bit size
            for nal in _aggregated(payload, 1):
                unit.keyframe |= nal[0] & 0x1F == H264_IDR
                unit.parts += (START_CODE, nal)
        elif 1 <= nal_type <= 23:
            unit.keyframe |= nal_type == H264_IDR
            unit.parts += (START_CODE, payload)
        else:  # STAP-B, MTAP, FU-B belong to the interleaved mode, which is never set up
            unit.complete = False

    def _add_h265(self, unit: AccessUnit, payload: memoryview) -> None:
        if len(payload) < 3:
            raise RtpError("H.265 payload shorter than its header")
        nal_type = (payload[0] >> 1) & 0x3F
        if nal_type == 49:  # FU
            header = payload[2]
            inner = header & 0x3F
            self._fragment(unit, header, bytes(((payload[0] & 0x81) | (inner << 1), payload[1])), payload[3:],
                           inner in H265_IRAP)
        elif nal_type == 48:  # AP: several NAL units, each after its 16-bit size
            for nal in _aggregated(payload, 2):
                unit.keyframe |= (nal[0] >> 1) & 0x3F in H265_IRAP
                unit.parts += (START_CODE, nal)
        elif nal_type < 48:
            unit.keyframe |= nal_type in H265_IRAP
            unit.parts += (START_CODE, payload)
        else:  # PACI and reserved types
            unit.complete = False

    def _fragment(self, unit: AccessUnit, header: int, nal_header: bytes, body: memoryview, keyframe: bool) -> None:
        """One packet of a fragmented NAL unit (H.264 FU-A, H.265 FU): its start (the NAL unit's header comes
        back first), a middle part or its end."""
        if header & 0x80:
            unit.keyframe |= keyframe
            unit.parts += (START_CODE, nal_header, body)
        elif self._in_fragment:
            unit.parts.append(body)
        else:
            unit.complete = False  # a fragment whose start was lost
            return
        self._in_fragment = not header & 0x40


def _aggregated(payload: memoryview, header_size: int) -> list[memoryview]:
    """The NAL units of an aggregation packet (STAP-A, AP): each is preceded by its size in 16 bits."""
    units, position = [], header_size
    while position + 2 <= len(payload):
        size = (payload[position] << 8) | payload[position + 1]
        position += 2
        if size == 0 or position + size > len(payload):
            raise RtpError("aggregation packet with a NAL unit size past its end")
        units.append(payload[position : position + size])
        position += size
    return units
