"""RetinaFace decoding with a known answer, and the packaged RetinaFace model on real and rendered faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.cards import builtin_model_path, find_card
from models.measure_faces import rendered_faces
from vision.faces import RetinaFaceDetector, decode_boxes, priors
from vision.nms import box_iou
from vision.runtime import ModelLoadError

GLOVES = Path(__file__).resolve().parents[3] / "shared" / "data" / "gloves"
# A real photo (gloves valid split, 640x480) of a worker in a hard hat: measured one face, score 0.999, at
# (317, 66, 441, 195).
WORKER_PHOTO = "valid/images/ppe_0072_jpg.rf.0f5c68674a6819adb84f0933e9cd55d1.jpg"


def test_priors_cover_every_cell_of_the_three_strides() -> None:
    p = priors(640)
    assert p.shape == (80 * 80 * 2 + 40 * 40 * 2 + 20 * 20 * 2, 4)
    # First cell of stride 8: centre (4, 4), sides 16 then 32; the first prior of stride 16 follows stride 8's.
    np.testing.assert_array_equal(p[:2], [[4, 4, 16, 16], [4, 4, 32, 32]])
    np.testing.assert_array_equal(p[2], [12, 4, 16, 16])
    np.testing.assert_array_equal(p[80 * 80 * 2], [8, 8, 64, 64])


def test_zero_offsets_decode_to_the_prior_and_offsets_follow_the_variances() -> None:
    prior = np.array([[100, 50, 20, 40]], np.float32)
    np.testing.assert_allclose(decode_boxes(np.zeros((1, 4), np.float32), prior), [[90, 30, 110, 70]])
    moved = decode_boxes(np.array([[1.0, -1.0, 0.0, np.log(2) / 0.2]], np.float32), prior)
    # centre moves by 0.1 * prior size; height doubles through exp(0.2 * dh).
    np.testing.assert_allclose(moved, [[92, 6, 112, 86]], rtol=1e-5)


def _constant_retinaface(path: Path, size: int, face_prior: int, score: float) -> Path:
    """A real ONNX model whose outputs ignore the image: every prior background except one face."""
    onnx = pytest.importorskip("onnx")
    helper, numpy_helper, T = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    n = len(priors(size))
    conf = np.tile(np.array([[1.0, 0.0]], np.float32), (n, 1))
    conf[face_prior] = [1 - score, score]
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "tail4"], ["loc_shape"], axis=0),
        helper.make_node("Concat", ["batch", "tail2"], ["conf_shape"], axis=0),
        helper.make_node("Expand", ["loc_const", "loc_shape"], ["loc"]),
        helper.make_node("Expand", ["conf_const", "conf_shape"], ["conf"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([n, 4], np.int64), "tail4"),
        numpy_helper.from_array(np.array([n, 2], np.int64), "tail2"),
        numpy_helper.from_array(np.zeros((1, n, 4), np.float32), "loc_const"),
        numpy_helper.from_array(conf[None], "conf_const"),
    ]
    graph = helper.make_graph(
        nodes, "retinaface", [helper.make_tensor_value_info("input", T.FLOAT, ["b", 3, size, size])],
        [helper.make_tensor_value_info("loc", T.FLOAT, ["b", n, 4]),
         helper.make_tensor_value_info("conf", T.FLOAT, ["b", n, 2])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_detector_maps_the_face_prior_back_to_camera_pixels(tmp_path: Path) -> None:
    # 64 px input: prior 0 is centre (4, 4), side 16 -> input box (-4, -4, 12, 12).
    path = _constant_retinaface(tmp_path / "rf.onnx", 64, face_prior=1, score=0.9)  # side 32: (-12,-12,20,20)
    detector = RetinaFaceDetector(path, score_threshold=0.5, provider="cpu")
    frames = [np.zeros((32, 64, 3), np.uint8)] * 3  # 64x32 frames: scale 1, padded 16 px at the top
    results = detector.detect(frames, orig_sizes=[(128, 64)] * 3)  # shrunk from 128x64 camera frames
    assert len(results) == 3
    for found in results:
        assert found.class_ids.tolist() == [0] and found.scores.tolist() == pytest.approx([0.9])
        # x: (-12 .. 20) / 0.5 -> clipped (0, 40); y: (-12 - 16 .. 20 - 16) / 0.5 -> clipped (0, 8)
        np.testing.assert_allclose(found.xyxy, [[0, 0, 40, 8]])
    assert detector.detect([np.zeros((64, 64, 3), np.uint8)])[0].scores.tolist() == pytest.approx([0.9])
    below = RetinaFaceDetector(path, score_threshold=0.95, provider="cpu")
    assert len(below.detect(frames[:1])[0]) == 0


def test_a_model_without_retinaface_outputs_is_refused(make_detector_onnx) -> None:  # noqa: ANN001
    yolo = make_detector_onnx(np.zeros((6, 10), np.float32), metadata={"names": "{0: 'a', 1: 'b'}"})
    with pytest.raises(ModelLoadError, match="not a RetinaFace model"):
        RetinaFaceDetector(yolo, provider="cpu")


@pytest.fixture(scope="module")
def faces() -> RetinaFaceDetector:
    path = builtin_model_path("faces-retinaface")
    card = find_card(path)
    assert card is not None and card.classes == ["face"]
    return RetinaFaceDetector(path, input_size=card.input_size, score_threshold=card.thresholds.score,
                              provider="cpu", threads=1)


def test_packaged_model_finds_the_drawn_faces_of_the_demo(faces: RetinaFaceDetector) -> None:
    counts = rendered_faces(faces)
    # Measured at the card's threshold: 63 of the loop's 86 drawn faces found, no false alarm.
    assert counts["faces"] == 86
    assert counts["found"] >= 55 and counts["false_alarms"] <= 2


def test_packaged_model_finds_nothing_in_an_empty_kitchen(faces: RetinaFaceDetector) -> None:
    empty = np.full((720, 1280, 3), (180, 190, 200), np.uint8)
    cv2.rectangle(empty, (0, 450), (1280, 720), (90, 110, 130), -1)  # a counter
    assert len(faces.detect([empty])[0]) == 0


@pytest.mark.skipif(not (GLOVES / WORKER_PHOTO).is_file(), reason="../shared/data/gloves is not present")
def test_packaged_model_finds_a_real_face(faces: RetinaFaceDetector) -> None:
    photo = cv2.imread(str(GLOVES / WORKER_PHOTO))
    found = faces.detect([photo])[0]
    assert len(found) == 1 and found.scores[0] > 0.9
    # Checked by eye: the box covers the face from the hat's brim to the chin.
    assert box_iou(found.xyxy, np.array([[317, 66, 441, 195]], np.float32))[0, 0] > 0.8
