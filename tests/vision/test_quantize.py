"""Static int8 quantisation of the shipped detector: decode kept in fp32, cached by hash, accurate enough."""

from pathlib import Path

import numpy as np
import pytest

from models.cards import builtin_model_path
from models.synthetic import render_scene
from vision.compare import agreement
from vision.detector import YoloDetector
from vision.quantize import Calibration, ConversionError, cached_path, converted_model, decode_nodes, folder_calibration
from vision.runtime import ModelLoadError, plan_runtime

onnx = pytest.importorskip("onnx")
STARTER = builtin_model_path("kitchen-starter")


def frames(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_scene(rng, 640, 360)[0] for _ in range(n)]


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory) -> Path:
    calibration = Calibration("test-16", lambda: frames(1, 16))
    return converted_model(STARTER, "int8", tmp_path_factory.mktemp("cache"), calibration)


def test_decode_nodes_are_the_head_after_its_last_convolutions():
    names = decode_nodes(onnx.load(str(STARTER)))
    assert "/model.22/Concat_26" in names  # the final Concat of box pixels and class scores
    assert "/model.22/dfl/conv/Conv" in names  # the DFL's fixed-weight Conv belongs to the decode
    assert "/model.22/Sigmoid" in names
    assert not any(n.startswith("/model.22/cv2.") or n.startswith("/model.22/cv3.") for n in names)


def test_int8_is_quantised_except_the_decode(int8_file):
    model = onnx.load(str(int8_file))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    producers = {o: n for n in model.graph.node for o in n.output}
    final = producers[model.graph.output[0].name]
    assert final.op_type == "Concat"
    assert all(producers[i].op_type != "DequantizeLinear" for i in final.input)
    assert {p.key for p in model.metadata_props} >= {"names", "imgsz", "end2end"}


def test_int8_finds_what_fp32_finds(int8_file):
    reference = YoloDetector(STARTER, plan=plan_runtime("cpu", "fp32"), threads=1)
    quantised = YoloDetector(int8_file, plan=plan_runtime("cpu", "fp32"), threads=1)
    images = frames(7, 8)
    ref = reference.detect(images)
    out = quantised.detect(images)
    result = agreement(ref, out)
    assert result.reference > 10
    assert result.recall >= 0.8, f"int8 matched {result.matched} of {result.reference} fp32 detections"
    assert result.mean_iou > 0.85


def test_cache_hit_needs_no_calibration_and_a_new_source_makes_a_new_file(int8_file, tmp_path):
    calls = []

    def never():
        calls.append(1)
        return []

    again = converted_model(STARTER, "int8", int8_file.parent, Calibration("test-16", never))
    assert again == int8_file and calls == []
    changed = tmp_path / "kitchen-starter.onnx"
    changed.write_bytes(STARTER.read_bytes() + b"")  # same bytes: same key
    assert cached_path(changed, "int8", int8_file.parent, Calibration("test-16", never)).name == int8_file.name
    model = onnx.load(str(STARTER))
    model.metadata_props.add(key="note", value="retrained")
    onnx.save(model, str(changed))
    assert cached_path(changed, "int8", int8_file.parent, Calibration("test-16", never)) != int8_file
    assert cached_path(STARTER, "int8", int8_file.parent, Calibration("other-set", never)) != int8_file


def test_int8_through_the_detector_uses_the_cache(int8_file):
    calibration = Calibration("test-16", lambda: pytest.fail("calibrated again"))
    detector = YoloDetector(STARTER, plan=plan_runtime("cpu", "int8"), threads=1, cache_dir=int8_file.parent,
                            calibration=calibration)
    assert detector.loaded_path == int8_file
    assert detector.names[0] == "person"


def test_int8_without_calibration_images_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="int8 needs calibration images"):
        YoloDetector(STARTER, plan=plan_runtime("cpu", "int8"), cache_dir=tmp_path)
    with pytest.raises(ConversionError, match="not found"):
        folder_calibration(tmp_path / "nope")
    with pytest.raises(ConversionError, match="no images"):
        folder_calibration(tmp_path)


def test_folder_calibration_key_follows_the_images(tmp_path):
    import cv2

    for i, image in enumerate(frames(3, 2)):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), image)
    first = folder_calibration(tmp_path)
    assert len(list(first.images())) == 2
    cv2.imwrite(str(tmp_path / "0.jpg"), np.zeros((20, 20, 3), np.uint8))
    assert folder_calibration(tmp_path).key != first.key
