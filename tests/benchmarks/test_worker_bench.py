"""The worker benchmark runs on a tiny setting and its numbers hang together (no timing thresholds)."""

import json

import pytest

from benchmarks.worker_bench import main


@pytest.mark.usefixtures("rtsp_server")  # skips (or fails on CI) when no RTSP server can run
def test_worker_benchmark_tiny_run(tmp_path, capsys):
    args = ["--cameras", "2", "--seconds", "4", "--warmup", "4", "--size", "640x360", "--bitrate", "1M",
            "--clip-seconds", "6", "--cache", str(tmp_path), "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]["cores"] >= 1 and report["setup"]["cameras"] == 2
    ours, baseline = report["results"]
    assert (ours["name"], baseline["name"]) == ("brightkitchen", "baseline")
    for r in (ours, baseline):
        assert r["cameras"] == 2 and r["seconds"] >= 4
        assert 0 < r["analysed_fps"] and 0 <= r["analysed_fps_per_camera_min"] <= r["analysed_fps"]
        assert r["cpu_per_camera"] > 0
        assert 0 < r["inference_ms_p50"] <= r["inference_ms_p95"]
    assert 1 <= ours["mean_batch"] <= 2 and baseline["mean_batch"] == 1
