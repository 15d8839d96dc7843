"""The built-in RTSP client: real cameras' codecs and authentication against the GStreamer server, and the
conversation's edge cases (keep-alives, a session the camera ends, garbage, unsupported codecs) against a
scripted server that says exactly what a camera might.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import av
import pytest

from streams.reader import CameraReader, DecodePolicy, Sampler, _Session
from streams.rtp import AccessUnit
from streams.rtsp_client import DigestAuth, RtspClient, RtspError, UnsupportedStream, parse_sdp
from tests.streams.test_reader import FAST, next_frame, status_when


@pytest.mark.parametrize("suffix", [".h264", ".h265"])
def test_builtin_client_reads_h264_and_h265_keyframes(rtsp_server, clip_factory, camera_reader, wait_until,
                                                      suffix) -> None:
    server = rtsp_server({"/cam": clip_factory(suffix=suffix)})
    reader = camera_reader("cam", server.url("/cam"), **{**FAST, "analysis_fps": 1.0})
    before = status_when(reader, wait_until, lambda s: s.decode_mode == "keyframes", "keyframes mode")
    first = next_frame(reader, wait_until, after_seq=before.frames_analysed)
    second = next_frame(reader, wait_until, after_seq=first.seq)
    status = reader.status()
    assert status.receiver == "builtin" and "built-in RTSP client" in status.receiver_reason
    assert status.keyframe_interval_s == pytest.approx(1.0, abs=0.01)
    assert status.input_fps == pytest.approx(25, rel=0.2)
    assert second.orig_size == (640, 360) and second.image.shape == (180, 320, 3)
    # A decoded picture of the clip, not grey: its colour bars span the full range.
    assert second.image.max() > 180 and second.image.min() < 60
    # Keyframes only: one picture decoded per analysed frame, while every picture arrived.
    decoded = status.frames_decoded - before.frames_decoded
    assert 2 <= decoded <= status.frames_analysed - before.frames_analysed + 1
    assert status.frames_received - before.frames_received > 10 * decoded


def test_ffmpeg_reads_the_camera_when_the_config_says_so(rtsp_server, h264_clip, camera_reader, wait_until) -> None:
    server = rtsp_server({"/cam": h264_clip})
    reader = camera_reader("cam", server.url("/cam"), **FAST, receiver="ffmpeg")
    next_frame(reader, wait_until)
    status = reader.status()
    assert status.receiver == "ffmpeg" and "receiver: ffmpeg" in status.receiver_reason


def test_digest_authentication_with_the_urls_credentials(rtsp_server, h264_clip, camera_reader,
                                                         wait_until) -> None:
    server = rtsp_server({"/cam": h264_clip}, user="viewer:s3cr%t")
    url = server.url("/cam")
    good = camera_reader("good", url.replace("rtsp://", "rtsp://viewer:s3cr%25t@"), **FAST)
    wrong = camera_reader("wrong", url.replace("rtsp://", "rtsp://viewer:guess@"), **FAST)
    anonymous = camera_reader("anonymous", url, **FAST)
    frame = next_frame(good, wait_until)
    assert frame.orig_size == (640, 360)
    assert status_when(wrong, wait_until, lambda s: s.last_error is not None, "refused").last_error == (
        "unauthorized: check the user name and password in the camera's URL")
    assert status_when(anonymous, wait_until, lambda s: s.last_error is not None, "refused").last_error == (
        "unauthorized: the camera needs a user name and password")
    assert "s3cr" not in good.status().url  # the password stays out of the status


def test_digest_response_matches_rfc_2617(monkeypatch: pytest.MonkeyPatch) -> None:
    # RFC 2617, section 3.5: its challenge, method, URI and client nonce give its response.
    monkeypatch.setattr("streams.rtsp_client.os.urandom", lambda _size: bytes.fromhex("0a4f113b"))
    auth = DigestAuth("Mufasa", "Circle Of Life", [
        'Basic realm="testrealm@host.com"',
        'Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'])
    header = auth.header("GET", "/dir/index.html")
    assert header.startswith('Digest username="Mufasa", realm="testrealm@host.com"')
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert 'nc=00000001, cnonce="0a4f113b"' in header and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header
    assert "nc=00000002" in auth.header("GET", "/dir/index.html")  # the count goes up per request


def test_basic_authentication_when_the_camera_offers_only_basic() -> None:
    auth = DigestAuth("admin", "12345", ['Basic realm="IPCamera"'])
    assert auth.header("DESCRIBE", "rtsp://cam/") == "Basic YWRtaW46MTIzNDU="
    with pytest.raises(RtspError, match="not supported"):
        DigestAuth("admin", "12345", ['Negotiate abc'])


def test_sdp_controls_resolve_against_the_base_and_other_codecs_are_unsupported() -> None:
    sdp = ("v=0\r\ns=cam\r\na=control:*\r\nm=audio 0 RTP/AVP 0\r\na=control:trackID=2\r\n"
           "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
           "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAHw,aM48gA==\r\na=control:trackID=1\r\n")
    track, session_url = parse_sdp(sdp, "rtsp://cam/live/")
    assert track.codec == "h264" and track.payload_type == 96 and track.clock_rate == 90000
    assert track.control_url == "rtsp://cam/live/trackID=1" and session_url == "rtsp://cam/live/"
    assert track.parameter_sets == b"\0\0\0\1\x67\x42\x00\x1f\0\0\0\1\x68\xce\x3c\x80"
    absolute = sdp.replace("a=control:trackID=1", "a=control:rtsp://other/v")
    assert parse_sdp(absolute, "rtsp://cam/live")[0].control_url == "rtsp://other/v"
    with pytest.raises(UnsupportedStream, match=r"offered: JPEG"):
        parse_sdp("v=0\r\nm=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\n", "rtsp://cam/")
    with pytest.raises(RtspError, match="SDP is malformed"):
        parse_sdp("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/ninety\r\n", "rtsp://cam/")


# -- a scripted camera -------------------------------------------------------------------------------

SDP_H264 = "v=0\r\ns=cam\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track1\r\n"
SDP_JPEG = "v=0\r\ns=cam\r\nm=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\na=control:track1\r\n"
SLICE = bytes([0x41, 0x9A, 0x01, 0x02])


def interleaved(seq: int, timestamp: int, payload: bytes = SLICE) -> bytes:
    packet = struct.pack("!BBHII", 0x80, 0x80 | 96, seq, timestamp, 1) + payload
    return b"$\x00" + struct.pack("!H", len(packet)) + packet


class ScriptedCamera:
    """Answers RTSP requests on loopback with `answer(method, headers) -> reply`, and streams `stream()` after PLAY."""

    def __init__(self, sdp: str, session: str = "abc;timeout=2",
                 after_play: Callable[[socket.socket, ScriptedCamera], None] | None = None) -> None:
        self.sdp, self.session, self.after_play = sdp, session, after_play
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.keepalive_status = "200 OK"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"rtsp://127.0.0.1:{self._listener.getsockname()[1]}/live"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._talk, args=(connection,), daemon=True).start()

    def _talk(self, connection: socket.socket) -> None:
        try:
            self._answer(connection)
        except OSError:
            pass  # the client hung up, as clients do
        finally:
            connection.close()

    def _answer(self, connection: socket.socket) -> None:
        with connection.makefile("rb") as incoming:
            while not self._stop.is_set():
                line = incoming.readline().decode()
                if not line:
                    return
                method = line.split()[0]
                headers = {}
                while (header := incoming.readline().decode().strip()):
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                self.requests.append((method, headers))
                status, extra, body = "200 OK", "", ""
                if method == "OPTIONS":
                    extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN\r\n"
                elif method == "DESCRIBE":
                    extra, body = "Content-Type: application/sdp\r\n", self.sdp
                elif method == "SETUP":
                    extra = f"Session: {self.session}\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
                elif method == "GET_PARAMETER":
                    status = self.keepalive_status
                reply = (f"RTSP/1.0 {status}\r\nCSeq: {headers.get('cseq')}\r\n{extra}"
                         f"Content-Length: {len(body)}\r\n\r\n{body}")
                connection.sendall(reply.encode())
                if method == "PLAY" and self.after_play is not None:
                    threading.Thread(target=self.after_play, args=(connection, self), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedCamera]]:
    cameras: list[ScriptedCamera] = []

    def make(*args: object, **kwargs: object) -> ScriptedCamera:
        cameras.append(ScriptedCamera(*args, **kwargs))
        return cameras[-1]

    yield make
    for camera in cameras:
        camera.close()


def stream_pictures(seconds: float) -> Callable[[socket.socket, ScriptedCamera], None]:
    def send(connection: socket.socket, camera: ScriptedCamera) -> None:
        for index in range(int(seconds * 25)):
            if camera._stop.wait(0.04):
                return
            try:
                connection.sendall(interleaved(index, 3600 * index))
            except OSError:
                return
    return send


def test_keepalives_at_half_the_session_timeout_and_their_replies_between_packets(scripted) -> None:
    camera = scripted(SDP_H264, after_play=stream_pictures(4))
    client = RtspClient(camera.url, open_timeout_s=2, read_timeout_s=2)
    try:
        client.open()
        stamps = [unit.timestamp for unit in itertools.islice(client.access_units(), 75)]
    finally:
        client.close()
    # Three seconds of pictures, in order, through the replies to at least one keep-alive.
    assert stamps == [3600 * i for i in range(75)]
    keepalives = [headers for method, headers in camera.requests if method == "GET_PARAMETER"]
    assert keepalives and all(headers["session"] == "abc" for headers in keepalives)
    assert [method for method, _ in camera.requests][:4] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"]
    assert camera.requests[2][1]["transport"].startswith("RTP/AVP/TCP;unicast;interleaved=0-1")
    assert camera.requests[3][1]["session"] == "abc"


def session_error(camera: ScriptedCamera, read_timeout_s: float = 2.0) -> Exception:
    """Open a session with the camera and read it until it fails -> the error it failed with."""
    client = RtspClient(camera.url, open_timeout_s=2, read_timeout_s=read_timeout_s)
    try:
        client.open()
        for _ in client.access_units():
            pass
    except (RtspError, TimeoutError) as error:
        return error
    finally:
        client.close()
    raise AssertionError("the session ended without an error")


def test_a_refused_keepalive_ends_the_session_with_the_cameras_answer(scripted) -> None:
    camera = scripted(SDP_H264, after_play=stream_pictures(4))
    camera.keepalive_status = "454 Session Not Found"
    error = session_error(camera)
    assert isinstance(error, RtspError) and str(error) == "the camera ended the session: 454 Session Not Found"


def test_garbage_after_play_is_a_clear_error(scripted) -> None:
    def garbage(connection: socket.socket, _camera: ScriptedCamera) -> None:
        connection.sendall(interleaved(0, 0) + b"\x17\x03\x01 not rtsp at all\r\n\r\n")

    error = session_error(scripted(SDP_H264, after_play=garbage))
    assert isinstance(error, RtspError) and "something that is not RTSP" in str(error)


def test_a_silent_camera_times_out(scripted) -> None:
    error = session_error(scripted(SDP_H264), read_timeout_s=0.5)  # answers PLAY, then sends nothing
    assert isinstance(error, TimeoutError) and str(error) == "no video from the camera"


def test_a_camera_without_h264_or_h265_is_read_by_ffmpeg(scripted, camera_reader, wait_until) -> None:
    camera = scripted(SDP_JPEG)
    reader = camera_reader("jpeg", camera.url, **FAST)
    status = status_when(reader, wait_until, lambda s: s.receiver == "ffmpeg", "the switch to FFmpeg")
    assert "no H.264 or H.265 video in the camera's SDP (offered: JPEG): FFmpeg reads it" == status.receiver_reason
    # FFmpeg then talks to the camera itself: a second DESCRIBE, from its own client.
    wait_until(lambda: [m for m, _ in camera.requests].count("DESCRIBE") >= 2, what="FFmpeg's DESCRIBE")
    assert any("Lavf" in headers.get("user-agent", "") for method, headers in camera.requests if method == "DESCRIBE")


def test_reader_reports_a_refused_setup_and_keeps_trying(scripted, camera_reader, wait_until) -> None:
    camera = scripted(SDP_H264, session="")  # SETUP answered without a session
    reader = camera_reader("nosession", camera.url, **FAST)
    status = status_when(reader, wait_until, lambda s: s.reconnects >= 1, "a retry")
    assert status.last_error == "the camera's SETUP reply has no session"
    assert reader.is_alive()


def test_a_keyframe_that_lost_a_packet_is_skipped_and_its_time_still_counts(h264_clip) -> None:
    # The reader's handling of what the client delivers, fed straight with the clip's pictures (6 s at
    # 25 fps, a keyframe a second), the fourth keyframe marked as having lost a packet.
    reader = CameraReader("cam", "rtsp://127.0.0.1:1/cam", analysis_fps=1.0, frame_size=320)
    session = _Session(DecodePolicy(1.0), Sampler(1.0))
    reader._start_pass(session, "h264", None, 25.0)
    with av.open(str(h264_clip)) as container:
        pictures = [(bytes(p), p.is_keyframe) for p in container.demux(container.streams.video[0]) if p.size]
    assert [index for index, (_, key) in enumerate(pictures[:150]) if key] == [0, 25, 50, 75, 100, 125]
    for index, (data, key) in enumerate(pictures[:150]):
        unit = AccessUnit(timestamp=3600 * index, keyframe=key, complete=index != 75, parts=[data])
        reader._on_packet(unit.timestamp / 90000, key, unit, session, complete=unit.complete)
    status = reader.status()
    # Keyframes 0, 25, 50, 100 and 125 analysed; 75 not decoded. The GOP still reads 1 s, so the
    # reader stays on keyframes instead of falling back to decoding every frame.
    assert status.frames_analysed == 5 and status.frames_received == 150
    assert status.decode_mode == "keyframes" and status.keyframe_interval_s == pytest.approx(1.0)
