"""Tiny real ONNX models built with onnx.helper, so the runtime, detector and classifier run end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

OPSET = 17


def _onnx():
    # Only the tests that build models need the onnx package; the rest of tests/vision runs without it.
    return pytest.importorskip("onnx")


def _image_mean() -> tuple[list, list]:
    """Nodes computing each image's mean pixel as (N, 1, 1): the models' outputs depend on it, so a
    test can tell images in a batch apart."""
    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "mean_shape"], ["mean3"]),
    ]
    inits = [numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "mean_shape")]
    return nodes, inits


def _save(graph, path: Path, metadata: dict[str, str]) -> Path:
    onnx = _onnx()
    helper = onnx.helper
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def make_detector_onnx(tmp_path: Path) -> Callable[..., Path]:
    """Writes a detector whose output is base + mean(image) * shift for a fixed (1, C, A) base."""

    def make(
        base: np.ndarray,
        *,
        size: int | str = 64,
        batch: str | int = "batch",
        shift: np.ndarray | None = None,
        metadata: dict[str, str] | None = None,
        name: str = "det.onnx",
        symbolic_output: bool = False,
    ) -> Path:
        onnx = _onnx()
        helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto
        base = np.asarray(base, dtype=np.float32)[None]
        shift = np.zeros_like(base) if shift is None else np.asarray(shift, dtype=np.float32)[None]
        nodes, inits = _image_mean()
        nodes += [
            helper.make_node("Mul", ["mean3", "shift"], ["moved"]),
            helper.make_node("Add", ["moved", "base"], ["output0"]),
        ]
        inits += [numpy_helper.from_array(base, "base"), numpy_helper.from_array(shift, "shift")]
        # Dynamic exports name their output axes instead of giving sizes.
        out_shape = [batch, "rows", "cols"] if symbolic_output else [batch, *base.shape[1:]]
        graph = helper.make_graph(
            nodes,
            "detector",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
            initializer=inits,
        )
        return _save(graph, tmp_path / name, metadata or {})

    return make


@pytest.fixture
def make_classifier_onnx(tmp_path: Path) -> Callable[..., Path]:
    """Writes a 2-class classifier: bright crops -> class 0, dark crops -> class 1 (softmax output)."""

    def make(*, size: int = 32, batch: str | int = 1, metadata: dict[str, str] | None = None) -> Path:
        onnx = _onnx()
        helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto
        nodes, inits = _image_mean()
        nodes += [
            helper.make_node("Reshape", ["mean3", "col_shape"], ["mean2"]),
            helper.make_node("Mul", ["mean2", "gain"], ["scaled"]),
            helper.make_node("Add", ["scaled", "offset"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["output0"], axis=1),
        ]
        inits += [
            numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "col_shape"),
            numpy_helper.from_array(np.array([[20.0, -20.0]], dtype=np.float32), "gain"),
            numpy_helper.from_array(np.array([[-10.0, 10.0]], dtype=np.float32), "offset"),
        ]
        graph = helper.make_graph(
            nodes,
            "classifier",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 2])],
            initializer=inits,
        )
        meta = {"names": "{0: 'hat', 1: 'no_hat'}"} if metadata is None else metadata
        return _save(graph, tmp_path / "cls.onnx", meta)

    return make
