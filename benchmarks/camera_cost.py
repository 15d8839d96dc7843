"""What one camera costs before the detector: RTSP receive, keyframe decode and shrink, and the loopback server.

    python -m benchmarks.camera_cost --cameras 48 --seconds 20

N loopback RTSP cameras (by default the capacity benchmark's 1080p clip at 4 Mb/s with a 1 s GOP, the
mounts spread over its keyframes, --cameras-per-stream cameras to a mount as there) are read once per
mode, each time by a child process of N threads, and the CPU of the child and of the RTSP server is
measured over the same window:
- receive: RTSP over TCP and demuxing only with FFmpeg, with the reader's FFmpeg options (the baseline);
- reader-ffmpeg: `CameraReader` as the worker runs it (keyframes only at 1 analysed fps, shrink to 320
  px, BGR), with nobody taking its frames, reading the camera with FFmpeg (`receiver="ffmpeg"`);
- reader: the same with the built-in RTSP client, as the worker runs it by default.
The FFmpeg reader's cost less the receive's is what decoding and shrinking the analysed keyframes cost.
The server's CPU is the simulated cameras', which a real deployment does not have on the box.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av

from benchmarks.capacity import CAMERAS_PER_STREAM, Setting, machine, process_cpu_s, rtsp_servers
from benchmarks.worker_bench import make_clip
from streams.reader import CameraReader, live_options

MODES = ("receive", "reader-ffmpeg", "reader")
RECEIVERS = {"reader-ffmpeg": "ffmpeg", "reader": "builtin"}
OPEN_TIMEOUT_S = READ_TIMEOUT_S = 5.0


def receive(url: str, counts: dict[str, int], stop: threading.Event) -> None:
    """Demux one camera and drop its packets, counting them."""
    with av.open(url, options=live_options(READ_TIMEOUT_S), timeout=(OPEN_TIMEOUT_S, None)) as container:
        for packet in container.demux(container.streams.video[0]):
            if stop.is_set():
                return
            if packet.size:
                counts["received"] += 1
                counts["keyframes"] += packet.is_keyframe


def child(mode: str, urls: list[str], warmup_s: float, seconds: float) -> int:
    """Read every URL in its own thread; print one JSON line with this process's CPU over the window."""
    stop = threading.Event()
    if mode == "receive":
        counts = [{"received": 0, "keyframes": 0, "decoded": 0} for _ in urls]
        for url, c in zip(urls, counts, strict=True):
            threading.Thread(target=receive, args=(url, c, stop), daemon=True).start()

        def per_camera() -> list[dict[str, int]]:
            return [dict(c) for c in counts]
    else:
        readers = [CameraReader(f"cam-{i}", url, analysis_fps=1.0, frame_size=320, open_timeout_s=OPEN_TIMEOUT_S,
                                read_timeout_s=READ_TIMEOUT_S, receiver=RECEIVERS[mode]) for i, url in enumerate(urls)]
        for reader in readers:
            reader.start()

        def per_camera() -> list[dict[str, int]]:
            statuses = [r.status() for r in readers]
            return [{"received": s.frames_received, "keyframes": 0, "decoded": s.frames_decoded} for s in statuses]

    def totals() -> dict[str, int]:
        cameras = per_camera()
        return {key: sum(c[key] for c in cameras) for key in ("received", "keyframes", "decoded")}

    # The window starts once every camera streams and the backlog of its connection is read.
    deadline = time.monotonic() + 60
    while not all(c["received"] for c in per_camera()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(warmup_s)
    before, cpu0, t0 = totals(), time.process_time(), time.monotonic()
    print("MEASURE", flush=True)
    time.sleep(seconds)
    after, cpu1, t1 = totals(), time.process_time(), time.monotonic()
    stop.set()
    counted = {key: after[key] - before[key] for key in after}
    print(json.dumps({"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, **counted}), flush=True)
    if mode != "receive":
        for reader in readers:
            reader.stop(timeout_s=READ_TIMEOUT_S)
    return 0


def measure(mode: str, urls: list[str], server_pid: int, warmup_s: float, seconds: float) -> dict[str, Any]:
    """One mode in a child process -> its numbers per camera-second, with the server's over the same window."""
    command = [sys.executable, "-m", "benchmarks.camera_cost", "--child", mode, "--warmup", str(warmup_s),
               "--seconds", str(seconds), *urls]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        server0 = server1 = 0.0
        result: dict[str, Any] | None = None
        for line in process.stdout:
            if line.startswith("MEASURE"):
                server0 = process_cpu_s(server_pid)
            elif line.startswith("{"):
                server1 = process_cpu_s(server_pid)
                result = json.loads(line)
        if process.wait(timeout=60) != 0 or result is None:
            raise RuntimeError(f"the {mode} child failed (exit code {process.returncode})")
    camera_seconds = result["wall_s"] * len(urls)
    return {
        "mode": mode,
        "cameras": len(urls),
        "seconds": round(result["wall_s"], 1),
        "ms_per_camera_s": round(1000 * result["cpu_s"] / camera_seconds, 2),
        "server_ms_per_camera_s": round(1000 * (server1 - server0) / camera_seconds, 2),
        "packets_per_camera_s": round(result["received"] / camera_seconds, 2),
        "keyframes_decoded_per_camera_s": round(result["decoded"] / camera_seconds, 3),
        "received": result["received"],
        "keyframes": result["keyframes"],
        "decoded": result["decoded"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| mode | cameras | child CPU (ms per camera-second) | RTSP server CPU (ms per camera-second) "
             "| packets per camera-second | keyframes decoded per camera-second |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['cameras']} | {r['ms_per_camera_s']} | {r['server_ms_per_camera_s']} "
              f"| {r['packets_per_camera_s']} | {r['keyframes_decoded_per_camera_s']} |" for r in rows]
    by_mode = {r["mode"]: r for r in rows}
    if {"receive", "reader-ffmpeg"} <= by_mode.keys():
        extra = by_mode["reader-ffmpeg"]["ms_per_camera_s"] - by_mode["receive"]["ms_per_camera_s"]
        lines.append(f"\nDecoding and shrinking the analysed keyframes: {extra:.2f} ms per camera-second "
                     "(the FFmpeg reader less receive).")
    if {"reader-ffmpeg", "reader"} <= by_mode.keys():
        saved = by_mode["reader-ffmpeg"]["ms_per_camera_s"] - by_mode["reader"]["ms_per_camera_s"]
        lines.append(f"The built-in RTSP client saves {saved:.2f} ms per camera-second against FFmpeg's.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per mode")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--size", default="1920x1080", help="camera frame size")
    parser.add_argument("--bitrate", default="4M")
    parser.add_argument("--gop", type=int, default=25, help="keyframe interval in frames at 25 fps")
    parser.add_argument("--clip-seconds", type=float, default=40.0, help="length of the looped clip")
    parser.add_argument("--cameras-per-stream", type=int, default=CAMERAS_PER_STREAM,
                        help="cameras that read one mount of the loopback server, as in the capacity benchmark")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--cache", default="var/bench", help="where the rendered clip is kept")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("urls", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.urls, args.warmup, args.seconds)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes or args.cameras < 1 or args.seconds <= 0 or args.cameras_per_stream < 1:
        parser.error(f"need --cameras >= 1, --seconds > 0, --cameras-per-stream >= 1 and modes of "
                     f"{', '.join(MODES)} (unknown: {unknown})")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    setting = Setting.parse(f"{args.bitrate}/{args.gop}", args.size)
    clip = make_clip(cache, setting.width, setting.height, setting.bitrate, setting.gop, args.clip_seconds)
    report: dict[str, Any] = {"machine": machine(), "clip": clip.name, "rows": []}
    with rtsp_servers(clip, args.cameras, args.cameras, args.cameras_per_stream) as (urls, (server_pid,)):
        for mode in modes:
            report["rows"].append(measure(mode, urls, server_pid, args.warmup, args.seconds))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        m = report["machine"]
        print(f"{m['cpu']}, {m['cores']} cores, flags {', '.join(m['flags'])}; PyAV {m['av']}; clip {clip.name}\n")
        print(table(report["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
