import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from vision import runtime
from vision.runtime import ModelLoadError, class_names_from_metadata, create_session, resolve_providers

BASE = np.zeros((6, 8), dtype=np.float32)


def test_missing_file_names_the_file(tmp_path: Path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelLoadError, match="not found.*nope.onnx"):
        create_session(missing)


def test_corrupt_file_names_the_file(tmp_path: Path):
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(ModelLoadError, match="broken.onnx"):
        create_session(corrupt)
    assert issubclass(ModelLoadError, ValueError)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_unavailable_provider_falls_back_to_cpu_with_one_warning(make_detector_onnx, caplog):
    path = make_detector_onnx(BASE)
    with caplog.at_level(logging.WARNING, logger="vision.runtime"):
        session = create_session(path, provider="cuda", threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    warnings = [r for r in caplog.records if r.name == "vision.runtime"]
    assert len(warnings) == 1
    assert "provider cuda not available (available: " in warnings[0].getMessage()
    assert "falling back to CPUExecutionProvider" in warnings[0].getMessage()


def test_unknown_provider_name_is_an_error():
    with pytest.raises(ValueError, match="unknown execution provider 'gpu'"):
        resolve_providers("gpu")


@pytest.mark.parametrize(
    "available,requested,expected",
    [
        (["CPUExecutionProvider"], "auto", ["CPUExecutionProvider"]),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], "auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        (
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            "auto",
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (
            ["OpenVINOExecutionProvider", "CPUExecutionProvider"],
            "auto",
            ["OpenVINOExecutionProvider", "CPUExecutionProvider"],
        ),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu", ["CPUExecutionProvider"]),
        (["OpenVINOExecutionProvider", "CPUExecutionProvider"], "cuda", ["CPUExecutionProvider"]),
    ],
)
def test_provider_choice(monkeypatch, available, requested, expected):
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: list(available))
    assert resolve_providers(requested) == expected


def test_threads_set_intra_op_and_a_single_inter_op_thread(make_detector_onnx):
    session = create_session(make_detector_onnx(BASE), provider="cpu", threads=1)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("{0: 'person', 1: 'no_hat'}", ["person", "no_hat"]),
        ("{1: 'b', 0: 'a'}", ["a", "b"]),
        ("['x', 'y']", ["x", "y"]),
    ],
)
def test_class_names_from_ultralytics_metadata(make_detector_onnx, raw, expected):
    session = create_session(make_detector_onnx(BASE, metadata={"names": raw}), provider="cpu", threads=1)
    assert class_names_from_metadata(session) == expected


def test_bad_or_missing_names_metadata(make_detector_onnx):
    session = create_session(make_detector_onnx(BASE, metadata={"names": "{0: person"}), provider="cpu", threads=1)
    with pytest.raises(ModelLoadError, match="names"):
        class_names_from_metadata(session)
    session = create_session(make_detector_onnx(BASE, name="plain.onnx"), provider="cpu", threads=1)
    assert class_names_from_metadata(session) is None
