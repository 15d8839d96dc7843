"""OpenVINO's runtime runs the same files as onnxruntime, with the same results in fp32."""

import numpy as np
import pytest

from models.cards import builtin_model_path
from models.synthetic import render_scene
from vision.compare import agreement
from vision.detector import YoloDetector
from vision.runtime import ModelLoadError, open_model, plan_runtime

pytest.importorskip("openvino")
STARTER = builtin_model_path("kitchen-starter")
OV_FP32 = plan_runtime("openvino", "fp32", openvino=True)
ORT_FP32 = plan_runtime("cpu", "fp32")


def test_fp32_outputs_equal_onnxruntime_on_a_tiny_model(make_detector_onnx):
    base = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    path = make_detector_onnx(base, shift=np.ones((6, 8), np.float32), metadata={"names": "{0: 'a', 1: 'b'}"})
    blob = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    ov_model, ort_model = open_model(path, OV_FP32, threads=1), open_model(path, ORT_FP32, threads=1)
    assert ov_model.metadata["names"] == "{0: 'a', 1: 'b'}"
    assert ov_model.input_shape == [None, 3, 64, 64]
    assert np.allclose(ov_model.run(blob), ort_model.run(blob), atol=1e-5)
    assert ov_model.providers[0].startswith("OpenVINO CPU")


def test_a_model_with_free_sides_runs_every_canvas_like_onnxruntime(make_detector_onnx):
    base = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    path = make_detector_onnx(base, size="side", shift=np.ones((6, 8), np.float32),
                              metadata={"names": "{0: 'a', 1: 'b'}", "imgsz": "[64, 64]"})
    ov_model, ort_model = open_model(path, OV_FP32, threads=1), open_model(path, ORT_FP32, threads=1)
    assert ov_model.input_shape == [None, 3, None, None]
    rng = np.random.default_rng(1)
    for shape in ((2, 3, 32, 64), (1, 3, 64, 64), (3, 3, 32, 64)):
        blob = rng.random(shape, dtype=np.float32)
        assert np.allclose(ov_model.run(blob), ort_model.run(blob), atol=1e-5), shape


def test_the_starter_detector_finds_the_same_on_openvino_fp32_and_bf16():
    rng = np.random.default_rng(5)
    images = [render_scene(rng, 640, 360)[0] for _ in range(6)]
    reference = YoloDetector(STARTER, plan=ORT_FP32, threads=1).detect(images)
    for precision, recall in (("fp32", 0.97), ("bf16", 0.85)):
        detector = YoloDetector(STARTER, plan=plan_runtime("openvino", precision, openvino=True), threads=1)
        assert detector.names[:2] == ["person", "head_hat"] and detector.input_size == 320
        result = agreement(reference, detector.detect(images))
        assert result.reference > 10
        assert result.recall >= recall and result.mean_iou > 0.9, (precision, result)


def test_a_broken_file_is_a_model_load_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not a model" * 20)
    with pytest.raises(ModelLoadError, match="broken.onnx"):
        open_model(broken, OV_FP32)
