"""The live view: time to first frame, server CPU per viewer (pass-through vs privacy mode vs a per-viewer
re-encoding baseline), and how many viewers one camera can serve on this machine.

    python -m benchmarks.live_bench                     # about 6 minutes
    python -m benchmarks.live_bench --viewers 1,4,16,32,64 --seconds 15 --browser-trials 5

One loopback RTSP camera (the demo kitchen scenario, 1280x720 H.264, 25 fps, 1 s GOP, its own process,
not counted) feeds the live view's API, run in a process of its own so that its CPU alone is measured
(/proc/PID/stat). Viewers are aiortc peers in this process; they count the complete frames they get
without decoding them (with --decode they decode, as browsers do, but then this 2-core box runs out of
CPU on the viewers' side first). Time to first frame is also measured in Debian's Chromium.

Modes:
- passthrough: the camera's H.264 goes out as it came in, one pull shared by all viewers;
- privacy: decode, blur faces (RetinaFace every `live.privacy_detect_every` frames), encode once per camera;
- baseline: what aiortc does by default (MediaPlayer + MediaRelay): decode once, encode once per viewer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.live_client import count_without_decoding, watch
from benchmarks.worker_bench import machine
from streams.rtsp_launcher import RtspServerProcess, free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SOURCE_FPS = 25
FULL_RATE = 0.95  # a viewer getting at least this share of the camera's frames keeps up


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# -- the server process ------------------------------------------------------------------------------


class RelayBaseline:
    """aiortc's usual way (MediaPlayer decoding the camera, MediaRelay to every viewer): each viewer's
    RTP sender encodes the decoded frames itself."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.player = None
        self.relay = None

    def subscribe(self, camera_id: str):  # noqa: ANN201 - an aiortc track
        from aiortc.contrib.media import MediaPlayer, MediaRelay

        if self.player is None:
            self.player = MediaPlayer(self.url, options={"rtsp_transport": "tcp"})
            self.relay = MediaRelay()
        return self.relay.subscribe(self.player.video)

    def status(self, camera_id: str) -> dict[str, Any]:
        return {"state": "live" if self.player else "idle", "mode": "baseline", "last_error": None}

    def close(self) -> None:
        if self.player is not None and self.player.video is not None:
            self.player.video.stop()


def serve(mode: str, url: str, port: int) -> None:
    import uvicorn

    from api.app import AppContext, create_app
    from brightkitchen.bus import InProcessBus
    from brightkitchen.config import LiveConfig, parse_config
    from brightkitchen.snapshots import SnapshotStore
    from brightkitchen.store import EventStore
    from streams.live import FeedOptions, LiveCamera, LiveVideo, face_detector

    folder = Path(tempfile.mkdtemp(prefix="live-bench-"))
    settings = LiveConfig(max_viewers_per_camera=1000, ice_addresses=["127.0.0.1"])
    if mode == "baseline":
        source: Any = RelayBaseline(url)
    else:
        config = parse_config({"sites": [{"id": "s"}], "models": [{"name": "m", "path": "m.onnx"}]}, "bench",
                              folder, environ={})
        privacy = "blur_faces" if mode == "privacy" else "none"
        source = LiveVideo([LiveCamera("cam", "s", url, privacy)], FeedOptions(idle_close_s=0),
                           face_detector=face_detector(config), bitrate_kbps=settings.privacy_bitrate_kbps,
                           detect_every=settings.privacy_detect_every)
    cameras = [{"id": "cam", "name": "cam", "site": "s", "url": url, "connected": True}]
    ctx = AppContext(store=EventStore(f"sqlite:///{folder}/events.db"), snapshots=SnapshotStore(folder / "snapshots"),
                     bus=InProcessBus(), camera_status=lambda: cameras, live=source, live_settings=settings)
    uvicorn.run(create_app(ctx), host="127.0.0.1", port=port, log_level="warning")


