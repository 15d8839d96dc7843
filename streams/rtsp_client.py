"""A small RTSP client for H.264 and H.265 cameras: RTP interleaved in the RTSP connection (TCP), read in chunks.

FFmpeg's RTSP client reads each interleaved RTP packet with three reads, each after a poll: about two
thousand system calls a second for a 4 Mb/s camera, and a thread woken for every packet. This client
sleeps between reads instead (`chunk_interval_s`, 0.1 s by default) and takes everything the socket
holds in one read, so a camera costs a few reads a second; the pictures arrive up to that much later.

What it speaks: OPTIONS, DESCRIBE (SDP), SETUP (RTP/AVP/TCP, interleaved), PLAY, keep-alives
(GET_PARAMETER when the camera offers it, else OPTIONS) at half the session timeout, TEARDOWN; Basic and
Digest (MD5) authentication from the URL's user name and password. It does not send RTCP receiver
reports (cameras keep TCP sessions alive on the keep-alives), and it knows no other codecs:
`UnsupportedStream` tells the caller to use FFmpeg for that camera.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from streams.rtp import START_CODE, AccessUnit, Depacketizer, RtpError

USER_AGENT = "brightkitchen"
DEFAULT_PORT = 554
DEFAULT_SESSION_TIMEOUT_S = 60.0
READ_SIZE = 1 << 20
MAX_HEADER_BYTES = 64 * 1024
CODECS = {"H264": "h264", "H265": "hevc"}


class RtspError(Exception):
    """The camera refused or broke the RTSP conversation; the message is what operators see."""


class UnsupportedStream(RtspError):
    """The camera's video is not H.264 or H.265 over RTP: another client has to read it."""


@dataclass(frozen=True)
class VideoTrack:
    """The camera's video as its SDP describes it."""

    codec: str  # PyAV's decoder name: h264 or hevc
    control_url: str
    payload_type: int
    clock_rate: int
    parameter_sets: bytes  # Annex-B SPS/PPS (and VPS) from the SDP, for the decoder's extradata
    frame_rate: float | None


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def parse_sdp(sdp: str, base_url: str) -> tuple[VideoTrack, str]:
    """The first H.264 or H.265 video track of an SDP, and the URL that controls the whole session."""
    try:
        return _parse_sdp(sdp, base_url)
    except (ValueError, IndexError) as error:
        raise RtspError(f"the camera's SDP is malformed: {error}") from error


def _parse_sdp(sdp: str, base_url: str) -> tuple[VideoTrack, str]:
    session_control, media, current = None, [], None
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            current = {"m": line[2:], "a": []}
            media.append(current)
        elif line.startswith("a="):
            if current is None:
                if line.startswith("a=control:"):
                    session_control = line[len("a=control:"):].strip()
            else:
                current["a"].append(line[2:])
    offered = []
    for section in media:
        kind, _port, _proto, *formats = section["m"].split()
        if kind != "video":
            continue
        attributes = section["a"]
        for payload_type in formats:
            rtpmap = _attribute(attributes, f"rtpmap:{payload_type} ")
            if rtpmap is None:
                continue
            encoding, _, rate = rtpmap.partition("/")
            offered.append(encoding)
            codec = CODECS.get(encoding.upper())
            if codec is None:
                continue
            fmtp = _attribute(attributes, f"fmtp:{payload_type} ") or ""
            track = VideoTrack(codec=codec, control_url=resolve_control(base_url, _attribute(attributes, "control:")),
                               payload_type=int(payload_type), clock_rate=int(rate.split("/")[0] or 90000),
                               parameter_sets=parameter_sets(codec, fmtp),
                               frame_rate=_float_or_none(_attribute(attributes, "framerate:")))
            return track, resolve_control(base_url, session_control)
    raise UnsupportedStream(f"no H.264 or H.265 video in the camera's SDP (offered: {', '.join(offered) or 'none'})")


def _attribute(attributes: list[str], prefix: str) -> str | None:
    """The value of the first media attribute that starts with prefix ("control:", "rtpmap:96 ", ...)."""
    return next((a[len(prefix):].strip() for a in attributes if a.startswith(prefix)), None)


