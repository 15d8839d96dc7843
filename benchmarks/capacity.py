"""Cameras per box: the largest number of cameras one box analyses on target, per configuration.

    brightkitchen bench capacity                          # default ramp, table on stdout
    brightkitchen bench capacity --write-results benchmarks/RESULTS.md --plot benchmarks/capacity.png

For each configuration (a set of config overrides, or the naive design) and each stream setting
(size, bitrate, GOP), the number of cameras is ramped: doubled from --start until a step fails, then
halved between the last pass and the first failure down to --resolution. Every step is a fresh run:

- loopback RTSP servers (GStreamer, no re-encoding; --per-server mounts each) replay the same rendered
  kitchen clip to every camera, --cameras-per-stream cameras to a mount (each over its own connection),
  each mount starting at another keyframe: the cameras of one mount are in step, mounts are not;
- the service itself (`brightkitchen serve`'s parts: worker, ingest, SQLite store, API) runs in a child
  process on the demo's model and rules; this process follows the API's event stream (SSE) and reads
  its metrics, as a platform would;
- after a warm-up, a measured window: per-camera analysed rate (the worker's counts), detection-to-event
  latency (the analysed frame's time to the event's arrival on the API's stream), CPU of the service
  process and of the RTSP servers (separately), the service's CPU by part (read inside it from its
  threads and child processes), and the service's memory.

A step passes when every camera's analysed rate is within --rate-tolerance of --fps, every camera
takes in its stream as fast as it is sent (within the same tolerance: one that falls behind analyses old
frames), and the latency p95 is at most --latency-s. The naive design (decode and convert every frame,
fp32 at 640 px, batch 1 per camera, in a thread per camera; no rules) has no latency to meet. After
the window the counts are checked against each other: frames the worker analysed = the API's metrics, frames the readers
delivered = analysed + dropped stale + replaced, events published = events stored = events streamed.

How far from this box's limit: before a configuration's ramp, what decoding (the clip, as its readers
decode it) and detection (its detectors, at batch 8) alone cost on one thread is measured
(`benchmarks/floor.py`), with the number of cameras that would fill every core at that cost.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from benchmarks.floor import DecodeCost, decode_cost, detector_ms
from brightkitchen.config import Config
from streams.reader import DECODE_AUTO, DecodePolicy
from streams.rtsp_launcher import RtspServerProcess, free_port
from streams.status import DECODE_KEYFRAMES
from vision.runtime import cpu_flags, cpu_name

# The estimate in the design notes ("Speed measured on these machines") of the limit of one 2-core box.
ESTIMATED_LIMIT = 100
# What one box should take: at least this many cameras on target, and this many times the naive design's.
TARGET_CAMERAS = 64
TARGET_TIMES_NAIVE = 6.0
RESULTS_BEGIN = "<!-- capacity benchmark{}: begin (written by benchmarks/capacity.py) -->"
RESULTS_END = "<!-- capacity benchmark{}: end -->"
SCENE_TITLES = {"busy": "", "after-hours": ", after hours (an empty kitchen)"}
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
STREAM_FPS = 25.0  # the rendered clips' frame rate
CAMERAS_PER_STREAM = 4  # cameras reading one mount of the loopback server (see rtsp_servers)
# Other processes using more than this during a measured window make the numbers low (flagged).
BUSY_BOX_CORES = 0.25


# -- what is measured -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """How the cameras stream: size, bitrate and GOP (frames between keyframes, at 25 fps)."""

    width: int = 1920
    height: int = 1080
    bitrate: str = "4M"
    gop: int = 25
    scene: str = "busy"  # busy: people at work all the time; after-hours: an empty kitchen, mostly still

    @property
    def label(self) -> str:
        scene = ", after hours" if self.scene == "after-hours" else ""
        return f"{self.height}p {self.bitrate}b/s GOP {self.gop / 25:g} s{scene}"

    @staticmethod
    def parse(text: str, size: str, scene: str = "busy") -> Setting:
        """'4M/25' (bitrate/GOP frames) at --size."""
        bitrate, _, gop = text.partition("/")
        width, height = (int(v) for v in size.lower().split("x"))
        return Setting(width, height, bitrate or "4M", int(gop or 25), scene)


@dataclass(frozen=True)
class Configuration:
    """A way to run the cameras: config overrides of the service, or the naive design."""

    name: str
    description: str
    camera: dict[str, Any] = field(default_factory=dict)  # overrides of every camera
    model: dict[str, Any] = field(default_factory=dict)  # overrides of every model
    # Keys that only pin what the service does without them: dropped when the config does not know them.
    same_without: frozenset[str] = frozenset()
    naive: bool = False


BASE_CONFIGURATIONS = {
    "naive": Configuration(
        "naive", "decode and convert every frame, fp32 640 px, batch 1 per camera (a thread each)", naive=True
    ),
    "fp32": Configuration("fp32", "onnxruntime CPU fp32", model={"provider": "cpu", "precision": "fp32"},
                          same_without=frozenset({"precision"})),
    "int8": Configuration("int8", "onnxruntime CPU static int8", model={"provider": "cpu", "precision": "int8"}),
    "openvino": Configuration("openvino", "OpenVINO", model={"provider": "openvino"}),
}
ALL_FRAMES_SUFFIX = "-all-frames"
DEFAULT_CONFIGURATIONS = "naive,fp32,fp32-all-frames,int8,openvino"


def configuration(name: str) -> Configuration:
    """A base configuration, or one with `-all-frames` (keyframe-only decoding off)."""
    base_name = name.removesuffix(ALL_FRAMES_SUFFIX)
    if base_name not in BASE_CONFIGURATIONS:
        known = ", ".join(f"{n}[{ALL_FRAMES_SUFFIX}]" for n in BASE_CONFIGURATIONS if n != "naive")
        raise ValueError(f"unknown configuration {name!r}: choose from naive, {known}")
    base = BASE_CONFIGURATIONS[base_name]
    if name == base_name:
        return base if base.naive else Configuration(base.name, base.description + ", keyframes when the GOP allows",
                                                     base.camera, base.model, base.same_without)
    if base.naive:
        raise ValueError("the naive design always decodes every frame")
    return Configuration(name, base.description + ", every frame decoded (keyframe-only off)",
                         {**base.camera, "decode": "all_frames"}, base.model, base.same_without)


@dataclass(frozen=True)
class Target:
    fps: float = 1.0
    rate_tolerance: float = 0.10
    latency_s: float = 1.0


@dataclass
class Step:
    """One run at one camera count."""

    cameras: int
    passed: bool
    problems: list[str]
    seconds: float = 0.0
    fps_min: float = 0.0
    fps_mean: float = 0.0
    fps_max: float = 0.0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_events: int = 0
    # From the analysed frame to the event's publishing on the worker's bus: the rest is ingest, store, API.
    bus_latency_p95_s: float | None = None
    received_fps_min: float | None = None  # the slowest camera's frames taken in from its stream per second
    service_cpu: float = 0.0  # cores
    server_cpu: float = 0.0  # cores, all RTSP server processes
    bench_cpu: float = 0.0  # cores of this process (following the event stream, reading metrics)
    other_cpu: float = 0.0  # cores used by everything else on the box meanwhile
    rss_mb: float = 0.0
    decode_modes: dict[str, int] = field(default_factory=dict)
    runtime: str = ""  # what ran the model: engine, provider, precision (as the service's API says), processes
    inference_skipped: int = 0
    inference_skipped_share: float = 0.0  # of the frames analysed, those the motion gate let go without inference
    frames_replaced: int = 0  # frames a newer one replaced in a reader's mailbox before the worker took them
    mean_batch: float | None = None
    inference_ms_p50: float | None = None
    # The service's CPU by part (CPU_PARTS), in ms per camera-second over the measured window.
    cpu_ms_per_camera: dict[str, float] = field(default_factory=dict)
    events_published: int = 0
    events_stored: int = 0
    events_streamed: int = 0
    consistency: list[str] = field(default_factory=list)  # mismatches between the counts; empty = consistent


@dataclass
class Row:
    """The ramp of one configuration at one setting."""

    configuration: str
    description: str
    setting: str
    available: bool = True
    note: str = ""
    steps: list[Step] = field(default_factory=list)
    # CPU ms per camera-second that decoding and detection alone take on one thread (benchmarks/floor.py)
    floor_ms_per_camera: dict[str, float] = field(default_factory=dict)

    @property
    def max_cameras(self) -> int:
        return max((s.cameras for s in self.steps if s.passed), default=0)

    @property
    def floor_cameras(self) -> int | None:
        """The cameras that decoding and detection alone would fill every core of the box with."""
        cost = sum(self.floor_ms_per_camera.values())
        return int((os.cpu_count() or 1) * 1000 / cost) if cost > 0 else None

    def best(self) -> Step | None:
        passed = [s for s in self.steps if s.passed]
        return max(passed, key=lambda s: s.cameras) if passed else None

    def memory_per_camera_mb(self) -> float | None:
        """Slope of the service's memory over the camera counts run (least squares)."""
        points = [(s.cameras, s.rss_mb) for s in self.steps if s.rss_mb > 0]
        if len({c for c, _ in points}) < 2:
            return None
        mean_c = statistics.fmean(c for c, _ in points)
        mean_m = statistics.fmean(m for _, m in points)
        var = sum((c - mean_c) ** 2 for c, _ in points)
        return sum((c - mean_c) * (m - mean_m) for c, m in points) / var


