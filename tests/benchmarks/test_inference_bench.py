"""The inference micro-benchmark runs every case it is asked for, with the baseline in the same run."""

import json

from benchmarks import inference_bench


def test_short_run_measures_baseline_and_cases(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = inference_bench.main(["--seconds", "0.05", "--batches", "1,2", "--processes", "1,2",
                                 "--runtimes", "openvino-bf16", "--cache-dir", str(tmp_path / "cache"),
                                 "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["machine"]["cores"] >= 1 and "load_average" in data["machine"]
    cases = {(c["runtime"], c["precision"], c["processes"], c["threads"], c["batch"]): c for c in data["cases"]}
    for batch in (1, 2):
        assert cases[("onnxruntime cpu", "fp32", 1, "default", batch)]["vs_baseline"] == 1.0
        assert cases[("onnxruntime cpu", "fp32", 1, "1", batch)]["images_per_s"] > 0
        pooled = cases[("openvino", "bf16", 2, "1", batch)]
        assert pooled["images_per_s"] > 0 and pooled["transfer_ms_p50"] is not None
        assert pooled["cpu_ms_per_image"] > 0  # the processes' CPU time is counted
    assert "| runtime | precision |" in capsys.readouterr().out
