"""The capacity benchmark runs on a tiny setting and its counts agree with each other (no timing thresholds)."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import cv2
import pytest

from benchmarks.capacity import (
    CPU_PARTS,
    RESULTS_BEGIN,
    RESULTS_END,
    Row,
    Step,
    bench_config,
    configuration,
    consistency,
    main,
    process_cpu_s,
    process_rss_mb,
    process_tree,
    ramp,
    rtsp_servers,
    tree_cpu_s,
    tree_rss_mb,
    write_results,
)
from brightkitchen.config import parse_config
from streams.worker import build_rule
from tests.streams.test_reader_rtsp_server import read_packets


@pytest.mark.usefixtures("rtsp_server")  # skips (or fails on CI) when no RTSP server can run
def test_capacity_benchmark_tiny_run(tmp_path, capsys):
    results, plot = tmp_path / "RESULTS.md", tmp_path / "capacity.png"
    results.write_text("# Benchmark results\n\n## Another benchmark\n\nits numbers\n")
    # The clip's first violations complete their dwell about 7 s into it: the step must see that far.
    args = ["--configs", "naive,fp32,fp32-all-frames,int8,openvino", "--streams", "1M/25", "--size", "640x360",
            "--start", "2", "--max-cameras", "2", "--seconds", "6", "--warmup", "3", "--clip-seconds", "10",
            "--cache", str(tmp_path), "--plot", str(plot), "--write-results", str(results), "--json",
            "--no-progress"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    rows = {r["configuration"]: r for r in report["rows"]}
    assert list(rows) == ["naive", "fp32", "fp32-all-frames", "int8", "openvino"]

    # Configurations the service cannot run yet say so instead of running something else.
    for name in ("int8", "openvino"):
        if not rows[name]["available"]:
            assert rows[name]["note"].startswith("not available") and not rows[name]["steps"]

    ran = [r for r in rows.values() if r["available"]]
    assert {"naive", "fp32", "fp32-all-frames"} <= {r["configuration"] for r in ran}
    for row in ran:
        # --start 2 --max-cameras 2: one step at 2 cameras, and one at 1 if that failed (a busy box)
        counts = [s["cameras"] for s in row["steps"]]
        assert counts in ([2], [1, 2])
        step = row["steps"][-1]
        assert step["seconds"] >= 5
        assert 0 <= step["fps_min"] <= step["fps_mean"] <= step["fps_max"] and step["received_fps_min"] > 0
        assert step["service_cpu"] > 0 and step["server_cpu"] > 0 and step["rss_mb"] > 0
        assert step["other_cpu"] >= 0 and step["bench_cpu"] >= 0
        assert row["max_cameras"] == max([s["cameras"] for s in row["steps"] if s["passed"]], default=0)
        assert step["passed"] == (not step["problems"]) and (len(counts) == 1) == step["passed"]
        if row["configuration"] == "naive":
            assert step["decode_modes"] == {"all_frames": 2} and step["latency_p95_s"] is None
            assert step["bus_latency_p95_s"] is None
            continue
        # Frames: the worker's = the API's metrics, readers' = analysed + stale + replaced;
        # events: published = stored = streamed by the API.
        assert step["consistency"] == []
        assert step["events_published"] == step["events_stored"] == step["events_streamed"] > 0
        # The service's CPU by part, measured inside it, adds up to what this side measured from outside.
        parts = step["cpu_ms_per_camera"]
        assert list(parts) == list(CPU_PARTS) and min(parts.values()) >= 0
        assert parts["readers"] > 0 and parts["inference processes"] > 0 and parts["worker loop"] > 0
        outside = 1000 * step["service_cpu"] / step["cameras"]
        assert sum(parts.values()) == pytest.approx(outside, rel=0.2, abs=2.0)
        if step["latency_events"]:
            assert 0 < step["latency_p50_s"] <= step["latency_p95_s"]
            assert step["bus_latency_p95_s"] > 0  # the worker's part of it, measured inside the service
    # What decoding and detection alone cost, and how many cameras they would fill the box with.
    assert rows["naive"]["floor_ms_per_camera"] == {} and rows["naive"]["floor_cameras"] is None
    for row in ran:
        if row["configuration"] == "naive":
            continue
        decode = "decode of every frame" if row["configuration"].endswith("-all-frames") else "keyframe decode"
        floor = row["floor_ms_per_camera"]
        assert list(floor) == [decode, "detector"] and min(floor.values()) > 0
        assert row["floor_cameras"] == int(report["machine"]["cores"] * 1000 / sum(floor.values()))
    # Decoding 25 frames a second costs more than decoding one keyframe; the detector is the same.
    keyframes, every_frame = rows["fp32"]["floor_ms_per_camera"], rows["fp32-all-frames"]["floor_ms_per_camera"]
    assert every_frame["decode of every frame"] > keyframes["keyframe decode"]
    assert every_frame["detector"] == pytest.approx(keyframes["detector"], rel=0.5)
    assert "Decoding and detection alone" in results.read_text()
    assert rows["fp32"]["steps"][-1]["decode_modes"] == {"keyframes": 2}
    # What ran the model comes from the service's own API (the naive design names its session's provider).
    assert rows["fp32"]["steps"][-1]["runtime"].startswith("onnxruntime CPUExecutionProvider fp32 in ")
    assert rows["naive"]["steps"][-1]["runtime"].startswith("CPUExecutionProvider fp32 640 px")
    assert rows["fp32-all-frames"]["steps"][-1]["decode_modes"] == {"all_frames": 2}

    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n## Another benchmark\n\nits numbers\n")
    assert text.count(RESULTS_BEGIN.format("")) == 1 and text.count(RESULTS_END.format("")) == 1
    assert "| naive | 360p 1Mb/s GOP 1 s |" in text and report["machine"]["cpu"] in text
    image = cv2.imread(str(plot))
    assert image is not None and image.shape[0] > 100


@pytest.mark.usefixtures("rtsp_server")  # skips (or fails on CI) when no RTSP server can run
def test_cameras_share_mounts_each_over_its_own_connection(h264_clip):
    with rtsp_servers(h264_clip, 5, per_server=2, per_stream=2) as (urls, pids):
        assert len(urls) == 5 and len(set(pids)) == 2  # 3 mounts, at most 2 per server process
        assert len(set(urls)) == 3 and urls[0] == urls[3]
        with ThreadPoolExecutor(2) as pool:  # two cameras of one mount at once: each gets the whole stream
            both = list(pool.map(lambda url: read_packets(url, 30), [urls[0], urls[3]]))
    for packets in both:
        pts = [p.pts for p in packets]
        assert len(pts) == 30 and all(b - a == 3600 for a, b in zip(pts, pts[1:], strict=False))
    with pytest.raises(ValueError, match="at least 1"), rtsp_servers(h264_clip, 2, 2, per_stream=0):
        pass


def test_results_section_is_replaced_not_repeated(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nkept\n")
    write_results(results, "first run", None)
    write_results(results, "still kitchen", None, "after-hours")
    write_results(results, "second run", None)
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nkept\n")
    assert "second run" in text and "first run" not in text and text.count(RESULTS_BEGIN.format("")) == 1
    assert "still kitchen" in text and "after hours (an empty kitchen)" in text


@pytest.mark.parametrize(("limit", "resolution", "best", "counts"), [
    (37, 8, 32, [8, 16, 32, 40, 48, 64]),
    (37, 4, 36, [8, 16, 32, 36, 40, 48, 64]),
    (3, 8, 3, [2, 3, 4, 8]),
    (500, 8, 160, [8, 16, 32, 64, 128, 160]),
    (0, 8, 0, [1, 2, 4, 8]),
])
def test_ramp_doubles_then_bisects(limit, resolution, best, counts):
    def run(n: int) -> Step:
        return Step(n, n <= limit, [] if n <= limit else ["too many"])

    steps = ramp(run, 8, 160, resolution)
    row = Row("x", "", "s", steps=steps)
    assert [s.cameras for s in steps] == counts and row.max_cameras == best


def test_consistency_flags_counts_that_disagree():
    class Stream:
        received = [(0.0, {})] * 3

    drained = {"frames_analysed": {"cam-000": 10}, "events_published": 3, "events_stored": 3}
    metrics = ('brightkitchen_frames_analysed_total{camera="cam-000"} 10.0\n'
               'brightkitchen_events_stored_total{phase="open"} 2.0\n'
               'brightkitchen_events_stored_total{phase="closed"} 1.0\n')
    cameras = [{"id": "cam-000", "frames_analysed": 13, "frames_dropped_stale": 2, "frames_replaced": 1}]
    assert consistency(drained, {"metrics": metrics, "cameras": cameras}, Stream()) == []
    lost = [{**cameras[0], "frames_analysed": 15}]
    assert "reader delivered 15 frames" in consistency(drained, {"metrics": metrics, "cameras": lost}, Stream())[0]
    fewer = metrics.replace('{phase="closed"} 1.0', '{phase="closed"} 0.0')
    assert "events: published 3" in consistency(drained, {"metrics": fewer, "cameras": cameras}, Stream())[0]


def test_configurations_are_config_overrides():
    assert configuration("fp32").model == {"provider": "cpu", "precision": "fp32"}
    assert configuration("int8-all-frames").camera == {"decode": "all_frames"}
    assert configuration("naive").naive
    with pytest.raises(ValueError, match="unknown configuration"):
        configuration("fp64")
    with pytest.raises(ValueError, match="naive design always decodes every frame"):
        configuration("naive-all-frames")


@pytest.mark.parametrize(("scene", "in_schedule"), [
    ("busy", {"no_hat", "no_mask", "smoking", "rodent", "bare_hand_food", "phone"}),
    ("after-hours", {"rodent_after_hours"}),
])
def test_each_scene_runs_its_own_hours_whatever_the_time_of_day(tmp_path, scene, in_schedule):
    plan = SimpleNamespace(extra={}, target=SimpleNamespace(fps=1.0))
    data = bench_config(["rtsp://127.0.0.1:8554/cam0"], tmp_path, plan, configuration("openvino"), 8000,
                        scene=scene)
    config = parse_config(data, "capacity benchmark", tmp_path, environ={})
    site, camera = next(iter(config.cameras()))
    rules = [build_rule(r, site, camera) for r in config.rules_for(camera)]
    for later_s in (0, 1800, 3600):  # a step builds its config as it starts, and runs for minutes
        t = time.time() + later_s
        assert {r.name for r in rules if r.schedule is None or r.schedule.is_active(t)} == in_schedule


def test_service_cpu_and_memory_count_its_child_processes():
    """Inference processes are children of the service: their CPU and memory are the service's."""
    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while len(process_tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = process_tree(parent.pid)
        assert len(tree) == 2 and tree[0] == parent.pid
        assert tree_rss_mb(parent.pid) > process_rss_mb(parent.pid) > 0
        assert tree_cpu_s(parent.pid) >= process_cpu_s(parent.pid)
    finally:
        for pid in reversed(process_tree(parent.pid)):
            os.kill(pid, signal.SIGKILL)
        parent.wait(10)


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it ended meanwhile
        return b""


def alive(pid: int) -> bool:
    """Running, not a zombie left for a parent (or an init) that does not reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.usefixtures("rtsp_server")
def test_a_killed_benchmark_stops_the_servers_and_service_it_started(tmp_path, wait_until):
    args = ["--configs", "fp32", "--streams", "1M/25", "--size", "640x360", "--start", "1", "--max-cameras", "1",
            "--seconds", "60", "--warmup", "60", "--clip-seconds", "4", "--cache", str(tmp_path), "--no-progress"]
    bench = subprocess.Popen([sys.executable, "-m", "benchmarks.capacity", *args], stdout=subprocess.DEVNULL)
    started: list[int] = []
    try:
        def service_started() -> bool:
            started[:] = process_tree(bench.pid)[1:]
            commands = [command_line(pid) for pid in started if alive(pid)]
            return any(b"--child-service" in c for c in commands) and any(b"rtsp_server" in c for c in commands)

        wait_until(service_started, timeout_s=120, what="the benchmark's RTSP server and service")
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(60) == 128 + signal.SIGTERM
        wait_until(lambda: not any(map(alive, started)), timeout_s=30, what="the servers and service to stop")
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