class ServerProcess:
    def __init__(self, mode: str, url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks.live_bench", "--serve", mode,
                                         "--camera", url, "--port", str(self.port)])
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {mode} server did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- measurements ------------------------------------------------------------------------------------


@dataclass
class Step:
    mode: str
    viewers: int
    server_cpu: float  # cores, over the measured window
    client_cpu: float
    fps_min: float  # frames per second of camera time (RTP clock) the slowest viewer received
    fps_mean: float
    wall_fps_mean: float  # frames per second of wall-clock time
    first_frame_s_p50: float | None


async def measure(server: ServerProcess, mode: str, viewers: int, seconds: float, warmup: float) -> Step:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        opened = [await watch(server.url, "cam", client=client) for _ in range(viewers)]
    try:
        deadline = time.monotonic() + 30
        while min(v.frames for v in opened) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(warmup)
        frames0 = [v.frames for v in opened]
        pts0 = [v.last_pts for v in opened]
        cpu0, own0, t0 = cpu_seconds(server.process.pid), time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu = (cpu_seconds(server.process.pid) - cpu0) / elapsed
        own = (time.process_time() - own0) / elapsed
        # Frames per second of the camera's own time: bursts and a viewer catching up do not count twice.
        fps = [(v.frames - f0) / max(1e-6, (v.last_pts - p0) / 90_000) if v.last_pts and p0 else 0.0
               for v, f0, p0 in zip(opened, frames0, pts0, strict=True)]
        wall = [(v.frames - f0) / elapsed for v, f0 in zip(opened, frames0, strict=True)]
        firsts = [v.first_frame_s for v in opened if v.first_frame_s is not None]
        first_p50 = round(statistics.median(firsts), 2) if firsts else None
        return Step(mode, viewers, round(cpu, 3), round(own, 3), round(min(fps), 1),
                    round(statistics.mean(fps), 1), round(statistics.mean(wall), 1), first_p50)
    finally:
        for v in opened:
            await v.close()
        await asyncio.sleep(2)  # let the server end the sessions before the next step


def browser_first_frames(server: ServerProcess, trials: int) -> list[float]:
    """Time from the live page's start to its first presented frame (requestVideoFrameCallback), in Chromium."""
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM, LAUNCH_ARGS

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        for _ in range(trials):
            page = browser.new_page()
            page.goto(server.url + "/live/cam")
            page.wait_for_function("window.livePlayer.stats.firstFrameMs !== null", timeout=60_000)
            times.append(page.evaluate("window.livePlayer.stats.firstFrameMs") / 1000)
            page.close()
            time.sleep(2)
    return times


