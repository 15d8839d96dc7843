import numpy as np
import pytest

from vision.detector import YoloDetector
from vision.runtime import ModelLoadError

NAMES_META = {"names": "{0: 'person', 1: 'no_hat'}", "imgsz": "[64, 64]"}


def raw_head() -> np.ndarray:
    """(4 + 2 classes, 8 anchors) in the YOLOv8 layout: cx, cy, w, h, score per class."""
    anchors = [
        [20, 20, 20, 20, 0.9, 0.0],  # person
        [21, 20, 20, 20, 0.8, 0.1],  # person, overlaps the first: removed by NMS
        [21, 20, 20, 20, 0.1, 0.7],  # no_hat at the same place: another class, kept
        [50, 50, 10, 10, 0.1, 0.05],  # below the score threshold
        [50, 50, 10, 10, 0.0, 0.3],  # no_hat
    ]
    out = np.zeros((6, 8), dtype=np.float32)
    out[:, : len(anchors)] = np.array(anchors, dtype=np.float32).T
    return out


# The same detections in letterboxed pixels, best first.
EXPECTED_LETTERBOX = np.array([[10, 10, 30, 30], [11, 10, 31, 30], [45, 45, 55, 55]], dtype=np.float32)


def detector(path, **kwargs) -> YoloDetector:
    return YoloDetector(path, provider="cpu", threads=1, **kwargs)


def test_decode_nms_and_unletterbox_end_to_end(make_detector_onnx):
    det = detector(make_detector_onnx(raw_head(), metadata=NAMES_META))
    assert det.names == ["person", "no_hat"] and det.input_size == 64
    assert det.providers == ["CPUExecutionProvider"] and det.model_name == "det"
    # 200x100 camera frame -> scale 0.32, content 64x32 centred with 16 px of padding above and below.
    (result,) = det.detect([np.zeros((100, 200, 3), dtype=np.uint8)])
    assert result.labels(det.names) == ["person", "no_hat", "no_hat"]
    np.testing.assert_allclose(result.scores, [0.9, 0.7, 0.3], rtol=1e-6)
    expected = EXPECTED_LETTERBOX.copy()
    expected[:, 0::2] /= 0.32
    expected[:, 1::2] = (expected[:, 1::2] - 16) / 0.32
    expected[:, 0::2] = expected[:, 0::2].clip(0, 200)
    expected[:, 1::2] = expected[:, 1::2].clip(0, 100)
    np.testing.assert_allclose(result.xyxy, expected, rtol=1e-5)
    assert (result.track_ids == -1).all()


def test_pre_shrunk_frames_map_to_the_camera_size(make_detector_onnx):
    det = detector(make_detector_onnx(raw_head(), metadata=NAMES_META))
    (full,) = det.detect([np.zeros((100, 200, 3), dtype=np.uint8)])
    (shrunk,) = det.detect([np.zeros((32, 64, 3), dtype=np.uint8)], orig_sizes=[(200, 100)])
    np.testing.assert_allclose(shrunk.xyxy, full.xyxy, rtol=1e-5)


@pytest.mark.parametrize("batch,max_batch", [("batch", 8), ("batch", 2), (1, 8), (2, 8)])
def test_batches_give_the_same_results_as_single_frames(make_detector_onnx, batch, max_batch):
    # The model moves the first box right by 10 px times the image's mean brightness.
    shift = np.zeros((6, 8), dtype=np.float32)
    shift[0, 0] = 10
    path = make_detector_onnx(raw_head(), shift=shift, batch=batch, metadata=NAMES_META)
    det = detector(path, max_batch=max_batch)
    black = np.zeros((64, 64, 3), dtype=np.uint8)
    white = np.full((64, 64, 3), 255, dtype=np.uint8)
    frames = [black, white, black, white, white]
    batched = det.detect(frames)
    singles = [det.detect([f])[0] for f in frames]
    assert len(batched) == len(frames)
    for b, s in zip(batched, singles, strict=True):
        np.testing.assert_allclose(b.xyxy, s.xyxy, rtol=1e-6)
        np.testing.assert_array_equal(b.class_ids, s.class_ids)
    np.testing.assert_allclose(batched[0].xyxy[0], [10, 10, 30, 30], atol=1e-4)
    np.testing.assert_allclose(batched[1].xyxy[0], [20, 10, 40, 30], atol=1e-4)


