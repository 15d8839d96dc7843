"""The camera-cost benchmark runs on a tiny setting and its counts agree with each other (no timing thresholds)."""

import json

import pytest

from benchmarks.camera_cost import main, table


@pytest.mark.usefixtures("rtsp_server")  # skips (or fails on CI) when no RTSP server can run
def test_camera_cost_tiny_run(tmp_path, capsys):
    args = ["--cameras", "2", "--seconds", "3", "--warmup", "1", "--size", "640x360", "--bitrate", "1M",
            "--gop", "25", "--clip-seconds", "4", "--cache", str(tmp_path), "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]["cores"] >= 1
    rows = {r["mode"]: r for r in report["rows"]}
    assert list(rows) == ["receive", "reader-ffmpeg", "reader"]
    for row in rows.values():
        assert row["cameras"] == 2 and row["seconds"] >= 3
        assert row["received"] > 0 and row["ms_per_camera_s"] > 0 and row["server_ms_per_camera_s"] > 0
    # Receiving decodes nothing; both readers decode keyframes only (GOP 25 at 1 analysed fps), so fewer
    # frames than they received, and at least one per camera in 3 s.
    assert rows["receive"]["decoded"] == 0 and rows["receive"]["keyframes"] > 0
    for mode in ("reader-ffmpeg", "reader"):
        assert 2 <= rows[mode]["decoded"] < rows[mode]["received"]
    text = table(report["rows"])
    assert "the FFmpeg reader less receive" in text and "The built-in RTSP client saves" in text


def test_camera_cost_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["--modes", "decode-everything"])
    assert "unknown: ['decode-everything']" in capsys.readouterr().err