def make_clip(folder: Path, width: int, height: int, seconds: float, bitrate: str) -> Path:
    from models.synthetic import DemoScene, render_demo_frames
    from streams.testclip import encode_h264

    path = folder / f"demo-{width}x{height}-{bitrate}.h264"
    if not path.exists():
        frames = render_demo_frames(seconds, SOURCE_FPS, DemoScene(width, height))
        encode_h264(frames, path, fps=SOURCE_FPS, gop=SOURCE_FPS, bitrate=bitrate)
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    from api.live import offer_only

    offer_only(["127.0.0.1"])  # the viewers here talk to the server on loopback only, like the server
    if not args.decode:
        count_without_decoding()
    folder = Path(args.work_dir or tempfile.mkdtemp(prefix="live-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    clip = make_clip(folder, args.width, args.height, args.clip_seconds, args.bitrate)
    camera = RtspServerProcess({"/cam": clip}).start()
    steps: list[Step] = []
    browser: dict[str, list[float]] = {}
    load_before = os.getloadavg()
    try:
        for mode in args.modes.split(","):
            server = ServerProcess(mode, camera.url("/cam"))
            try:
                idle0 = cpu_seconds(server.process.pid)
                time.sleep(3)
                idle = (cpu_seconds(server.process.pid) - idle0) / 3
                print(f"{mode}: idle server {idle:.3f} cores", flush=True)
                for n in [int(v) for v in args.viewers.split(",")]:
                    if mode == "baseline" and n > args.baseline_max:
                        continue
                    step = asyncio.run(measure(server, mode, n, args.seconds, args.warmup))
                    steps.append(step)
                    print(json.dumps(asdict(step)), flush=True)
                if args.browser_trials and mode != "baseline":
                    browser[mode] = [round(t, 2) for t in browser_first_frames(server, args.browser_trials)]
                    print(f"{mode}: Chromium first frame {browser[mode]} s", flush=True)
            finally:
                server.stop()
    finally:
        camera.stop()
    return {
        "machine": machine(),
        "python": platform.python_version(),
        "setup": {"width": args.width, "height": args.height, "fps": SOURCE_FPS, "gop": SOURCE_FPS,
                  "bitrate": args.bitrate, "seconds_per_step": args.seconds, "viewers_decode": args.decode},
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "steps": [asdict(s) for s in steps],
        "browser_first_frame_s": browser,
    }


def per_viewer(steps: list[dict[str, Any]], mode: str) -> tuple[float, float] | None:
    """(CPU of the first viewer, CPU of each further viewer) from a least-squares line over the steps in
    which every viewer got the camera's full frame rate (a saturated step says nothing about cost)."""
    points = [(s["viewers"], s["server_cpu"]) for s in steps
              if s["mode"] == mode and s["fps_min"] >= FULL_RATE * SOURCE_FPS]
    if len(points) < 2:
        return None
    xs, ys = zip(*points, strict=True)
    slope = statistics.linear_regression(xs, ys).slope
    intercept = statistics.linear_regression(xs, ys).intercept
    return intercept + slope, slope


def summary(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores; load before {report['load_before']}, after {report['load_after']}")
    print("| mode | viewers | server CPU (cores) | slowest viewer fps | mean fps | wall-clock fps | "
          "first frame p50 (s, aiortc) |")
    print("|---|---|---|---|---|---|---|")
    for s in report["steps"]:
        print(f"| {s['mode']} | {s['viewers']} | {s['server_cpu']:.3f} | {s['fps_min']} | {s['fps_mean']} | "
              f"{s['wall_fps_mean']} | {s['first_frame_s_p50']} |")
    for mode in ("passthrough", "privacy", "baseline"):
        full = [s["viewers"] for s in report["steps"] if s["mode"] == mode and s["fps_min"] >= FULL_RATE * SOURCE_FPS]
        if full:
            print(f"{mode}: most viewers measured with every one at full frame rate: {max(full)}")
        fit = per_viewer(report["steps"], mode)
        if fit:
            first, each = fit
            if each <= 0:
                print(f"{mode}: first viewer {first:.3f} cores; further viewers cost less than the noise")
                continue
            capacity = (m["cores"] * 0.8 - first) / each + 1
            print(f"{mode}: first viewer {first:.3f} cores, each further viewer {each:.4f} cores "
                  f"-> about {capacity:.0f} viewers in 80% of {m['cores']} cores (server side only)")
    for mode, times in report["browser_first_frame_s"].items():
        print(f"{mode}: Chromium time to first frame p50 {statistics.median(times):.2f} s, max {max(times):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="passthrough,privacy,baseline")
    parser.add_argument("--viewers", default="1,4,16,32")
    parser.add_argument("--baseline-max", type=int, default=4, help="the baseline costs a lot: at most this many")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured window per step")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--bitrate", default="2M")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--decode", action="store_true",
                        help="viewers decode what they get (as browsers do); costs this machine's CPU")
    parser.add_argument("--browser-trials", type=int, default=5)
    parser.add_argument("--work-dir", default=None, help="keeps the rendered clip between runs")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--summary", default=None, help="only print the summary of a report written by --json")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--camera", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.camera, args.port)
        return
    if args.summary:
        summary(json.loads(Path(args.summary).read_text()))
        return
    report = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    summary(report)


if __name__ == "__main__":
    main()