@pytest.mark.parametrize(
    "symbolic_output,extra_meta",
    [(False, {}), (True, {}), (True, {"end2end": "True"})],
    ids=["static-shape", "shape-known-on-first-run", "declared-in-metadata"],
)
def test_end_to_end_layout(make_detector_onnx, symbolic_output, extra_meta):
    rows = np.zeros((5, 6), dtype=np.float32)
    rows[0] = [11, 10, 31, 30, 0.7, 1]
    rows[1] = [10, 10, 30, 30, 0.9, 0]
    rows[2] = [45, 45, 55, 55, 0.2, 1]
    path = make_detector_onnx(rows, metadata=NAMES_META | extra_meta, symbolic_output=symbolic_output)
    det = detector(path)
    (result,) = det.detect([np.zeros((64, 64, 3), dtype=np.uint8)])
    assert result.labels(det.names) == ["person", "no_hat"]
    np.testing.assert_allclose(result.xyxy, EXPECTED_LETTERBOX[:2], atol=1e-4)


def test_raw_layout_with_symbolic_output_axes(make_detector_onnx):
    det = detector(make_detector_onnx(raw_head(), metadata=NAMES_META, symbolic_output=True))
    (result,) = det.detect([np.zeros((64, 64, 3), dtype=np.uint8)])
    np.testing.assert_allclose(result.xyxy, EXPECTED_LETTERBOX, atol=1e-4)


def test_class_names_argument_overrides_metadata(make_detector_onnx):
    det = detector(make_detector_onnx(raw_head(), metadata=NAMES_META), class_names=["a", "b"])
    assert det.names == ["a", "b"]


def test_missing_or_mismatched_class_names_are_clear_errors(make_detector_onnx):
    with pytest.raises(ModelLoadError, match="no class names"):
        detector(make_detector_onnx(raw_head(), name="bare.onnx"))
    with pytest.raises(ModelLoadError, match="6 channels but 3 class names"):
        detector(make_detector_onnx(raw_head(), metadata=NAMES_META), class_names=["a", "b", "c"])


def test_input_size_from_shape_argument_or_metadata(make_detector_onnx):
    dynamic = make_detector_onnx(raw_head(), size="side", metadata={"names": "['person', 'no_hat']"})
    with pytest.raises(ModelLoadError, match="input size is dynamic"):
        detector(dynamic)
    assert detector(dynamic, input_size=96).input_size == 96
    with_meta = make_detector_onnx(raw_head(), size="side", metadata=NAMES_META, name="meta.onnx")
    assert detector(with_meta).input_size == 64
    with pytest.raises(ValueError, match="differs from the model's fixed input size"):
        detector(make_detector_onnx(raw_head(), metadata=NAMES_META, name="fixed.onnx"), input_size=96)


@pytest.mark.parametrize("rect", [True, False])
def test_free_input_sizes_run_on_the_smallest_canvas(make_detector_onnx, rect):
    """A model with free height and width sees a 200x100 frame on 64x32 (no padding rows), unless rect
    is off; the boxes come back to the same camera pixels either way."""
    det = detector(make_detector_onnx(raw_head(), size="side", metadata=NAMES_META), rect=rect)
    assert det.rect is rect and det.input_size == 64
    (result,) = det.detect([np.zeros((100, 200, 3), dtype=np.uint8)])
    pad_y = 0 if rect else 16
    expected = EXPECTED_LETTERBOX.copy()
    expected[:, 1::2] -= pad_y
    expected = (expected / 0.32).clip(0, [200, 100, 200, 100])
    np.testing.assert_allclose(result.xyxy, expected, rtol=1e-5)


def test_fixed_input_sizes_keep_the_square(make_detector_onnx):
    assert not detector(make_detector_onnx(raw_head(), metadata=NAMES_META)).rect


def test_nothing_in_nothing_out(make_detector_onnx):
    det = detector(make_detector_onnx(raw_head(), metadata=NAMES_META), score_threshold=0.95)
    assert det.detect([]) == []
    (result,) = det.detect([np.zeros((64, 64, 3), dtype=np.uint8)])
    assert len(result) == 0
