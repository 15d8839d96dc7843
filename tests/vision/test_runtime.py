import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from models.cards import builtin_model_path
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


# -- plans: engine, provider and precision -----------------------------------------------------------

CPU_ONLY = ["CPUExecutionProvider"]
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})
NO_BF16 = frozenset({"avx2", "avx512f"})


@pytest.mark.parametrize(
    "available,openvino,flags,expected",
    [
        (GPU, True, BF16, ("onnxruntime", "tensorrt", "fp16")),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], True, BF16, ("onnxruntime", "cuda", "fp32")),
        (CPU_ONLY, True, BF16, ("openvino", "openvino", "bf16")),
        (CPU_ONLY, True, frozenset({"amx_bf16", "amx_tile"}), ("openvino", "openvino", "bf16")),
        (CPU_ONLY, True, NO_BF16, ("openvino", "openvino", "fp32")),
        (CPU_ONLY, False, BF16, ("onnxruntime", "cpu", "fp32")),
        (["OpenVINOExecutionProvider", "CPUExecutionProvider"], False, BF16, ("onnxruntime", "openvino", "fp32")),
    ],
)
def test_auto_plan(available, openvino, flags, expected):
    plan = runtime.plan_runtime("auto", "auto", available=available, openvino=openvino, flags=flags)
    assert (plan.engine, plan.provider, plan.precision) == expected


def test_auto_never_picks_int8_and_explicit_choices_are_kept():
    for available in (GPU, CPU_ONLY):
        for openvino in (True, False):
            plan = runtime.plan_runtime(available=available, openvino=openvino, flags=BF16)
            assert plan.precision != "int8"
    plan = runtime.plan_runtime("cpu", "int8", available=GPU, openvino=True, flags=BF16)
    assert (plan.engine, plan.provider, plan.precision, plan.providers) == (
        "onnxruntime", "cpu", "int8", ("CPUExecutionProvider",))
    assert plan.converted == "int8"
    plan = runtime.plan_runtime("openvino", "fp32", available=CPU_ONLY, openvino=True, flags=BF16)
    assert (plan.engine, plan.precision, plan.converted) == ("openvino", "fp32", None)
    assert runtime.plan_runtime("cuda", "fp16", available=GPU, openvino=False).converted == "fp16"
    # TensorRT builds its fp16 engine from the fp32 file.
    assert runtime.plan_runtime("tensorrt", "fp16", available=GPU, openvino=False).converted is None


def test_a_precision_the_provider_cannot_run_is_an_error():
    with pytest.raises(ValueError, match="precision bf16 is not supported on provider cpu"):
        runtime.plan_runtime("cpu", "bf16", available=CPU_ONLY, openvino=True, flags=BF16)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        runtime.plan_runtime("cpu", "fp8", available=CPU_ONLY)
    with pytest.raises(ValueError, match="unknown execution provider 'gpu'"):
        runtime.plan_runtime("gpu", "auto", available=CPU_ONLY)


def test_a_missing_gpu_falls_back_to_cpu_fp32(caplog):
    with caplog.at_level(logging.WARNING, logger="vision.runtime"):
        plan = runtime.plan_runtime("cuda", "fp16", available=CPU_ONLY, openvino=False)
    assert (plan.engine, plan.provider, plan.precision) == ("onnxruntime", "cpu", "fp32")
    assert "provider cuda not available" in caplog.text and "precision fp16 is not available" in caplog.text


def test_openvino_without_the_package_uses_the_onnxruntime_provider_or_cpu():
    plan = runtime.plan_runtime("openvino", "fp32", available=["OpenVINOExecutionProvider", "CPUExecutionProvider"],
                                openvino=False)
    assert (plan.engine, plan.providers) == ("onnxruntime", ("OpenVINOExecutionProvider", "CPUExecutionProvider"))
    plan = runtime.plan_runtime("openvino", "fp32", available=CPU_ONLY, openvino=False)
    assert (plan.engine, plan.provider) == ("onnxruntime", "cpu")
    with pytest.raises(ValueError, match="precision bf16 is not supported on provider openvino"):
        runtime.plan_runtime("openvino", "bf16", available=["OpenVINOExecutionProvider", "CPUExecutionProvider"],
                             openvino=False)


class SessionSpy:
    """Records what onnxruntime is asked for, then builds the real session (which runs on the CPU here)."""

    def __init__(self):
        self.calls = []
        self.real = ort.InferenceSession

    def __call__(self, path, sess_options=None, providers=None, provider_options=None):
        self.calls.append({"providers": providers, "provider_options": provider_options})
        return self.real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "provider,precision,providers,options",
    [
        ("auto", "auto", GPU, [{"trt_fp16_enable": True, "trt_int8_enable": False}, {}, {}]),
        ("tensorrt", "fp32", GPU, [{"trt_fp16_enable": False, "trt_int8_enable": False}, {}, {}]),
        ("cuda", "fp32", ["CUDAExecutionProvider", "CPUExecutionProvider"], [{}, {}]),
        ("openvino", "fp16", ["OpenVINOExecutionProvider", "CPUExecutionProvider"],
         [{"device_type": "CPU", "precision": "FP16"}, {}]),
    ],
)
def test_gpu_providers_and_their_options_reach_onnxruntime(
    monkeypatch, tmp_path, make_detector_onnx, provider, precision, providers, options
):
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: [*GPU, "OpenVINOExecutionProvider"])
    spy = SessionSpy()
    monkeypatch.setattr(runtime.ort, "InferenceSession", spy)
    plan = runtime.plan_runtime(provider, precision, openvino=False)
    model = runtime.open_model(make_detector_onnx(BASE), plan, threads=1, cache_dir=tmp_path / "cache")
    call = spy.calls[-1]
    assert call["providers"] == providers
    if "TensorrtExecutionProvider" in providers:
        options[0].update(trt_engine_cache_enable=True, trt_engine_cache_path=str(tmp_path / "cache" / "tensorrt"))
    assert call["provider_options"] == options
    # The real session ran where it could (the CPU here) and still answers.
    assert model.run(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 6, 8)


def test_cuda_fp16_runs_a_converted_file_kept_in_the_cache(monkeypatch, tmp_path):
    pytest.importorskip("onnx")
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: list(GPU))
    spy = SessionSpy()
    monkeypatch.setattr(runtime.ort, "InferenceSession", spy)
    source = builtin_model_path("kitchen-starter")
    plan = runtime.plan_runtime("cuda", "fp16", openvino=False)
    model = runtime.open_model(source, plan, cache_dir=tmp_path)
    assert model.path.parent == tmp_path and "fp16" in model.path.name
    assert spy.calls[-1]["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    import onnx

    converted = onnx.load(str(model.path))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in converted.graph.initializer)
    assert converted.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 in and out
    assert {p.key for p in converted.metadata_props} >= {"names", "imgsz"}


def test_cpu_flags_and_bf16_detection():
    assert runtime.native_bf16(BF16) and not runtime.native_bf16(NO_BF16)
    assert isinstance(runtime.cpu_flags(), frozenset)
