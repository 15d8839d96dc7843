"""`auto` precision on OpenVINO is timed on the model, once per file, CPU and OpenVINO version."""

import json
import math

import pytest

from brightkitchen.config import load_config
from models.cards import builtin_model_path
from streams.detectors import load_model
from vision.precision_probe import auto_openvino_precision, probe_key, time_precisions
from vision.runtime import native_bf16

pytest.importorskip("openvino")
STARTER = builtin_model_path("kitchen-starter")


def test_both_precisions_are_timed_on_the_model():
    ms = time_precisions(STARTER, ("fp32", "bf16"), batch=1, runs=2)
    assert set(ms) == {"fp32", "bf16"}
    assert all(math.isfinite(v) and v > 0 for v in ms.values())


def test_the_decision_is_kept_and_used_again(tmp_path):
    chosen = auto_openvino_precision(STARTER, tmp_path)
    assert chosen in ("fp32", "bf16")
    kept = json.loads((tmp_path / f"precision-{probe_key(STARTER)}.json").read_text())
    assert kept["precision"] == chosen and set(kept["ms_per_image"]) == {"fp32", "bf16"}
    # A kept decision is what the next start uses: no second timing can overrule it.
    other = "bf16" if chosen == "fp32" else "fp32"
    (tmp_path / f"precision-{probe_key(STARTER)}.json").write_text(json.dumps({"precision": other}))
    assert auto_openvino_precision(STARTER, tmp_path) == other


def test_an_unreadable_decision_is_measured_again(tmp_path):
    (tmp_path / f"precision-{probe_key(STARTER)}.json").write_text("{not json")
    assert auto_openvino_precision(STARTER, tmp_path) in ("fp32", "bf16")
    assert json.loads((tmp_path / f"precision-{probe_key(STARTER)}.json").read_text())["precision"] in ("fp32", "bf16")


@pytest.mark.skipif(not native_bf16(), reason="auto picks fp32 without timing on a CPU without native bf16")
@pytest.mark.parametrize("decision", ["fp32", "bf16"])
def test_the_service_runs_the_model_in_the_decided_precision(tmp_path, decision):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"precision-{probe_key(STARTER)}.json").write_text(json.dumps({"precision": decision}))
    path = tmp_path / "config.yaml"
    path.write_text(f"""
inference: {{cache_dir: {cache}}}
models:
  - {{name: kitchen, path: "builtin:kitchen-starter", provider: openvino, precision: auto, processes: 1}}
sites:
  - id: s1
    name: S1
    cameras: [{{id: c1, name: C1, url: "rtsp://127.0.0.1:1/x"}}]
""")
    model = load_model(load_config(path), load_config(path).models[0])
    try:
        assert model.detector.plan.precision == decision
    finally:
        model.close()
