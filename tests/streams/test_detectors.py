"""Loading configured models, crop classifiers wired behind a detector, and rules checked against them."""

import shutil

import numpy as np
import pytest
import yaml

from brightkitchen.bus import InProcessBus
from brightkitchen.config import ModelConfig, parse_config
from brightkitchen.demo import demo_config
from brightkitchen.snapshots import SnapshotStore
from models.cards import BUILTIN_DIR
from streams.detectors import load_models, resolve_processes
from streams.worker import Worker
from vision.detections import Detections
from vision.runtime import ModelLoadError, plan_runtime


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


# -- runtime, processes and cards ---------------------------------------------------------------------

CPU_PLAN = plan_runtime("cpu", "fp32")
GPU_PLAN = plan_runtime("cuda", "fp32", available=["CUDAExecutionProvider", "CPUExecutionProvider"])


@pytest.mark.parametrize(
    "processes,plan,cameras,cores,expected",
    [
        (0, CPU_PLAN, 10, 2, 2),
        (0, CPU_PLAN, 1, 2, 1),  # one camera: a batch never splits
        (0, CPU_PLAN, 40, 32, 8),
        (0, GPU_PLAN, 40, 32, 1),
        (3, CPU_PLAN, 1, 2, 3),  # an explicit number is kept
    ],
)
def test_auto_processes(processes, plan, cameras, cores, expected):
    model = ModelConfig(name="m", path="x.onnx", processes=processes)
    assert resolve_processes(model, plan, cameras, cores) == expected


def own_model(tmp_path, card_change=None):
    shutil.copy(BUILTIN_DIR / "kitchen-starter.onnx", tmp_path / "det.onnx")
    card = yaml.safe_load((BUILTIN_DIR / "kitchen-starter.yaml").read_text())
    card["file"] = "det.onnx"
    if card_change:
        card_change(card)
    (tmp_path / "det.yaml").write_text(yaml.safe_dump(card))
    return str(tmp_path / "det.onnx")


def test_a_card_that_does_not_match_its_file_refuses_the_model(tmp_path):
    path = own_model(tmp_path, lambda c: c.update(classes=c["classes"][:-1]))
    config = config_with(tmp_path, models=[{"name": "kitchen-starter", "path": path, "provider": "cpu"}])
    with pytest.raises(ModelLoadError, match="card does not match det.onnx.*9 classes need 13"):
        load_models(config)


def test_a_broken_model_file_is_refused_with_its_name(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07junk" * 100)
    config = config_with(tmp_path, models=[{"name": "kitchen-starter", "path": str(broken), "provider": "cpu"}])
    with pytest.raises(ModelLoadError, match="broken.onnx"):
        load_models(config)


def test_int8_made_by_the_prepare_command_is_the_one_the_service_loads(tmp_path, capsys):
    pytest.importorskip("onnx")
    from brightkitchen.cli import main
    from brightkitchen.config import load_config

    model = {"name": "kitchen-starter", "path": "builtin:kitchen-starter", "provider": "cpu", "precision": "int8",
             "processes": 1}
    data = config_with(tmp_path, models=[model], inference={"cache_dir": "cache"}).model_dump(mode="json")
    (tmp_path / "bk.yaml").write_text(yaml.safe_dump(data))
    assert main(["models", "prepare", "-c", str(tmp_path / "bk.yaml")]) == 0
    out = capsys.readouterr().out
    assert "kitchen-starter: onnxruntime CPUExecutionProvider int8: converted file " in out
    made = sorted((tmp_path / "cache").glob("*.onnx"))
    assert len(made) == 1 and str(made[0]) in out
    stamp = made[0].stat().st_mtime_ns
    loaded = load_models(load_config(tmp_path / "bk.yaml"))["kitchen-starter"]
    assert loaded.detector.loaded_path == made[0] and made[0].stat().st_mtime_ns == stamp
    assert loaded.describe().startswith("onnxruntime CPUExecutionProvider int8, 1 process(es)")


def test_int8_of_an_own_model_needs_calibration_images(tmp_path):
    path = own_model(tmp_path)
    config = config_with(tmp_path, models=[{"name": "kitchen-starter", "path": path, "provider": "cpu",
                                            "precision": "int8", "processes": 1}])
    with pytest.raises(ModelLoadError, match="int8 needs calibration images"):
        load_models(config)
