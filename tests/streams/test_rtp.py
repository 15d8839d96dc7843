"""RTP depacketizing (H.264 RFC 6184, H.265 RFC 7798): access unit bounds, fragments, losses, malformed packets.

The end-to-end path (GStreamer's payloaders, a real RTSP session, decoding) is in test_rtsp_client.py; these
build packets by hand to reach the cases a healthy server never sends.
"""

from __future__ import annotations

import struct

import pytest

from streams.rtp import START_CODE, Depacketizer, RtpError


def rtp(seq: int, timestamp: int, payload: bytes, *, marker: bool = False, csrcs: int = 0,
        extension: bytes | None = None, padding: int = 0) -> memoryview:
    first = 0x80 | csrcs | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | 96, seq & 0xFFFF, timestamp & 0xFFFFFFFF, 1234)
    header += b"\0\0\0\1" * csrcs
    if extension is not None:
        header += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    tail = b"\0" * (padding - 1) + bytes([padding]) if padding else b""
    return memoryview(header + payload + tail)


IDR = bytes([0x65]) + bytes(range(1, 40))  # nal_unit_type 5
P_SLICE = bytes([0x41, 0x9A, 0x01, 0x02])  # nal_unit_type 1
SPS = bytes([0x67, 0x42, 0x00, 0x1F])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])


def fu_a(nal: bytes, pieces: int) -> list[bytes]:
    """The NAL unit cut into FU-A fragments, as a payloader does for a picture larger than the MTU."""
    body, indicator = nal[1:], (nal[0] & 0xE0) | 28
    size = -(-len(body) // pieces)
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return [bytes([indicator, (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0) | (nal[0] & 0x1F)])
            + chunk for i, chunk in enumerate(chunks)]


def stap_a(*nals: bytes) -> bytes:
    return bytes([24]) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def test_a_fragmented_idr_after_its_parameter_sets_is_one_keyframe() -> None:
    depacketizer = Depacketizer("h264")
    packets = [rtp(10, 9000, stap_a(SPS, PPS))]
    packets += [rtp(11 + i, 9000, piece, marker=i == 2) for i, piece in enumerate(fu_a(IDR, 3))]
    out = [unit for packet in packets for unit in depacketizer.push(packet)]
    assert len(out) == 1
    unit = out[0]
    assert unit.keyframe and unit.complete and unit.timestamp == 0
    assert unit.data() == START_CODE + SPS + START_CODE + PPS + START_CODE + IDR


def test_pictures_end_at_the_marker_or_when_the_timestamp_moves_on() -> None:
    depacketizer = Depacketizer("h264")
    assert list(depacketizer.push(rtp(1, 1000, P_SLICE, marker=True)))[0].data() == START_CODE + P_SLICE
    assert depacketizer.push(rtp(2, 4600, P_SLICE)) == ()  # no marker: still open
    # The next timestamp closes it; this packet's own marker closes the next picture in the same call.
    done = depacketizer.push(rtp(3, 8200, IDR, marker=True))
    assert [(u.timestamp, u.keyframe) for u in done] == [(3600, False), (7200, True)]


def test_timestamps_keep_counting_across_the_32_bit_wrap() -> None:
    depacketizer = Depacketizer("h264")
    start = 2**32 - 3600
    stamps = [unit.timestamp for i in range(4)
              for unit in depacketizer.push(rtp(i, start + 3600 * i, P_SLICE, marker=True))]
    assert stamps == [0, 3600, 7200, 10800]


def test_a_lost_packet_marks_its_picture_incomplete_and_the_next_is_whole() -> None:
    depacketizer = Depacketizer("h264")
    pieces = fu_a(IDR, 3)
    depacketizer.push(rtp(1, 0, pieces[0]))
    done = depacketizer.push(rtp(3, 0, pieces[2], marker=True))  # seq 2 lost
    assert len(done) == 1 and done[0].keyframe and not done[0].complete
    assert depacketizer.push(rtp(4, 3600, P_SLICE, marker=True))[0].complete


def test_a_fragment_whose_start_was_lost_or_whose_end_never_came_is_incomplete() -> None:
    pieces = fu_a(IDR, 3)
    depacketizer = Depacketizer("h264")
    assert not depacketizer.push(rtp(7, 0, pieces[2], marker=True))[0].complete
    depacketizer = Depacketizer("h264")
    depacketizer.push(rtp(1, 0, pieces[0]))
    assert not depacketizer.push(rtp(2, 0, pieces[1], marker=True))[0].complete  # marker before the end


def test_header_csrcs_extension_and_padding_are_skipped() -> None:
    depacketizer = Depacketizer("h264")
    packet = rtp(1, 0, IDR, marker=True, csrcs=2, extension=b"\1\2\3\4\5\6\7\10", padding=4)
    (unit,) = depacketizer.push(packet)
    assert unit.data() == START_CODE + IDR


@pytest.mark.parametrize("packet", [
    memoryview(b"\x80\x60\x00"),  # shorter than a header
    memoryview(b"\x40" + bytes(15)),  # RTP version 1
    rtp(1, 0, bytes([28])),  # an FU-A without its FU header
    memoryview(b"\x90" + bytes(11)),  # an extension flag with no extension
], ids=["short", "version", "fu-a", "extension"])
def test_what_is_not_rtp_is_refused(packet: memoryview) -> None:
    with pytest.raises(RtpError):
        Depacketizer("h264").push(packet)


def test_an_aggregation_packet_with_a_size_past_its_end_is_refused() -> None:
    with pytest.raises(RtpError, match="size past its end"):
        Depacketizer("h264").push(rtp(1, 0, bytes([24, 0, 50]) + SPS, marker=True))


H265_IDR = bytes([19 << 1, 1]) + bytes(range(1, 30))  # IDR_W_RADL
H265_TRAIL = bytes([1 << 1, 1, 0x80, 5])  # TRAIL_R
H265_VPS = bytes([32 << 1, 1, 0x0C, 0x01])


def test_h265_fragments_and_aggregates_rebuild_the_nal_units() -> None:
    depacketizer = Depacketizer("hevc")
    nal_type = (H265_IDR[0] >> 1) & 0x3F
    body = H265_IDR[2:]
    fus = [bytes([49 << 1, 1, 0x80 | nal_type]) + body[:10], bytes([49 << 1, 1, 0x40 | nal_type]) + body[10:]]
    aggregate = bytes([48 << 1, 1]) + struct.pack("!H", len(H265_VPS)) + H265_VPS
    assert depacketizer.push(rtp(1, 0, aggregate)) == ()
    depacketizer.push(rtp(2, 0, fus[0]))
    (key,) = depacketizer.push(rtp(3, 0, fus[1], marker=True))
    assert key.keyframe and key.complete
    assert key.data() == START_CODE + H265_VPS + START_CODE + H265_IDR
    (trail,) = depacketizer.push(rtp(4, 3600, H265_TRAIL, marker=True))
    assert not trail.keyframe and trail.data() == START_CODE + H265_TRAIL


def test_only_h264_and_h265_are_depacketized() -> None:
    with pytest.raises(ValueError, match="H.264 and H.265"):
        Depacketizer("mjpeg")
