"""Loading configured models, crop classifiers wired behind a detector, and rules checked against them."""

import numpy as np
import pytest

from brightkitchen.bus import InProcessBus
from brightkitchen.config import parse_config
from brightkitchen.demo import demo_config
from brightkitchen.snapshots import SnapshotStore
from streams.detectors import load_models
from streams.worker import Worker
from vision.detections import Detections


def config_with(tmp_path, **changes):
    data = demo_config(tmp_path, "rtsp://127.0.0.1:1/x").model_dump(mode="json")
    data.update(changes)
    return parse_config(data, "test config", tmp_path, environ={})


def test_classifier_relabels_only_its_class_and_converts_lazily(tmp_path, make_classifier_onnx):
    path = make_classifier_onnx(size=32)
    clf = {"name": "hat", "path": str(path), "detector": "kitchen-starter", "on_class": "head_bare"}
    config = config_with(tmp_path, classifiers=[clf])
    model = load_models(config)["kitchen-starter"]
    assert model.names == model.detector.names + ["hat", "no_hat"]
    bare = model.detector.names.index("head_bare")
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, 100:] = 255  # bright right half: the classifier says "hat" there, "no_hat" on the dark left
    dets = Detections(
        np.array([[10, 10, 60, 60], [120, 10, 180, 60], [10, 70, 60, 95]], np.float32),
        np.array([0.9, 0.8, 0.7], np.float32),
        np.array([bare, bare, 0], np.int32),
    )
    calls = []

    def full_frame():
        calls.append(1)
        return frame

    out = model.classify(dets, full_frame)
    assert out.labels(model.names) == ["no_hat", "hat", "person"]
    assert len(calls) == 1
    no_targets = dets.filter(np.array([False, False, True]))
    assert model.classify(no_targets, full_frame).labels(model.names) == ["person"] and len(calls) == 1


def test_classifier_on_a_class_the_detector_lacks_is_refused(tmp_path, make_classifier_onnx):
    path = make_classifier_onnx(size=32)
    config = config_with(
        tmp_path, classifiers=[{"name": "hat", "path": str(path), "detector": "kitchen-starter", "on_class": "face"}]
    )
    with pytest.raises(ValueError, match="no such class"):
        load_models(config)


def test_rule_naming_a_class_no_model_yields_is_refused(tmp_path):
    config = config_with(tmp_path)
    config.rules[0].classes = ["chef_hat_missing"]
    with pytest.raises(ValueError, match="chef_hat_missing"):
        Worker(config, InProcessBus(), SnapshotStore(tmp_path / "s"))
