"""The accuracy check of faster runtimes against fp32: on rendered frames always, on real photos when the
shared data is there."""

from pathlib import Path

import cv2
import pytest

from benchmarks import precision_check

REAL_PHOTOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gloves" / "valid" / "images"


@pytest.fixture
def calibration_dir(tmp_path):
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i, image in enumerate(precision_check.synthetic_images(4)):
        cv2.imwrite(str(folder / f"{i}.png"), image)
    return folder


def rows_of(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and "---" not in line and not line.startswith("| images"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0] + " / " + cells[1]] = cells
    return rows


def test_on_rendered_frames(capsys, calibration_dir, tmp_path):
    assert precision_check.main(["--synthetic", "3", "--calibration", str(calibration_dir),
                                 "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "machine: " in out and "load average" in out
    rows = rows_of(out)
    reference = rows["synthetic: rendered kitchen (3) / onnxruntime CPUExecutionProvider fp32, full square"]
    assert reference[4].startswith(reference[2]) and "(100.0%)" in reference[4]  # agrees with itself
    # The same runtime on the smallest canvas (how the service runs the starter model on 16:9 frames).
    rect = rows["synthetic: rendered kitchen (3) / onnxruntime CPUExecutionProvider fp32, smallest canvas"]
    assert float(rect[4].split("(")[1].rstrip("%)")) >= 80.0 and float(rect[7]) > 0.9  # matched, mean IoU
    int8 = rows["synthetic: rendered kitchen (3) / onnxruntime CPUExecutionProvider int8, full square"]
    assert int(int8[2]) == int(reference[2]) > 0
    assert any("OpenVINO CPU bf16" in name for name in rows)


@pytest.mark.skipif(not REAL_PHOTOS.is_dir(), reason=f"real photos not here ({REAL_PHOTOS}): ../shared/data absent")
def test_on_real_photos(capsys, calibration_dir, tmp_path):
    assert precision_check.main(["--images", str(REAL_PHOTOS), "--limit", "4", "--calibration",
                                 str(calibration_dir), "--cache-dir", str(tmp_path / "cache")]) == 0
    rows = rows_of(capsys.readouterr().out)
    names = [name for name in rows if name.startswith("real: gloves/valid (4)")]
    assert len(names) == 6
