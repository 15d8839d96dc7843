"""Worker throughput on N loopback RTSP cameras, against a naive baseline measured in the same run.

    python -m benchmarks.worker_bench --cameras 8 --seconds 60

brightkitchen: keyframe-only decode when the analysis rate allows, colour conversion only for analysed
frames at model size, one batched detector call for all cameras, rules and events.
baseline: per camera, decode every frame and convert every frame to BGR at full size, and run the same
model on one frame at a time (no batching) at the same analysis rate.

Both read the same clip from the same RTSP server; the server runs in its own process and is not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from benchmarks.capacity import process_cpu_s
from brightkitchen.bus import InProcessBus
from brightkitchen.config import parse_config
from brightkitchen.demo import demo_config
from brightkitchen.snapshots import SnapshotStore
from streams.detectors import LoadedModel, load_models
from streams.inference import InferencePool
from streams.rtsp_launcher import RtspServerProcess
from streams.worker import Worker


@dataclass
class RunResult:
    name: str
    cameras: int
    seconds: float
    analysed_fps: float
    analysed_fps_per_camera_min: float
    cpu_per_camera: float  # fraction of one core
    inference_ms_p50: float
    inference_ms_p95: float
    mean_batch: float
    event_latency_ms_p50: float | None
    event_latency_ms_p95: float | None
    events: int


def machine() -> dict[str, object]:
    """The machine the numbers were measured on (the capacity benchmark's description of it)."""
    from benchmarks.capacity import machine as describe

    return describe()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def make_clip(cache: Path, width: int, height: int, bitrate: str, gop: int, seconds: float,
              scene: str = "busy") -> Path:
    """A kitchen at the camera size, encoded like a camera (fixed GOP, no B-frames): the demo scenario
    ("busy": people at work the whole time), or "after-hours": the empty kitchen, still but for a rodent
    crossing it for 6 s of every 20."""
    from streams.testclip import encode_h264

    if scene == "busy":
        from models.synthetic import DemoScene, render_demo_frames

        path = cache / f"bench-{width}x{height}-{bitrate}-gop{gop}-{seconds:g}s.h264"
        frames = render_demo_frames(seconds, 25, DemoScene(width, height))
    elif scene == "after-hours":
        from models.after_hours import AfterHoursScene, render_after_hours_frames

        path = cache / f"bench-after-hours-{width}x{height}-{bitrate}-gop{gop}-{seconds:g}s.h264"
        frames = render_after_hours_frames(seconds, 25, AfterHoursScene(width, height, period_s=20.0))
    else:
        raise ValueError(f"unknown scene {scene!r}: busy or after-hours")
    if not path.exists():
        encode_h264(frames, path, fps=25, gop=gop, bitrate=bitrate)
    return path


def bench_config(urls: list[str], data_dir: Path, fps: float):
    """The demo's rules and model on N cameras."""
    base = demo_config(data_dir, urls[0]).model_dump(mode="json")
    template = base["sites"][0]["cameras"][0]
    base["sites"][0]["cameras"] = [
        {**template, "id": f"cam-{i:03d}", "name": f"cam {i}", "url": url, "analysis_fps": fps}
        for i, url in enumerate(urls)
    ]
    return parse_config(base, "benchmark config", data_dir, environ={})


class CpuClock:
    """Wall and CPU seconds of this process plus the inference processes of the models it runs."""

    def __init__(self, models: list[LoadedModel]) -> None:
        self.pids = [pid for m in models if isinstance(m.detector, InferencePool) for pid in m.detector.pids() if pid]
        self.wall = time.monotonic()
        self.cpu = self._cpu()

    def _cpu(self) -> float:
        return time.process_time() + sum(process_cpu_s(pid) for pid in self.pids)

    def since(self) -> tuple[float, float]:
        return time.monotonic() - self.wall, self._cpu() - self.cpu


def run_brightkitchen(urls: list[str], models: dict[str, LoadedModel], fps: float, warmup: float,
                      seconds: float) -> RunResult:
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(urls, Path(tmp), fps)
        bus = InProcessBus()
        drained = threading.Event()

        def drain() -> None:  # stands in for the API's consumer so the bus never fills
            while not drained.is_set():
                bus.receive(0.2)

        threading.Thread(target=drain, daemon=True).start()
        worker = Worker(config, bus, SnapshotStore(Path(tmp) / "snapshots"), models=models)
        worker.start()
        time.sleep(warmup)
        frames0 = dict(worker.stats.frames_analysed)
        inference0, latency0 = len(worker.stats.inference_s), len(worker.stats.event_latency_s)
        batches0, events0 = len(worker.stats.batch_sizes), worker.stats.events_published
        clock = CpuClock(list(models.values()))
        time.sleep(seconds)
        wall, cpu = clock.since()
        per_camera = [
            (worker.stats.frames_analysed.get(c, 0) - frames0.get(c, 0)) / wall
            for c in (cam.id for _, cam in config.cameras())
        ]
        inference = list(worker.stats.inference_s)[inference0:]
        latency = list(worker.stats.event_latency_s)[latency0:]
        batches = list(worker.stats.batch_sizes)[batches0:]
        events = worker.stats.events_published - events0
        worker.stop()
        drained.set()
    return RunResult(
        name="brightkitchen",
        cameras=len(urls),
        seconds=round(wall, 1),
        analysed_fps=round(sum(per_camera), 2),
        analysed_fps_per_camera_min=round(min(per_camera), 2),
        cpu_per_camera=round(cpu / wall / len(urls), 4),
        inference_ms_p50=round(percentile(inference, 50) * 1000, 1),
        inference_ms_p95=round(percentile(inference, 95) * 1000, 1),
        mean_batch=round(statistics.fmean(batches), 2) if batches else 0.0,
        event_latency_ms_p50=round(percentile(latency, 50) * 1000, 1) if latency else None,
        event_latency_ms_p95=round(percentile(latency, 95) * 1000, 1) if latency else None,
        events=events,
    )


class NaiveCamera(threading.Thread):
    """Decode and convert every frame; run the model on one frame when due."""

    def __init__(self, url: str, model: LoadedModel, fps: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.model, self.interval, self.stop_event = url, model, 1.0 / fps, stop
        self.analysed: list[float] = []
        self.inference: list[float] = []
        self.decoded = 0  # frames decoded (and converted): keeping up with the stream means its frame rate

    def run(self) -> None:
        options = {"rtsp_transport": "tcp", "timeout": "5000000"}
        with av.open(self.url, options=options, timeout=(5.0, 5.0)) as container:
            next_due = time.monotonic()
            for frame in container.decode(video=0):
                if self.stop_event.is_set():
                    return
                image = frame.to_ndarray(format="bgr24")
                self.decoded += 1
                if time.monotonic() >= next_due:
                    next_due += self.interval
                    t0 = time.perf_counter()
                    self.model.detector.detect([image])
                    self.inference.append(time.perf_counter() - t0)
                    self.analysed.append(time.monotonic())


def run_baseline(urls: list[str], model: LoadedModel, fps: float, warmup: float, seconds: float) -> RunResult:
    stop = threading.Event()
    cams = [NaiveCamera(url, model, fps, stop) for url in urls]
    for c in cams:
        c.start()
    time.sleep(warmup)
    start = time.monotonic()
    inference0 = [len(c.inference) for c in cams]
    clock = CpuClock([model])
    time.sleep(seconds)
    wall, cpu = clock.since()
    end = time.monotonic()
    stop.set()
    for c in cams:
        c.join(timeout=10)
    per_camera = [sum(1 for t in c.analysed if start <= t < end) / wall for c in cams]
    inference = [x for c, i0 in zip(cams, inference0, strict=True) for x in c.inference[i0:]]
    return RunResult(
        name="baseline",
        cameras=len(urls),
        seconds=round(wall, 1),
        analysed_fps=round(sum(per_camera), 2),
        analysed_fps_per_camera_min=round(min(per_camera), 2),
        cpu_per_camera=round(cpu / wall / len(urls), 4),
        inference_ms_p50=round(percentile(inference, 50) * 1000, 1),
        inference_ms_p95=round(percentile(inference, 95) * 1000, 1),
        mean_batch=1.0,
        event_latency_ms_p50=None,
        event_latency_ms_p95=None,
        events=0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--fps", type=float, default=1.0, help="analysis rate per camera")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--bitrate", default="4M")
    parser.add_argument("--gop", type=int, default=25)
    parser.add_argument("--clip-seconds", type=float, default=40.0, help="length of the looped clip")
    parser.add_argument("--cache", default="var/bench", help="where rendered clips are kept")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    width, height = (int(v) for v in args.size.lower().split("x"))
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    clip = make_clip(cache, width, height, args.bitrate, args.gop, args.clip_seconds)
    mounts = {f"/cam-{i:03d}": clip for i in range(args.cameras)}
    results: list[RunResult] = []
    with RtspServerProcess(mounts) as server:
        urls = [server.url(m) for m in mounts]
        with tempfile.TemporaryDirectory() as tmp:
            models = load_models(bench_config(urls, Path(tmp), args.fps))
        results.append(run_brightkitchen(urls, models, args.fps, args.warmup, args.seconds))
        if not args.skip_baseline:
            results.append(run_baseline(urls, next(iter(models.values())), args.fps, args.warmup, args.seconds))
    report = {
        "machine": machine(),
        "setup": {"cameras": args.cameras, "fps": args.fps, "size": args.size, "bitrate": args.bitrate,
                  "gop": args.gop, "seconds": args.seconds},
        "results": [asdict(r) for r in results],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


def print_table(report: dict) -> None:
    m, s = report["machine"], report["setup"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags'])}, onnxruntime {m['onnxruntime']}")
    print(f"setup: {s['cameras']} cameras {s['size']} {s['bitrate']}b/s GOP {s['gop']}, {s['fps']} analysed fps each,"
          f" {s['seconds']} s measured")
    cols = ["name", "analysed_fps", "analysed_fps_per_camera_min", "cpu_per_camera", "inference_ms_p50",
            "inference_ms_p95", "mean_batch", "event_latency_ms_p50", "event_latency_ms_p95", "events"]
    print(" | ".join(cols))
    for r in report["results"]:
        print(" | ".join(str(r[c]) for c in cols))


if __name__ == "__main__":
    raise SystemExit(main())
