"""GET /api/v1/models: what the worker runs, and why a replacement was refused."""

import os
import shutil

import httpx
import yaml

from brightkitchen.config import load_config
from brightkitchen.service import build_service
from models.cards import BUILTIN_DIR
from tests.serving import serve_in_thread


def test_models_status_shows_the_running_model_and_a_refused_file(tmp_path, demo_clip, wait_until):
    shutil.copy(BUILTIN_DIR / "kitchen-starter.onnx", tmp_path / "det.onnx")
    card = yaml.safe_load((BUILTIN_DIR / "kitchen-starter.yaml").read_text())
    card["file"] = "det.onnx"
    (tmp_path / "det.yaml").write_text(yaml.safe_dump(card))
    config = {
        "sites": [{"id": "s1", "cameras": [{"id": "cam-a", "url": str(demo_clip)}]}],
        "models": [{"name": "det", "path": "det.onnx", "provider": "cpu", "precision": "fp32", "processes": 1}],
        "storage": {"database": "sqlite:///bk.db", "snapshots_dir": "snapshots"},
        "api": {"auth": {"enabled": False}},
        "inference": {"watch_interval_s": 0.2},
    }
    (tmp_path / "bk.yaml").write_text(yaml.safe_dump(config))
    service = build_service(load_config(tmp_path / "bk.yaml"))
    try:
        with serve_in_thread(service.app()) as url, httpx.Client(base_url=url, timeout=10) as client:
            first = client.get("/api/v1/models").json()
            assert len(first) == 1
            status = first[0]
            assert status["name"] == "det" and status["version"] == "0.2.0" and status["processes"] == 1
            assert status["runtime"] == "onnxruntime CPUExecutionProvider fp32" and status["last_error"] is None
            assert len(status["sha256"]) == 64
            tmp = tmp_path / ".det.onnx.tmp"
            tmp.write_bytes(b"\x08\x07broken" * 100)
            os.replace(tmp, tmp_path / "det.onnx")
            refused = wait_until(lambda: client.get("/api/v1/models").json()[0]["last_error"], timeout_s=30,
                                 what="the refusal in the status")
            assert "det.onnx" in refused
            again = client.get("/api/v1/models").json()[0]
            assert again["sha256"] == status["sha256"] and again["swaps"] == 0
    finally:
        service.store.close()