# -- machine ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    flags = cpu_flags()
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
    import av
    import cv2
    import numpy
    import onnxruntime

    from streams.rtsp_launcher import available

    memory = "unknown"
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        memory = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory": memory,
        "flags": [f for f in wanted if f in flags],
        "no": [f for f in ("avx512f", "amx_tile") if f not in flags],
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "av": av.__version__,
        "opencv": cv2.__version__,
        "numpy": numpy.__version__,
        "gstreamer": available()[1],
        "load_at_start": os.getloadavg(),
    }


# -- processes --------------------------------------------------------------------------------------


def stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds so far from a /proc stat file (a process's or one thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads so far."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat"))


def process_tree(pid: int) -> list[int]:
    """A process and its descendants now (the service and its inference processes)."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            for task in Path(f"/proc/{pids[i]}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # it ended meanwhile
            pass
        i += 1
    return pids


def tree_sum(pid: int, measure: Callable[[int], float]) -> float:
    """measure (CPU seconds, memory) summed over a process and its descendants that are running now."""
    total = 0.0
    for p in process_tree(pid):
        try:
            total += measure(p)
        except OSError:  # it ended meanwhile
            pass
    return total


def tree_cpu_s(pid: int) -> float:
    return tree_sum(pid, process_cpu_s)


CPU_PARTS = ("readers", "inference processes", "worker loop", "snapshots", "rest of the service")


def thread_part(thread: threading.Thread) -> str | None:
    """Which part of the service a thread's CPU counts to (None: the rest of the service)."""
    from streams.publisher import RENDER_THREAD_PREFIX  # the service's modules: imported by its child only
    from streams.reader import CameraReader
    from streams.worker import LOOP_THREAD_NAME

    if isinstance(thread, CameraReader):
        return "readers"
    if thread.name == LOOP_THREAD_NAME:
        return "worker loop"
    if thread.name.startswith(RENDER_THREAD_PREFIX):  # the event publisher's snapshot threads
        return "snapshots"
    return None


def service_cpu_parts_s() -> dict[str, float]:
    """CPU seconds so far of the service running in this process, by part: its camera reader, worker-loop and
    snapshot threads, its child processes (the inference processes), and the rest of this process (API,
    ingest, store, publisher, and threads that have ended)."""
    parts = dict.fromkeys(CPU_PARTS, 0.0)
    for thread in threading.enumerate():
        part = thread_part(thread)
        if part is not None and thread.native_id is not None:
            try:
                parts[part] += stat_cpu_s(Path(f"/proc/self/task/{thread.native_id}/stat"))
            except OSError:  # the thread ended meanwhile; its CPU stays in the process's total
                pass
    me = os.getpid()
    own = process_cpu_s(me)
    parts["rest of the service"] = max(0.0, own - sum(parts.values()))  # threads' ticks round separately
    parts["inference processes"] = tree_cpu_s(me) - own
    return parts


def box_busy_s() -> float:
    """CPU seconds the whole box has been busy so far, over all cores (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICK


def process_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (pages they share are counted in each)."""
    return tree_sum(pid, process_rss_mb)


class Child:
    """A child process that speaks in lines: `NAME {json}` on stdout; this side can answer on stdin."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.log = log_path.open("w")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True, bufsize=1, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, name: str, timeout_s: float) -> dict[str, Any]:
        """Wait for the line `name ...`; raises RuntimeError when the child ends or takes too long."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {name} from the child within {timeout_s:g} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"the child ended (exit {self.process.wait()}) before {name}: {self.tail()}")
            word, _, rest = line.partition(" ")
            if word == name:
                return json.loads(rest) if rest else {}

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def tail(self) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-5:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


class EventStream:
    """Follows the API's server-sent event stream from its start; notes when each revision arrives."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import httpx

        last_seq = 0
        while not self._stop.is_set():
            try:
                with httpx.stream("GET", f"{self.base_url}/api/v1/events/stream", params={"after": str(last_seq)},
                                  timeout=httpx.Timeout(5.0, read=30.0)) as response:
                    for line in response.iter_lines():
                        if self._stop.is_set():
                            return
                        if line.startswith("id:"):
                            last_seq = int(line[3:].strip())
                        elif line.startswith("data:"):
                            self.received.append((time.time(), json.loads(line[5:])))
            except httpx.HTTPError:
                if self._stop.wait(0.5):
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=35)


# -- one step ---------------------------------------------------------------------------------------


@dataclass
class Plan:
    settings: list[Setting]
    configurations: list[Configuration]
    target: Target
    start: int
    max_cameras: int
    resolution: int
    warmup_s: float
    seconds: float
    clip_seconds: float
    per_server: int
    per_stream: int
    cache: Path
    work: Path
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # --set: {"camera"|"model"|"worker": {k: v}}


def bench_config(urls: list[str], data_dir: Path, plan: Plan, conf: Configuration, port: int,
                 drop: frozenset[str] = frozenset(), scene: str = "busy") -> dict[str, Any]:
    """The demo's model and rules on N cameras, with the configuration's overrides (less `drop`). In the busy
    kitchen the after-hours rules are out of their schedule; after hours, the rules of the opening hours are
    out of theirs and the after-hours ones in it."""
    from brightkitchen.demo import demo_config

    base = demo_config(data_dir, urls[0]).model_dump(mode="json", exclude_unset=False)
    template = base["sites"][0]["cameras"][0]
    extra = plan.extra
    camera = {k: v for k, v in {**conf.camera, **extra.get("camera", {})}.items() if k not in drop}
    base["sites"][0]["cameras"] = [
        {**template, **camera, "id": f"cam-{i:03d}", "name": f"cam {i}", "url": url, "analysis_fps": plan.target.fps}
        for i, url in enumerate(urls)
    ]
    model = {k: v for k, v in {**conf.model, **extra.get("model", {})}.items() if k not in drop}
    base["models"] = [{**m, **model} for m in base["models"]]
    base["worker"].update(extra.get("worker", {}))
    # The scene's own hours whatever the time of day of the run: an hour starting 2 h from now is out.
    site = base["sites"][0]
    later = datetime.now(ZoneInfo(site["timezone"])) + timedelta(hours=2)
    out = [{"start": later.strftime("%H:%M"), "end": (later + timedelta(hours=1)).strftime("%H:%M")}]
    if scene == "busy":
        site["schedules"]["after_hours"] = out
    else:
        site["schedules"] = {"after_hours": [{"start": "00:00", "end": "00:00"}], "opening": out}
        for rule in base["rules"]:
            rule["schedule"] = "after_hours" if rule["source"] == "motion" else "opening"
            if rule["source"] == "motion":  # every crossing an event to time, not one per cooldown
                rule["cooldown_s"] = 5.0
    base["storage"].update(database=f"sqlite:///{data_dir / 'events.db'}", snapshots_dir=str(data_dir / "snapshots"))
    base["api"]["port"] = port
    return base


def check_configuration(data: dict[str, Any], conf: Configuration, data_dir: Path
                        ) -> tuple[frozenset[str], str, Config]:
    """Override keys to leave out here, a note, and the config as parsed; raises LookupError("not available:
    ...") when the configuration cannot run here."""
    from brightkitchen.config import ConfigError, parse_config
    from streams.detectors import load_models

    note, dropped = "", frozenset[str]()
    try:
        config = parse_config(json.loads(json.dumps(data)), "capacity benchmark", data_dir, environ={})
    except ConfigError as error:
        unknown = {path.rsplit(".", 1)[-1] for path, msg in error.errors if msg.startswith("unknown key")}
        if not unknown or not unknown <= conf.same_without or len(unknown) != len(error.errors):
            raise LookupError("not available: " + "; ".join(f"{p}: {m}" for p, m in error.errors[:2])) from None
        for key in unknown:  # the service has no such setting yet, and without it does exactly that
            for section in (data["models"], data["sites"][0]["cameras"]):
                for item in section:
                    item.pop(key, None)
        config = parse_config(json.loads(json.dumps(data)), "capacity benchmark", data_dir, environ={})
        note = f"no {', '.join(sorted(unknown))} setting in this version; its default is the same"
        dropped = frozenset(unknown)
    wanted = conf.model.get("provider")
    if wanted not in (None, "auto", "cpu"):
        models = load_models(config)
        try:
            providers = [p for m in models.values() for p in m.detector.providers]
        finally:  # their inference processes go now, not whenever the pools are collected
            for model in models.values():
                model.close()
        if not any(wanted.lower() in p.lower() for p in providers):
            raise LookupError(f"not available: asked for provider {wanted}, the model runs on {', '.join(providers)}")
    return dropped, note, config


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def metric_values(text: str, name: str) -> dict[str, float]:
    """Samples of one Prometheus metric from /metrics text: {label text: value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name):]] = float(value)
    return out


@contextmanager
def rtsp_servers(clip: Path, cameras: int, per_server: int, per_stream: int) -> Iterator[tuple[list[str], list[int]]]:
    """Servers for `cameras` cameras of one clip -> (urls, server pids).

    Every `per_stream` cameras read one mount, each over its own connection, as viewers of one camera do:
    the server's pipeline per mount, not its connections, is most of what it costs, and real cameras
    cost the box nothing. Cameras of one mount are in step (keyframes together); mounts start at
    keyframes spread over the clip. benchmarks/RESULTS.md has what sharing changes on both sides. At
    most `per_server` mounts per server process.
    """
    if per_stream < 1:
        raise ValueError(f"cameras per stream must be at least 1, got {per_stream}")
    streams = -(-cameras // per_stream)
    with ExitStack() as stack:
        mount_urls, pids = [], []
        for first in range(0, streams, per_server):
            mounts = {f"/cam-{i:03d}": clip for i in range(first, min(streams, first + per_server))}
            server = stack.enter_context(RtspServerProcess(mounts, spread=True, ready_timeout_s=60))
            mount_urls += [server.url(m) for m in mounts]
            assert server.pid is not None
            pids.append(server.pid)
        yield [mount_urls[i % streams] for i in range(cameras)], pids


def run_step(plan: Plan, conf: Configuration, clip: Path, cameras: int, data: Callable[[list[str], Path, int], Any],
             progress: Progress) -> Step:
    """Run `cameras` cameras of a configuration once and measure them."""
    import httpx

    servers = rtsp_servers(clip, cameras, plan.per_server, plan.per_stream)
    with tempfile.TemporaryDirectory(dir=plan.work) as tmp, servers as (urls, pids):
        folder = Path(tmp)
        port = free_port()
        start_spread_s = 0.0  # the service opens its cameras this far apart
        if conf.naive:
            spec = folder / "naive.json"
            spec.write_text(json.dumps({"urls": urls, "fps": plan.target.fps}))
            command = [sys.executable, "-m", "benchmarks.capacity", "--child-naive", str(spec)]
        else:
            config_path = folder / "config.yaml"
            config = data(urls, folder, port)
            config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
            start_spread_s = cameras * config["worker"]["camera_start_interval_s"]
            command = [sys.executable, "-m", "benchmarks.capacity", "--child-service", str(config_path)]
        command += ["--warmup", str(plan.warmup_s), "--seconds", str(plan.seconds)]
        child = Child(command, folder / "child.log")
        stream: EventStream | None = None
        try:
            progress.phase(f"{cameras} cameras: starting")
            child.expect("READY", 120)
            if not conf.naive:
                stream = EventStream(f"http://127.0.0.1:{port}")
            progress.phase(f"{cameras} cameras: connecting")
            connected = child.expect("CONNECTED", 120 + start_spread_s)
            progress.phase(f"{cameras} cameras: warming up", plan.warmup_s)
            child.expect("MEASURE", plan.warmup_s + 60)
            cpu0, servers0, t0 = tree_cpu_s(child.process.pid), sum(map(process_cpu_s, pids)), time.monotonic()
            busy0, own0 = box_busy_s(), time.process_time()
            wall0 = time.time()
            progress.phase(f"{cameras} cameras: measuring", plan.seconds)
            child.expect("MEASURED", plan.seconds + 60)
            wall = time.monotonic() - t0
            service_cpu = (tree_cpu_s(child.process.pid) - cpu0) / wall
            server_cpu = (sum(map(process_cpu_s, pids)) - servers0) / wall
            bench_cpu = (time.process_time() - own0) / wall
            other_cpu = (box_busy_s() - busy0) / wall - service_cpu - server_cpu - bench_cpu
            rss = tree_rss_mb(child.process.pid)
            wall1 = time.time()
            progress.phase(f"{cameras} cameras: draining")
            drained = child.expect("DRAINED", 90)
            api: dict[str, Any] = {}
            if not conf.naive:
                base = f"http://127.0.0.1:{port}"
                api["metrics"] = httpx.get(f"{base}/metrics", timeout=10).text
                api["cameras"] = httpx.get(f"{base}/api/v1/cameras", timeout=10).json()
                api["models"] = httpx.get(f"{base}/api/v1/models", timeout=10).json()
                assert stream is not None
                deadline = time.monotonic() + 15
                while len(stream.received) < drained["events_stored"] and time.monotonic() < deadline:
                    time.sleep(0.1)
            child.say("exit")  # the API shuts down, which ends the event stream too
            if stream is not None:
                stream.close()
            summary = child.expect("SUMMARY", 60)
        except RuntimeError as error:
            return Step(cameras, False, [f"run failed: {error}"])
        finally:
            if stream is not None:
                stream.close()
            child.stop()
    step = measure(plan, conf, cameras, connected, summary, drained, api, stream, (wall0, wall1),
                   service_cpu, server_cpu, rss)
    step.other_cpu = round(max(0.0, other_cpu), 3)
    step.bench_cpu = round(bench_cpu, 3)
    return step


def measure(plan: Plan, conf: Configuration, cameras: int, connected: dict[str, Any], summary: dict[str, Any],
            drained: dict[str, Any], api: dict[str, Any], stream: EventStream | None,
            window: tuple[float, float], service_cpu: float, server_cpu: float, rss: float) -> Step:
    target = plan.target
    seconds = summary["seconds"]
    rates = [n / seconds for n in summary["frames_in_window"].values()]
    received = [n / seconds for n in summary.get("received_in_window", {}).values()]
    step = Step(cameras, True, [], seconds=round(seconds, 1), fps_min=round(min(rates), 3),
                fps_mean=round(statistics.fmean(rates), 3), fps_max=round(max(rates), 3),
                service_cpu=round(service_cpu, 3), server_cpu=round(server_cpu, 3), rss_mb=round(rss, 1))
    if connected.get("missing"):
        step.problems.append(f"{len(connected['missing'])} cameras never delivered a frame")
    low, high = target.fps * (1 - target.rate_tolerance), target.fps * (1 + target.rate_tolerance)
    off = [r for r in rates if not low <= r <= high]
    if off:
        step.problems.append(f"{len(off)} cameras off the rate ({min(rates):.2f}..{max(rates):.2f} fps)")
    # A camera whose stream is taken in slower than it is sent falls behind it: its frames get old.
    step.received_fps_min = round(min(received), 2) if received else None
    behind = [r for r in received if r < STREAM_FPS * (1 - target.rate_tolerance)]
    if behind:
        step.problems.append(f"{len(behind)} cameras behind their stream ({min(received):.1f} of {STREAM_FPS:g} "
                             "frames a second taken in)")
    step.decode_modes = summary.get("decode_modes", {})
    step.runtime = summary.get("runtime") or "; ".join(
        f"{m['runtime']} in {m['processes']} process{'es' if m['processes'] > 1 else ''}"
        for m in api.get("models", [])
    )
    step.inference_skipped = summary.get("inference_skipped", 0)
    step.frames_replaced = summary.get("frames_replaced", 0)
    analysed = sum(drained.get("frames_analysed", {}).values())
    step.inference_skipped_share = round(step.inference_skipped / analysed, 3) if analysed else 0.0
    step.cpu_ms_per_camera = {part: round(1000 * cpu / seconds / cameras, 2)
                              for part, cpu in summary.get("cpu_parts_s", {}).items()}
    step.mean_batch = summary.get("mean_batch")
    step.inference_ms_p50 = summary.get("inference_ms_p50")
    step.bus_latency_p95_s = summary.get("bus_latency_p95_s")
    if not conf.naive:
        assert stream is not None
        latencies = []
        for arrived, event in stream.received:
            frame_at = datetime.fromisoformat(event["updated_at"]).timestamp()
            if event["phase"] == "open" and window[0] <= frame_at <= window[1]:
                latencies.append(arrived - frame_at)
        step.latency_events = len(latencies)
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        step.latency_p50_s = None if p50 is None else round(p50, 3)
        step.latency_p95_s = None if p95 is None else round(p95, 3)
        if p95 is None:
            step.problems.append("no event opened in the window")
        elif p95 > target.latency_s:
            on_bus = "" if step.bus_latency_p95_s is None else f" (on the worker's bus {step.bus_latency_p95_s:.2f} s)"
            step.problems.append(f"latency p95 {p95:.2f} s > {target.latency_s:g} s{on_bus}")
        step.events_published = drained["events_published"]
        step.events_stored = drained["events_stored"]
        step.events_streamed = len(stream.received)
        step.consistency = consistency(drained, api, stream)
        if step.consistency:
            step.problems.append("counts disagree: " + "; ".join(step.consistency[:3]))
    step.passed = not step.problems
    return step


def consistency(drained: dict[str, Any], api: dict[str, Any], stream: EventStream) -> list[str]:
    """Where the worker's, the readers', the store's and the API's counts disagree (empty: nowhere)."""
    problems = []
    metric = metric_values(api["metrics"], "brightkitchen_frames_analysed_total")
    for camera, frames in drained["frames_analysed"].items():
        exposed = metric.get(f'{{camera="{camera}"}}', 0.0)
        if exposed != frames:
            problems.append(f"{camera}: worker analysed {frames} frames, /metrics says {exposed:g}")
    for status in api["cameras"]:
        analysed = drained["frames_analysed"].get(status["id"], 0)
        accounted = analysed + status["frames_dropped_stale"] + status["frames_replaced"]
        if not 0 <= status["frames_analysed"] - accounted <= 1:  # at most one frame left in the mailbox
            problems.append(f"{status['id']}: reader delivered {status['frames_analysed']} frames, worker analysed "
                            f"{analysed} + {status['frames_dropped_stale']} stale + "
                            f"{status['frames_replaced']} replaced")
    stored = sum(metric_values(api["metrics"], "brightkitchen_events_stored_total").values())
    if not drained["events_published"] == drained["events_stored"] == stored == len(stream.received):
        problems.append(f"events: published {drained['events_published']}, stored {drained['events_stored']} "
                        f"(/metrics {stored:g}), streamed {len(stream.received)}")
    return problems


# -- the ramp ---------------------------------------------------------------------------------------


def ramp(run: Callable[[int], Step], start: int, max_cameras: int, resolution: int) -> list[Step]:
    """Double from `start` until a step fails (or max_cameras passes), halve from start while it fails,
    then bisect between the best pass and the first failure above it, to `resolution` cameras (finer for
    small counts: a quarter of the best count, at least 1)."""
    steps: dict[int, Step] = {}

    def passes(n: int) -> bool:
        if n not in steps:
            steps[n] = run(n)
        return steps[n].passed

    n = max(1, min(start, max_cameras))
    if passes(n):
        while n < max_cameras and passes(n := min(max_cameras, n * 2)):
            pass
    else:
        while n > 1 and not passes(n := n // 2):
            pass
    passed = [c for c, s in steps.items() if s.passed]
    if passed:
        lo = max(passed)
        above = [c for c, s in steps.items() if not s.passed and c > lo]
        hi = min(above) if above else lo
        while hi - lo > min(resolution, max(1, lo // 4)):
            mid = (lo + hi) // 2
            if passes(mid):
                lo = mid
            else:
                hi = mid
    return [steps[c] for c in sorted(steps)]


def planned_steps(start: int, max_cameras: int, resolution: int) -> int:
    """About how many steps a ramp takes (for the progress bar)."""
    doublings = max(1, math.ceil(math.log2(max(2, max_cameras) / max(1, start))) + 1)
    return doublings + max(0, math.ceil(math.log2(max(2, max_cameras / 2) / max(1, resolution))))


def run_plan(plan: Plan, progress: Progress) -> list[Row]:
    from benchmarks.worker_bench import make_clip

    rows = []
    for setting in plan.settings:
        progress.phase(f"rendering the {setting.label} clip")
        clip = make_clip(plan.cache, setting.width, setting.height, setting.bitrate, setting.gop, plan.clip_seconds,
                         setting.scene)
        decoding: DecodeCost | None = None
        for conf in plan.configurations:
            row = Row(conf.name, conf.description, setting.label)
            rows.append(row)
            progress.configuration(f"{conf.name}, {setting.label}")
            data: Callable[[list[str], Path, int], Any] = lambda urls, folder, port: None  # noqa: E731
            if not conf.naive:
                with tempfile.TemporaryDirectory(dir=plan.work) as tmp:
                    probe = bench_config(["rtsp://127.0.0.1:1/probe"], Path(tmp), plan, conf, 1)
                    try:
                        drop, row.note, parsed = check_configuration(probe, conf, Path(tmp))
                    except LookupError as error:
                        row.available, row.note = False, str(error)
                        progress.skip()
                        continue
                    progress.phase("measuring what decoding and detection alone cost")
                    decoding = decoding or decode_cost(clip)
                    row.floor_ms_per_camera = floor(plan, conf, setting, decoding, parsed)

                def data(urls: list[str], folder: Path, port: int, conf: Configuration = conf,
                         drop: frozenset[str] = drop, scene: str = setting.scene) -> dict[str, Any]:
                    return bench_config(urls, folder, plan, conf, port, drop, scene)

            def one(n: int, conf: Configuration = conf, data: Any = data, clip: Path = clip) -> Step:
                step = run_step(plan, conf, clip, n, data, progress)
                progress.step_done(n, step.passed)
                return step

            row.steps = ramp(one, plan.start, plan.max_cameras, plan.resolution)
    return rows


def floor(plan: Plan, conf: Configuration, setting: Setting, decoding: DecodeCost, config: Config
          ) -> dict[str, float]:
    """CPU ms per camera-second of the decoding the configuration's readers do and of its detectors."""
    policy = DecodePolicy(plan.target.fps, STREAM_FPS / setting.gop, conf.camera.get("decode", DECODE_AUTO))
    keyframes = policy.mode == DECODE_KEYFRAMES
    decode = plan.target.fps * decoding.keyframe_ms if keyframes else STREAM_FPS * decoding.frame_ms
    with redirect_stdout(sys.stderr):  # int8 calibration prints; the benchmark's own output is stdout
        detect = plan.target.fps * detector_ms(config, setting.width, setting.height)
    return {"keyframe decode" if keyframes else "decode of every frame": round(decode, 2),
            "detector": round(detect, 2)}


# -- the child processes ----------------------------------------------------------------------------


def say(name: str, data: dict[str, Any] | None = None) -> None:
    print(name if data is None else f"{name} {json.dumps(data)}", flush=True)


def wait_for_exit(timeout_s: float) -> None:
    """Wait for the parent's `exit` line on stdin (or the timeout)."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout_s)
    if ready:
        sys.stdin.readline()


def wait_connected(delivered: Callable[[], dict[str, int]], timeout_s: float) -> list[str]:
    """Wait until every camera delivered a frame; the ones that did not by the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [c for c, n in delivered().items() if n == 0]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


def child_service(config_path: Path, warmup_s: float, seconds: float) -> int:
    """The service (worker, ingest, store, API) on a config, measured from the inside."""
    import logging

    import uvicorn

    from brightkitchen.config import load_config
    from brightkitchen.metrics import EVENTS_STORED
    from brightkitchen.service import build_service

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(config_path, environ={})
    service = build_service(config)
    server = uvicorn.Server(uvicorn.Config(service.app(), host="127.0.0.1", port=config.api.port,
                                           log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            return 1
        time.sleep(0.05)
    say("READY")
    worker = service.worker
    readers = {p.camera.id: p.reader for p in worker.pipelines}
    spread_s = len(readers) * config.worker.camera_start_interval_s  # the cameras start that far apart
    missing = wait_connected(lambda: {c: r.status().frames_analysed for c, r in readers.items()}, 60 + spread_s)
    say("CONNECTED", {"missing": missing})
    time.sleep(warmup_s)
    frames0 = dict(worker.stats.frames_analysed)
    status0 = {c: r.status() for c, r in readers.items()}
    batches0, inference0 = len(worker.stats.batch_sizes), len(worker.stats.inference_s)
    latencies0 = len(worker.stats.event_latency_s)  # the bounded samples do not fill up in one step
    parts0 = service_cpu_parts_s()
    t0 = time.monotonic()
    say("MEASURE")
    time.sleep(seconds)
    parts1 = service_cpu_parts_s()
    frames1 = dict(worker.stats.frames_analysed)
    status1 = {c: r.status() for c, r in readers.items()}
    elapsed = time.monotonic() - t0
    batches = list(worker.stats.batch_sizes)[batches0:]
    inference = list(worker.stats.inference_s)[inference0:]
    bus_latency_p95 = percentile(list(worker.stats.event_latency_s)[latencies0:], 95)
    say("MEASURED")
    statuses = worker.camera_status()
    worker.stop()  # closes open violations (flushed onto the bus) and stops the readers

    def stored() -> int:
        return int(sum(s.value for metric in EVENTS_STORED.collect() for s in metric.samples
                       if s.name.endswith("_total")))

    deadline = time.monotonic() + 60
    while stored() < worker.stats.events_published and time.monotonic() < deadline:
        time.sleep(0.05)
    say("DRAINED", {"events_published": worker.stats.events_published, "events_stored": stored(),
                    "frames_analysed": dict(worker.stats.frames_analysed)})
    wait_for_exit(120)
    server.should_exit = True
    thread.join(30)
    modes: dict[str, int] = {}
    for s in statuses:
        modes[s["decode_mode"]] = modes.get(s["decode_mode"], 0) + 1
    say("SUMMARY", {
        "seconds": elapsed,
        "frames_in_window": {c: frames1.get(c, 0) - frames0.get(c, 0) for c in readers},
        "received_in_window": {c: status1[c].frames_received - status0[c].frames_received for c in readers},
        "decode_modes": modes,
        "inference_skipped": sum(s["inference_skipped_still"] + s["inference_skipped_schedule"] for s in statuses),
        "frames_replaced": sum(status1[c].frames_replaced - status0[c].frames_replaced for c in readers),
        "mean_batch": round(statistics.fmean(batches), 2) if batches else None,
        "inference_ms_p50": round(statistics.median(inference) * 1000, 1) if inference else None,
        "bus_latency_p95_s": round(bus_latency_p95, 3) if bus_latency_p95 is not None else None,
        "cpu_parts_s": {part: parts1[part] - parts0[part] for part in CPU_PARTS},
    })
    return 0


def child_naive(spec_path: Path, warmup_s: float, seconds: float) -> int:
    """The naive design on the same cameras: a thread per camera decoding and converting every frame,
    the same model at 640 px in fp32, one frame per inference call."""
    from benchmarks.worker_bench import NaiveCamera
    from models.cards import builtin_model_path, find_card
    from streams.detectors import LoadedModel
    from vision.detector import YoloDetector

    spec = json.loads(spec_path.read_text())
    path = builtin_model_path("kitchen-starter")
    card = find_card(path)
    detector = YoloDetector(path, class_names=list(card.classes) if card else None, input_size=640, provider="cpu",
                            max_batch=1)
    model = LoadedModel("kitchen-starter", card.version if card else "", path, card, detector)
    say("READY")
    stop = threading.Event()
    cams = [NaiveCamera(url, model, spec["fps"], stop) for url in spec["urls"]]
    for c in cams:
        c.start()
    missing = wait_connected(lambda: {str(i): len(c.analysed) for i, c in enumerate(cams)}, 60)
    say("CONNECTED", {"missing": missing})
    time.sleep(warmup_s)
    start = time.monotonic()
    decoded0 = [c.decoded for c in cams]
    say("MEASURE")
    time.sleep(seconds)
    end = time.monotonic()
    decoded1 = [c.decoded for c in cams]
    say("MEASURED")
    stop.set()
    say("DRAINED", {})
    wait_for_exit(120)
    for c in cams:
        c.join(timeout=10)
    say("SUMMARY", {
        "seconds": end - start,
        "frames_in_window": {f"cam-{i:03d}": sum(1 for t in c.analysed if start <= t < end)
                             for i, c in enumerate(cams)},
        "received_in_window": {f"cam-{i:03d}": b - a for i, (a, b) in enumerate(zip(decoded0, decoded1, strict=True))},
        "decode_modes": {"all_frames": len(cams)},
        "runtime": f"{', '.join(detector.providers)} fp32 640 px, a session per camera thread",
        "mean_batch": 1.0,
        "inference_ms_p50": round(statistics.median(x for c in cams for x in c.inference) * 1000, 1)
        if any(c.inference for c in cams) else None,
    })
    return 0


# -- output -----------------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr: steps done of about how many, what runs now, elapsed time."""

    def __init__(self, total_steps: int, enabled: bool = True) -> None:
        self.total = max(1, total_steps)
        self.done = 0
        self.enabled = enabled
        self.started = time.monotonic()
        self.current = ""
        self.what = ""
        self._phase_until: float | None = None
        self._tty = sys.stderr.isatty()
        self._stop = threading.Event()
        if enabled and self._tty:
            threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._draw()

    def _draw(self, newline: bool = False) -> None:
        if not self.enabled:
            return
        width = 24
        filled = min(width, round(width * self.done / self.total))
        elapsed = int(time.monotonic() - self.started)
        left = ""
        if self._phase_until is not None:
            left = f" ({max(0, int(self._phase_until - time.monotonic()))} s left)"
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/~{self.total} steps "
                f"{elapsed // 60}:{elapsed % 60:02d}  {self.current}: {self.what}{left}")
        if self._tty and not newline:
            sys.stderr.write("\r\033[K" + line[:200])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def configuration(self, name: str) -> None:
        self.current = name
        self.phase("starting")

    def phase(self, what: str, seconds: float | None = None) -> None:
        self.what = what
        self._phase_until = time.monotonic() + seconds if seconds else None
        self._draw(newline=not self._tty)

    def step_done(self, cameras: int, passed: bool) -> None:
        self.done += 1
        self.total = max(self.total, self.done + 1)
        self.phase(f"{cameras} cameras {'pass' if passed else 'FAIL'}")

    def skip(self) -> None:
        self.phase("not available")

    def close(self) -> None:
        self._stop.set()
        if self.enabled and self._tty:
            sys.stderr.write("\n")


def summary(rows: list[Row]) -> dict[str, Any]:
    """Per setting: the naive count, and each configuration's multiple of it."""
    out: dict[str, Any] = {}
    for setting in dict.fromkeys(r.setting for r in rows):
        mine = [r for r in rows if r.setting == setting]
        naive = next((r.max_cameras for r in mine if r.configuration == "naive"), None)
        out[setting] = {
            r.configuration: {
                "cameras": r.max_cameras if r.available else None,
                "times_naive": round(r.max_cameras / naive, 1) if r.available and naive else None,
            }
            for r in mine
        }
    return out


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(rows: list[Row], target: Target) -> str:
    """A Markdown table: one line per configuration and setting."""
    naive = {r.setting: r.max_cameras for r in rows if r.configuration == "naive"}
    lines = [
        "| configuration | stream | cameras on target | × naive | slowest / fastest camera fps | latency p50 / p95 (s) "
        "| service CPU (cores) | RTSP servers CPU | benchmark CPU | other load on the box | memory (MB) / per camera "
        "| decode | model runs on | inference skipped | steps run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r.available:
            lines.append(f"| {r.configuration} | {r.setting} | {r.note} | | | | | | | | | | | | |")
            continue
        best = r.best()
        ratio = f"{r.max_cameras / naive[r.setting]:.1f}" if naive.get(r.setting) else "—"
        per_camera = r.memory_per_camera_mb()
        steps = ", ".join(f"{s.cameras}{'✓' if s.passed else '✗'}" for s in r.steps)
        if best is None:
            first = r.steps[0] if r.steps else None
            why = first.problems[0] if first and first.problems else "no step ran"
            lines.append(f"| {r.configuration} | {r.setting} | 0 ({why}) | | | | | | | | | | | | {steps} |")
            continue
        modes = ", ".join(f"{m} {n}" for m, n in sorted(best.decode_modes.items()))
        memory = f"{best.rss_mb:.0f} / {fmt(per_camera, 1)}"
        lines.append(
            f"| {r.configuration} | {r.setting} | **{r.max_cameras}** | {ratio} "
            f"| {best.fps_min:.2f} / {best.fps_max:.2f} "
            f"| {fmt(best.latency_p50_s)} / {fmt(best.latency_p95_s)} | {best.service_cpu:.2f} | {best.server_cpu:.2f} "
            f"| {best.bench_cpu:.2f} | {best.other_cpu:.2f} | {memory} | {modes} | {best.runtime or '—'} "
            f"| {100 * best.inference_skipped_share:.0f}% | {steps} |"
        )
    return "\n".join(lines)


def failures(rows: list[Row]) -> list[str]:
    """Why the first failing step above each configuration's best count failed."""
    out = []
    for r in rows:
        best = r.max_cameras
        above = [s for s in r.steps if not s.passed and s.cameras > best]
        if above:
            s = min(above, key=lambda s: s.cameras)
            out.append(f"{r.configuration} ({r.setting}) at {s.cameras} cameras: {'; '.join(s.problems)}")
    return out


def target_check(rows: list[Row], cameras_target: int, times_naive: float) -> list[str]:
    """Per stream setting: the best configuration against the camera-count and times-naive targets."""
    out = []
    for setting in dict.fromkeys(r.setting for r in rows):
        mine = [r for r in rows if r.setting == setting and r.available]
        naive = next((r.max_cameras for r in mine if r.configuration == "naive"), None)
        ours = [r for r in mine if r.configuration != "naive"]
        if not ours:
            continue
        best = max(ours, key=lambda r: r.max_cameras)
        verdict = "meets" if best.max_cameras >= cameras_target else "misses"
        text = f"{setting}: best {best.configuration} with {best.max_cameras} cameras, {verdict} the {cameras_target}"
        if naive:
            ratio = best.max_cameras / naive
            text += (f"; {ratio:.1f} times the naive design's {naive}, "
                     f"{'meets' if ratio >= times_naive else 'misses'} the {times_naive:g} times")
        out.append(text)
    return out


def limit_estimate(rows: list[Row]) -> list[str]:
    """How far each configuration is from the design notes' estimate and from this box's floor (what decoding
    and detection alone cost), and what its CPU use projects."""
    cores = os.cpu_count() or 1
    out = []
    for r in rows:
        best = r.best()
        if not r.available or best is None or r.configuration == "naive":
            continue
        per_camera = best.service_cpu / best.cameras
        projected = cores / per_camera if per_camera > 0 else float("inf")
        share = 100 * best.cameras / ESTIMATED_LIMIT
        parts = ", ".join(f"{part} {ms:.1f}" for part, ms in best.cpu_ms_per_camera.items())
        text = (f"{r.configuration} ({r.setting}): {best.cameras} cameras = {share:.0f}% "
                f"of the ~{ESTIMATED_LIMIT} estimated; the service used {per_camera:.4f} cores per camera, "
                f"so the whole box ({cores} cores, no RTSP servers on it) would take about {projected:.0f}"
                + (f" (ms of CPU per camera-second: {parts})" if parts else ""))
        if r.floor_cameras:
            floor_parts = ", ".join(f"{part} {ms:.1f}" for part, ms in r.floor_ms_per_camera.items())
            text += (f". Decoding and detection alone, on one thread each ({floor_parts} ms per camera-second), would "
                     f"fill the box at about {r.floor_cameras} cameras: {best.cameras} is "
                     f"{100 * best.cameras / r.floor_cameras:.0f}% of that")
        out.append(text)
    return out


def write_plot(rows: list[Row], path: Path, target: Target, title: str) -> Path:
    """Two panels: cameras vs slowest camera's analysed rate, cameras vs latency p95 (PNG, OpenCV)."""
    import cv2
    import numpy as np

    width, height, margin = 1400, 560, 70
    image = np.full((height, width, 3), 255, np.uint8)
    colours = [(200, 80, 30), (40, 150, 40), (30, 30, 200), (160, 60, 160), (0, 140, 200), (90, 90, 90),
               (120, 120, 0), (0, 90, 160)]
    shown = [r for r in rows if r.available and r.steps]
    max_x = max((s.cameras for r in shown for s in r.steps), default=1)
    max_x = max(8, int(math.ceil(max_x / 8) * 8))
    panels = [
        ("slowest camera's analysed fps", lambda s: s.fps_min, max(1.5 * target.fps, 0.1), target.fps),
        ("detection-to-event latency p95 (s)", lambda s: s.latency_p95_s,
         max([2 * target.latency_s] + [s.latency_p95_s or 0 for r in shown for s in r.steps]), target.latency_s),
    ]
    panel_w = (width - 3 * margin) // 2
    cv2.putText(image, title, (margin, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for k, (label, value, max_y, line_y) in enumerate(panels):
        x0, y0 = margin + k * (panel_w + margin), height - margin
        x1, y1 = x0 + panel_w, 60

        def px(x: float, y: float, x0: int = x0, x1: int = x1, y0: int = y0, y1: int = y1,
               max_y: float = max_y) -> tuple[int, int]:
            return int(x0 + (x1 - x0) * x / max_x), int(y0 - (y0 - y1) * min(y, max_y) / max_y)

        cv2.rectangle(image, (x0, y1), (x1, y0), (0, 0, 0), 1)
        for i in range(9):
            gx = max_x * i / 8
            cv2.putText(image, f"{gx:.0f}", (px(gx, 0)[0] - 10, y0 + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
            gy = max_y * i / 8
            cv2.putText(image, f"{gy:.2f}", (x0 - 50, px(0, gy)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
            cv2.line(image, (x0, px(0, gy)[1]), (x1, px(0, gy)[1]), (230, 230, 230), 1)
        cv2.line(image, px(0, line_y), px(max_x, line_y), (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, "target", (x1 - 60, px(0, line_y)[1] - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(image, label, (x0, y1 - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, "cameras", (x1 - 70, y0 + 45), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for i, r in enumerate(shown):
            colour = colours[i % len(colours)]
            points = [px(s.cameras, value(s)) for s in sorted(r.steps, key=lambda s: s.cameras)
                      if value(s) is not None]
            for a, b in zip(points, points[1:], strict=False):
                cv2.line(image, a, b, colour, 2, cv2.LINE_AA)
            for s, p in zip([s for s in sorted(r.steps, key=lambda s: s.cameras) if value(s) is not None], points,
                            strict=True):
                if s.passed:
                    cv2.circle(image, p, 5, colour, -1, cv2.LINE_AA)
                else:
                    cv2.drawMarker(image, p, colour, cv2.MARKER_TILTED_CROSS, 12, 2)
            if k == 0:
                ly = 80 + 22 * i
                cv2.line(image, (x0 + 15, ly), (x0 + 45, ly), colour, 3)
                cv2.putText(image, f"{r.configuration} ({r.setting})", (x0 + 52, ly + 5), cv2.FONT_HERSHEY_SIMPLEX,
                            0.45, colour, 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")
    return path


def report_text(report: dict[str, Any], rows: list[Row], target: Target, command: str) -> str:
    m = report["machine"]
    flags = ", ".join(m["flags"]) or "none of note"
    lacks = ", ".join({"avx512f": "no AVX-512", "amx_tile": "no AMX"}[f] for f in m["no"])
    load0, load1 = m["load_at_start"], report["load_at_end"]
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; flags {flags}{'; ' + lacks if lacks else ''}. "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']} ({', '.join(m['onnxruntime_providers'])}), "
        f"PyAV {m['av']}, OpenCV {m['opencv']}, numpy {m['numpy']}, {m['gstreamer']}. "
        f"Load average at start {load0[0]:.2f}, at end {load1[0]:.2f}. Measured {report['finished']}.",
        "",
        f"Target: every camera analysed at {target.fps:g} fps ± {100 * target.rate_tolerance:.0f}%, detection-to-event "
        f"latency p95 ≤ {target.latency_s:g} s (from the analysed frame that completes a rule's dwell to the event "
        f"on the API's event stream). Every camera must also take in its whole stream ({STREAM_FPS:g} frames a "
        f"second, same tolerance). The naive design has no latency to meet (it runs no rules). "
        f"{report['setup']['seconds']:g} s measured per step after {report['setup']['warmup']:g} s of warm-up; the "
        f"demo's model and rules; the RTSP servers run on the same box and their CPU is shown apart, "
        f"{report['setup']['cameras_per_stream']} cameras to a mount (each over its own connection, in step with the "
        f"others of its mount). Service CPU and "
        f"memory are the service process's with its inference processes; the benchmark's own process (following the "
        f"event stream and the metrics) is shown apart too."
        + (f" Overrides of every configuration: {json.dumps(report['setup']['overrides'])}."
           if report["setup"]["overrides"] else ""),
        "",
        table(rows, target),
        "",
    ]
    busy = max((s.other_cpu for r in rows for s in r.steps), default=0.0)
    if busy > BUSY_BOX_CORES:
        lines.append(f"- **The box was busy with other work** (up to {busy:.2f} cores used by other processes during "
                     "a measured window): the counts are lower than this box can do. Re-run on a quiet box.")
    for line in target_check(rows, TARGET_CAMERAS, TARGET_TIMES_NAIVE):
        lines.append(f"- Target: {line}.")
    for line in limit_estimate(rows):
        lines.append(f"- {line}.")
    for line in failures(rows):
        lines.append(f"- Failed {line}.")
    return "\n".join(lines)


def write_results(path: Path, text: str, plot: Path | None, scene: str = "busy") -> None:
    """Put the scene's section between its markers in RESULTS.md, replacing an older one."""
    key = "" if scene == "busy" else f" ({scene})"
    begin, end = RESULTS_BEGIN.format(key), RESULTS_END.format(key)
    section = [begin, f"## Cameras per box{SCENE_TITLES[scene]} (`benchmarks/capacity.py`)", "", text]
    if plot is not None:
        section += ["", f"![cameras vs analysed rate and latency]({os.path.relpath(plot, path.parent)})"]
    section.append(end)
    block = "\n".join(section)
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in old and end in old:
        before, rest = old.split(begin, 1)
        new = before + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


# -- command line -----------------------------------------------------------------------------------


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brightkitchen bench capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, add_help=add_help)
    parser.add_argument("--configs", default=DEFAULT_CONFIGURATIONS,
                        help=f"comma-separated configurations (default {DEFAULT_CONFIGURATIONS})")
    parser.add_argument("--streams", default="4M/25",
                        help="comma-separated BITRATE/GOP settings, GOP in frames at 25 fps (default 4M/25)")
    parser.add_argument("--size", default="1920x1080", help="camera frame size")
    parser.add_argument("--scene", choices=("busy", "after-hours"), default="busy",
                        help="busy: people at work all the time (every frame moves), with the after-hours rules out of "
                        "schedule; after-hours: an empty kitchen, still but for a rodent crossing it, with the "
                        "opening-hours rules out of schedule")
    parser.add_argument("--fps", type=float, default=1.0, help="analysis rate per camera (target)")
    parser.add_argument("--rate-tolerance", type=float, default=0.10)
    parser.add_argument("--latency-s", type=float, default=1.0, help="latency p95 target beyond the dwell")
    parser.add_argument("--start", type=int, default=8, help="first camera count of each ramp")
    parser.add_argument("--max-cameras", type=int, default=160)
    parser.add_argument("--resolution", type=int, default=8, help="stop bisecting when the bracket is this narrow")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after every camera delivered a frame")
    parser.add_argument("--clip-seconds", type=float, default=40.0, help="length of the looped clip")
    parser.add_argument("--per-server", type=int, default=64, help="mounts per RTSP server process")
    parser.add_argument("--cameras-per-stream", type=int, default=CAMERAS_PER_STREAM,
                        help="cameras that read one mount of the loopback server, each over its own connection")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                        help="an override of every configuration: camera.KEY, model.KEY or worker.KEY (value as "
                        "YAML), e.g. --set model.threads=1; repeatable")
    parser.add_argument("--cache", default="var/bench", help="where rendered clips are kept")
    parser.add_argument("--plot", help="write the cameras vs rate and latency plot to this PNG")
    parser.add_argument("--write-results", metavar="RESULTS_MD", help="put the table in this Markdown file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--child-service", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-naive", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(build_parser().parse_args(argv), argv)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the benchmark as parsed from `argv` (shown in the results as the command that made them)."""
    parser = build_parser()
    if args.child_service:
        return child_service(args.child_service, args.warmup, args.seconds)
    if args.child_naive:
        return child_naive(args.child_naive, args.warmup, args.seconds)
    try:
        configurations = [configuration(n.strip()) for n in args.configs.split(",") if n.strip()]
        settings = [Setting.parse(s.strip(), args.size, args.scene) for s in args.streams.split(",") if s.strip()]
    except ValueError as error:
        parser.error(str(error))
    if args.start < 1 or args.max_cameras < args.start or args.resolution < 1:
        parser.error("need 1 <= --start <= --max-cameras and --resolution >= 1")
    if args.per_server < 1 or args.cameras_per_stream < 1:
        parser.error("need --per-server >= 1 and --cameras-per-stream >= 1")
    extra: dict[str, dict[str, Any]] = {}
    for item in args.overrides:
        key, equals, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not equals or not dot or section not in ("camera", "model", "worker") or not name:
            parser.error(f"--set wants camera.KEY=VALUE, model.KEY=VALUE or worker.KEY=VALUE, got {item!r}")
        extra.setdefault(section, {})[name] = yaml.safe_load(value)
    from streams.rtsp_launcher import available

    ok, reason = available()
    if not ok:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    target = Target(args.fps, args.rate_tolerance, args.latency_s)
    about_machine = machine()
    total = len(settings) * len(configurations) * planned_steps(args.start, args.max_cameras, args.resolution)
    progress = Progress(total, enabled=not args.no_progress)
    # Killed (`kill`, a CI timeout), the run unwinds as on Ctrl-C: the RTSP servers and the service it
    # started are stopped, not left running on the box.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="bk-capacity-") as work:
            plan = Plan(settings, configurations, target, args.start, args.max_cameras, args.resolution,
                        args.warmup, args.seconds, args.clip_seconds, args.per_server, args.cameras_per_stream,
                        cache, Path(work), extra)
            rows = run_plan(plan, progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    shown = argv[2:] if argv[:2] == ["bench", "capacity"] else argv
    command = "brightkitchen bench capacity " + " ".join(shown)
    report = {
        "machine": about_machine,
        "load_at_end": os.getloadavg(),
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "setup": {"fps": args.fps, "size": args.size, "streams": args.streams, "seconds": args.seconds,
                  "warmup": args.warmup, "cameras_per_stream": args.cameras_per_stream, "target": asdict(target),
                  "overrides": extra},
        "rows": [{**asdict(r), "max_cameras": r.max_cameras, "memory_per_camera_mb": r.memory_per_camera_mb(),
                  "floor_cameras": r.floor_cameras} for r in rows],
        "summary": summary(rows),
    }
    plot = Path(args.plot) if args.plot else None
    if plot is not None:
        write_plot(rows, plot, target, f"brightkitchen capacity on {about_machine['cpu']}, {about_machine['cores']} "
                   f"cores: {args.fps:g} analysed fps per camera")
    text = report_text(report, rows, target, command.strip())
    if args.write_results:
        write_results(Path(args.write_results), text, plot, args.scene)
    print(json.dumps(report, indent=2, default=str) if args.json else text)
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