def resolve_control(base_url: str, control: str | None) -> str:
    """A control attribute as a URL: absolute as given, "*" or none is the base, else appended to it (as FFmpeg)."""
    if not control or control == "*":
        return base_url
    if re.match(r"^rtsps?://", control, re.IGNORECASE):
        return control
    return base_url.rstrip("/") + "/" + control.lstrip("/")


def parameter_sets(codec: str, fmtp: str) -> bytes:
    """Annex-B parameter sets from an fmtp line (sprop-parameter-sets; sprop-vps/sps/pps for H.265)."""
    fields = dict(part.strip().partition("=")[::2] for part in fmtp.split(";") if "=" in part)
    names = ("sprop-parameter-sets",) if codec == "h264" else ("sprop-vps", "sprop-sps", "sprop-pps")
    units = []
    for name in names:
        for encoded in filter(None, fields.get(name, "").split(",")):
            try:
                units.append(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
            except ValueError:
                continue  # a broken parameter set in the SDP; the camera repeats them in the stream
    return b"".join(START_CODE + unit for unit in units)


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


class DigestAuth:
    """The Authorization header for each request, from the camera's 401 challenge (RFC 2617, MD5)."""

    def __init__(self, user: str, password: str, challenges: list[str]) -> None:
        self.user, self.password = user, password
        digest = next((c for c in challenges if c.lower().startswith("digest")), None)
        basic = any(c.lower().startswith("basic") for c in challenges)
        if digest is None and not basic:
            raise RtspError(f"the camera asks for an authentication method not supported: {challenges}")
        self.params = dict(re.findall(r'(\w+)="?([^",]*)"?', digest[len("digest"):])) if digest else None
        if self.params is not None and self.params.get("algorithm", "MD5").upper() != "MD5":
            raise RtspError(f"the camera asks for digest algorithm {self.params['algorithm']}; only MD5 is supported")
        self._count = 0

    def header(self, method: str, uri: str) -> str:
        if self.params is None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return f"Basic {token}"
        realm, nonce = self.params.get("realm", ""), self.params.get("nonce", "")
        ha1 = _md5(f"{self.user}:{realm}:{self.password}")
        ha2 = _md5(f"{method}:{uri}")
        fields = f'username="{self.user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
        qop = self.params.get("qop")
        if qop and "auth" in [q.strip() for q in qop.split(",")]:
            self._count += 1
            count, cnonce = f"{self._count:08x}", os.urandom(8).hex()
            response = _md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
            fields += f', qop=auth, nc={count}, cnonce="{cnonce}"'
        else:
            response = _md5(f"{ha1}:{nonce}:{ha2}")
        fields += f', response="{response}"'
        if "opaque" in self.params:
            fields += f', opaque="{self.params["opaque"]}"'
        return f"Digest {fields}, algorithm=MD5"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RTSP digest authentication is MD5


class RtspClient:
    """One RTSP session with one camera: `open()` sets it up and starts it, `access_units()` reads it.

    Not thread-safe; the camera's reader thread owns it. `stop` (an event) ends the reading early.
    """

    def __init__(self, url: str, *, open_timeout_s: float, read_timeout_s: float, chunk_interval_s: float = 0.1,
                 stop: threading.Event | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() != "rtsp" or not parts.hostname:
            raise ValueError(f"not an rtsp:// URL: {url!r}")
        self.host, self.port = parts.hostname, parts.port or DEFAULT_PORT
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password or "")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc += f":{parts.port}" if parts.port else ""
        self.url = urlunsplit(parts._replace(netloc=netloc))  # the URL without credentials, as requests carry it
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.chunk_interval_s = chunk_interval_s
        self._stop = stop or threading.Event()
        self._sock: socket.socket | None = None
        self._cseq = 0
        self._auth: DigestAuth | None = None
        self._session: str | None = None
        self._session_url = self.url
        self._keepalive_method = "OPTIONS"
        self._keepalive_s = DEFAULT_SESSION_TIMEOUT_S / 2
        self._rtp_channel = 0
        self._pending = b""  # bytes read past the last complete message or packet
        self.track: VideoTrack | None = None

    # -- setup -----------------------------------------------------------------------------------

    def open(self) -> VideoTrack:
        """Connect, describe, set up the video track over TCP and play it, all within the open timeout."""
        deadline = time.monotonic() + self.open_timeout_s
        self._sock = socket.create_connection((self.host, self.port), timeout=self.open_timeout_s)
        options = self._request("OPTIONS", self.url, deadline=deadline)
        public = (options.header("public") or "").upper()
        if "GET_PARAMETER" in public:
            self._keepalive_method = "GET_PARAMETER"
        described = self._request("DESCRIBE", self.url, {"Accept": "application/sdp"}, deadline=deadline)
        base = described.header("content-base") or described.header("content-location") or self.url
        track, self._session_url = parse_sdp(described.body.decode("utf-8", "replace"), base)
        setup = self._request("SETUP", track.control_url, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"},
                              deadline=deadline)
        session = setup.header("session")
        if not session:
            raise RtspError("the camera's SETUP reply has no session")
        self._session, _, session_params = session.partition(";")
        timeout = re.search(r"timeout=(\d+)", session_params)
        self._keepalive_s = max(1.0, (float(timeout.group(1)) if timeout else DEFAULT_SESSION_TIMEOUT_S) / 2)
        channel = re.search(r"interleaved=(\d+)", setup.header("transport") or "")
        if channel is None:
            raise RtspError(f"the camera did not agree to RTP over the RTSP connection: {setup.header('transport')}")
        self._rtp_channel = int(channel.group(1))
        self._request("PLAY", self._session_url, {"Range": "npt=0.000-"}, deadline=deadline)
        self.track = track
        return track

    def _request(self, method: str, url: str, headers: dict[str, str] | None = None, *,
                 deadline: float) -> Response:
        """Send a request and wait for its reply (setup only: nothing is streaming yet), answering a 401 once."""
        for attempt in range(2):
            self._send(method, url, headers)
            response = self._read_response(deadline)
            if response.status == 401 and attempt == 0 and self.user is not None:
                # The first challenge, or a new nonce for one that went stale.
                self._auth = DigestAuth(self.user, self.password, response.headers.get("www-authenticate", []))
                continue
            break
        if response.status == 401:
            raise RtspError("unauthorized: check the user name and password in the camera's URL"
                            if self.user is not None else "unauthorized: the camera needs a user name and password")
        if response.status != 200:
            raise RtspError(f"{method} refused: {response.status} {response.reason}".rstrip())
        return response

    def _send(self, method: str, url: str, headers: dict[str, str] | None = None) -> None:
        assert self._sock is not None
        self._cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self._cseq}", f"User-Agent: {USER_AGENT}"]
        if self._session:
            lines.append(f"Session: {self._session}")
        if self._auth is not None:
            lines.append(f"Authorization: {self._auth.header(method, url)}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _read_response(self, deadline: float) -> Response:
        assert self._sock is not None
        while True:
            message = self._take_message()
            if message is not None:
                if message.status == 0:  # the camera's own request (rare): not what we wait for
                    continue
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the camera did not answer")
            self._sock.settimeout(remaining)
            data = self._sock.recv(READ_SIZE)
            if not data:
                raise RtspError("the camera closed the connection")
            self._pending += data

    def _take_message(self) -> Response | None:
        """Cut one RTSP message off the front of the pending bytes, or None while it is incomplete.

        Interleaved packets ahead of it (a camera may start sending before PLAY's reply) are dropped.
        """
        while self._pending.startswith(b"$") and len(self._pending) >= 4:
            size = 4 + int.from_bytes(self._pending[2:4], "big")
            if len(self._pending) < size:
                return None
            self._pending = self._pending[size:]
        end = self._pending.find(b"\r\n\r\n")
        if end < 0:
            if len(self._pending) > MAX_HEADER_BYTES:
                raise RtspError("the camera sent a header of more than 64 kB")
            return None
        head = self._pending[:end].decode("latin-1").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        try:
            length = int(headers.get("content-length", ["0"])[0])
        except ValueError as error:
            raise RtspError("the camera sent a malformed Content-Length") from error
        if length < 0:
            raise RtspError("the camera sent a negative Content-Length")
        if len(self._pending) < end + 4 + length:
            return None
        body = self._pending[end + 4 : end + 4 + length]
        self._pending = self._pending[end + 4 + length :]
        status_line = re.match(r"RTSP/\d\.\d\s+(\d{3})\s*(.*)", head[0])
        if status_line is None:
            if not re.match(r"[A-Z_]+ \S+ RTSP/\d\.\d", head[0]):
                raise RtspError(f"the camera sent something that is not RTSP: {head[0][:80]!r}")
            return Response(0, head[0], headers, body)  # a request from the camera
        return Response(int(status_line.group(1)), status_line.group(2), headers, body)

    # -- streaming -------------------------------------------------------------------------------

    def access_units(self) -> Iterator[AccessUnit]:
        """The video's access units as they arrive, until `stop` is set; errors end the session.

        Raises TimeoutError when no picture arrives within the read timeout, RtspError when the camera
        ends the session or sends something that is neither RTSP nor interleaved RTP.
        """
        assert self._sock is not None and self.track is not None, "open() first"
        depacketizer = Depacketizer(self.track.codec)
        scratch = bytearray(READ_SIZE)
        view = memoryview(scratch)
        now = time.monotonic()
        last_picture = next_keepalive = now
        next_keepalive += self._keepalive_s
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_keepalive:
                self._send(self._keepalive_method, self._session_url)
                next_keepalive = now + self._keepalive_s
            self._sock.settimeout(max(0.01, last_picture + self.read_timeout_s - now))
            try:
                size = self._sock.recv_into(scratch)
            except TimeoutError:
                raise TimeoutError("no video from the camera") from None
            if size == 0:
                raise RtspError("the camera closed the connection")
            # Bytes, not the scratch buffer: the pictures keep views of them until they are decoded.
            self._pending = self._pending + view[:size] if self._pending else bytes(view[:size])
            pictures = self._split(depacketizer)
            if pictures:
                last_picture = time.monotonic()
                yield from pictures
            self._stop.wait(self.chunk_interval_s)

    def _split(self, depacketizer: Depacketizer) -> list[AccessUnit]:
        """Interleaved packets and RTSP messages off the front of the pending bytes -> the pictures completed."""
        pictures: list[AccessUnit] = []
        data = self._pending
        view, position, size, channel = memoryview(data), 0, len(data), self._rtp_channel
        while position < size:
            if data[position] == 0x24:  # "$": channel, 16-bit length, packet
                if size - position < 4:
                    break
                end = position + 4 + ((data[position + 2] << 8) | data[position + 3])
                if end > size:
                    break
                if data[position + 1] == channel:
                    try:
                        pictures += depacketizer.push(view[position + 4 : end])
                    except RtpError as error:
                        raise RtspError(f"the camera sent a broken RTP packet: {error}") from error
                position = end  # RTCP (the next channel) is not needed
                continue
            self._pending = data[position:]
            message = self._take_message()
            if message is None:
                break  # an RTSP message still arriving
            data, view, position, size = self._pending, memoryview(self._pending), 0, len(self._pending)
            if message.status >= 300:  # a keep-alive refused: the session is gone
                raise RtspError(f"the camera ended the session: {message.status} {message.reason}".rstrip())
        self._pending = data[position:]
        return pictures

    def close(self) -> None:
        """End the session (TEARDOWN, not waited for) and the connection."""
        if self._sock is None:
            return
        try:
            if self._session:
                self._sock.settimeout(0.5)
                self._send("TEARDOWN", self._session_url)
        except OSError:
            pass  # the connection is already gone
        finally:
            self._sock.close()
            self._sock = None
