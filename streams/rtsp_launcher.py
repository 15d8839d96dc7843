"""Start and control the loopback RTSP test server (streams/rtsp_server.py) from the project's Python.

The server runs under the system Python, which has GStreamer's bindings (python3-gi); the virtualenv
usually has not. `RtspServerProcess` starts it, waits for its READY line, and can pause it (SIGSTOP,
a hung camera), resume it and stop it. `available()` tells whether it can run here at all, so a demo
can fall back to reading files.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections import deque
from functools import lru_cache
from pathlib import Path
from types import TracebackType

SYSTEM_PYTHON = Path("/usr/bin/python3")
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")


class RtspServerUnavailable(RuntimeError):
    """The RTSP test server cannot run here, or did not come up; the message says why."""


@lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """(True, GStreamer version) if the server can run here, else (False, the reason)."""
    if not SYSTEM_PYTHON.exists():
        return False, f"{SYSTEM_PYTHON} not found (the RTSP test server needs it, with python3-gi)"
    try:
        result = subprocess.run([str(SYSTEM_PYTHON), str(SERVER_SCRIPT), "--check"], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"cannot run {SERVER_SCRIPT.name} --check: {error}"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit code {result.returncode}"
        return False, (f"GStreamer RTSP server unavailable: {detail} (install python3-gi "
                       "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base/-good/-bad)")
    return True, result.stdout.strip()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RtspServerProcess:
    """One RTSP server process serving `mounts` ({"/cam1": Path("cam1.h264")}) in a loop on loopback.

    The port stays the same across stop() and start(), so a restarted server is the same camera URL.
    """

    def __init__(self, mounts: dict[str, Path], port: int | None = None, *, fps: float = 25.0,
                 ready_timeout_s: float = 15.0, spread: bool = False, user: str | None = None) -> None:
        if not mounts:
            raise ValueError("at least one mount is needed")
        self.mounts = {("/" + mount.lstrip("/")): Path(path) for mount, path in mounts.items()}
        self.port = port if port is not None else free_port()
        self.fps = fps
        self.ready_timeout_s = ready_timeout_s
        self.spread = spread  # mounts of one file start at different keyframes (cameras not in step)
        self.user = user  # "name:password": every mount asks for Digest authentication
        self._process: subprocess.Popen[str] | None = None
        self._output = _ServerOutput()
        self._paused = False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount.lstrip('/')}"

    def start(self) -> RtspServerProcess:
        """Start the server and wait until it listens; raises RtspServerUnavailable otherwise."""
        if self.running:
            return self
        ok, reason = available()
        if not ok:
            raise RtspServerUnavailable(reason)
        for mount, path in self.mounts.items():
            if not path.is_file():
                raise FileNotFoundError(f"{mount}: {path} does not exist")
        command = [str(SYSTEM_PYTHON), str(SERVER_SCRIPT), "--port", str(self.port), "--fps", str(self.fps)]
        for mount, path in self.mounts.items():
            command += ["--mount", f"{mount}={path}"]
        if self.spread:
            command.append("--spread")
        if self.user:
            command += ["--user", self.user]
        self._paused = False
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, bufsize=1)
        # Fresh per process, so the reader of an earlier process's output cannot wake this start().
        self._output = output = _ServerOutput()
        threading.Thread(target=output.drain, args=(self._process,), name=f"rtsp-server-{self.port}",
                         daemon=True).start()
        answered = output.settled.wait(self.ready_timeout_s)
        if not output.listening:
            self.stop()
            problem = "exited" if answered else f"did not become ready within {self.ready_timeout_s:g} s"
            raise RtspServerUnavailable(f"RTSP server on port {self.port} {problem}:\n{output.text()}")
        return self

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing more is sent, like a hung camera."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self._paused = False

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it does not exit in time). Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            if self._paused:
                os.kill(process.pid, signal.SIGCONT)  # a stopped process only acts on SIGTERM once resumed
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._paused = False

    def output(self) -> str:
        """The server's last lines of output (its log), for error messages."""
        return self._output.text()

    def _signal(self, signum: signal.Signals) -> None:
        if not self.running:
            raise RuntimeError(f"RTSP server on port {self.port} is not running")
        assert self._process is not None
        os.kill(self._process.pid, signum)

    def __enter__(self) -> RtspServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


class _ServerOutput:
    """What one server process prints, read as it comes so the server never blocks on a full pipe."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=50)
        self.listening = False
        self.settled = threading.Event()  # READY printed, or the output ended

    def drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("READY "):
                self.listening = True
                self.settled.set()
        process.stdout.close()
        self.settled.set()  # the process ended: wake start() instead of letting it wait out the timeout

    def text(self) -> str:
        return "\n".join(self.lines)
