"""Model hot swap with real ONNX files: a new file or config entry swaps in while the worker runs, and a
broken file, a card that does not match its file, or a model that no longer covers the rules is refused
while the old model keeps running."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from brightkitchen.bus import InProcessBus
from brightkitchen.config import load_config
from brightkitchen.snapshots import SnapshotStore
from models.cards import BUILTIN_DIR
from streams.detectors import load_models
from streams.model_watch import ModelWatcher
from streams.worker import Worker

onnx = pytest.importorskip("onnx")
STARTER_ONNX = BUILTIN_DIR / "kitchen-starter.onnx"
STARTER_CARD = BUILTIN_DIR / "kitchen-starter.yaml"


def replace(path: Path, data: bytes) -> None:
    """As an operator should: write beside, then rename over."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def retrained(note: str) -> bytes:
    """The starter model with one more metadata entry: another file, the same network."""
    model = onnx.load(str(STARTER_ONNX))
    model.metadata_props.add(key="note", value=note)
    return model.SerializeToString()


@pytest.fixture
def site(tmp_path: Path, demo_clip: Path):
    """A config file with two file cameras and a model file (with its card) of its own."""
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    shutil.copy(STARTER_ONNX, models_dir / "det.onnx")
    card = yaml.safe_load(STARTER_CARD.read_text())
    card["file"] = "det.onnx"
    (models_dir / "det.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    config = {
        "sites": [{
            "id": "s1",
            "cameras": [
                {"id": "cam-a", "url": str(demo_clip), "analysis_fps": 4},
                {"id": "cam-b", "url": str(demo_clip), "analysis_fps": 4},
            ],
        }],
        "models": [{"name": "det", "path": "models/det.onnx", "provider": "cpu", "precision": "fp32",
                    "threads": 1, "processes": 1}],
        "rules": [{"name": "no_hat", "model": "det", "classes": ["head_bare"], "min_score": 0.4}],
        "storage": {"database": "sqlite:///bk.db", "snapshots_dir": "snapshots"},
        "inference": {"watch_interval_s": 0.2},
    }
    path = tmp_path / "kitchen.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def edit_config(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    replace(path, yaml.safe_dump(data, sort_keys=False).encode())


@pytest.fixture
def watcher_for():
    made = []

    def make(config_path: Path) -> tuple[ModelWatcher, dict]:
        config = load_config(config_path)
        models = load_models(config)
        watcher = ModelWatcher(config, models, interval_s=0)
        made.append((watcher, models))
        return watcher, models

    yield make
    for watcher, models in made:
        watcher.stop()
        for model in models.values():
            model.close()


def test_a_new_model_file_is_loaded_checked_and_handed_over_once(site, watcher_for):
    watcher, models = watcher_for(site)
    assert watcher.check() == []  # nothing changed
    replace(site.parent / "models" / "det.onnx", retrained("v2"))
    assert watcher.check() == ["det"]
    ready = watcher.take_ready()
    assert list(ready) == ["det"] and ready["det"].sha256 != models["det"].sha256
    assert watcher.take_ready() == {}
    watcher.swapped(ready["det"], models["det"])
    status = watcher.statuses()[0]
    assert status["swaps"] == 1 and status["sha256"] == ready["det"].sha256 and status["last_error"] is None
    models["det"] = ready["det"]


def test_a_touched_but_unchanged_file_is_no_change(site, watcher_for):
    watcher, _ = watcher_for(site)
    path = site.parent / "models" / "det.onnx"
    later = time.time() + 5
    os.utime(path, (later, later))
    assert watcher.check() == [] and watcher.statuses()[0]["last_error"] is None


def test_a_broken_model_file_is_refused_and_the_old_one_stays(site, watcher_for, caplog):
    watcher, models = watcher_for(site)
    replace(site.parent / "models" / "det.onnx", b"\x08\x07not a model at all" * 50)
    assert watcher.check() == [] and watcher.take_ready() == {}
    status = watcher.statuses()[0]
    assert "det.onnx" in status["last_error"] and status["sha256"] == models["det"].sha256
    assert "model det: new version refused, keeping 0.2.0" in caplog.text
    assert watcher.check() == []  # refused once, not on every poll
    replace(site.parent / "models" / "det.onnx", retrained("fixed"))
    assert watcher.check() == ["det"]  # a good file after a bad one is taken
    watcher.take_ready()["det"].close()


def test_a_card_that_does_not_match_its_file_is_refused(site, watcher_for):
    watcher, _ = watcher_for(site)
    card_path = site.parent / "models" / "det.yaml"
    card = yaml.safe_load(card_path.read_text())
    card["input_size"] = 640
    card["classes"] = card["classes"][:-1] + ["telephone"]
    replace(card_path, yaml.safe_dump(card, sort_keys=False).encode())
    assert watcher.check() == []
    error = watcher.statuses()[0]["last_error"]
    assert "card does not match det.onnx" in error and "640" in error and "telephone" in error


def test_a_model_that_no_longer_yields_the_rules_classes_is_refused(site, watcher_for, make_detector_onnx):
    watcher, _ = watcher_for(site)
    # A real detector with one class "person" and no card.
    other = make_detector_onnx(np.zeros((5, 8), np.float32), size=64,
                               metadata={"names": "{0: 'person'}", "imgsz": "[64, 64]"})
    (site.parent / "models" / "det.yaml").unlink()
    replace(site.parent / "models" / "det.onnx", other.read_bytes())
    assert watcher.check() == []
    assert "rule 'no_hat' needs classes ['head_bare']" in watcher.statuses()[0]["last_error"]


def test_a_changed_config_entry_swaps_in_and_a_broken_config_is_reported(site, watcher_for):
    watcher, models = watcher_for(site)
    edit_config(site, lambda d: d["models"][0].update(score_threshold=0.6))
    assert watcher.check() == ["det"]
    new = watcher.take_ready()["det"]
    assert new.detector.score_threshold == 0.6 and models["det"].detector.score_threshold == 0.35
    new.close()
    site.write_text(site.read_text() + "\nmodels: [oops\n")
    assert watcher.check() == []
    assert watcher.statuses()[0]["last_error"] is None  # the running model is fine: only the file is not
    assert "not valid YAML" in watcher.statuses()[0]["config_error"]


def test_hot_swap_in_a_running_worker_keeps_every_camera_analysed(site, tmp_path, wait_until):
    config = load_config(site)
    worker = Worker(config, InProcessBus(), SnapshotStore(tmp_path / "snapshots"))
    worker.start()
    try:
        counts = worker.stats.frames_analysed
        wait_until(lambda: min(counts.get("cam-a", 0), counts.get("cam-b", 0)) >= 3, timeout_s=30,
                   what="both cameras analysed")
        old = worker.models["det"]
        replace(site.parent / "models" / "det.onnx", retrained("v2"))
        wait_until(lambda: worker.model_status()[0]["swaps"] == 1, timeout_s=30, what="the swap")
        assert worker.models["det"] is not old and worker.models["det"].sha256 != old.sha256
        before = dict(counts)
        wait_until(lambda: all(counts[c] >= before[c] + 3 for c in ("cam-a", "cam-b")), timeout_s=30,
                   what="both cameras analysed by the new model")

        replace(site.parent / "models" / "det.onnx", b"garbage" * 100)
        wait_until(lambda: worker.model_status()[0]["last_error"], timeout_s=30, what="the refusal")
        before = dict(counts)
        wait_until(lambda: all(counts[c] >= before[c] + 3 for c in ("cam-a", "cam-b")), timeout_s=30,
                   what="both cameras analysed by the old model after the refusal")
        assert worker.model_status()[0]["swaps"] == 1
        assert worker.stats.frames_dropped == 0
    finally:
        worker.stop()


def test_hot_swap_of_a_model_in_inference_processes_ends_the_old_processes(site, tmp_path, wait_until):
    edit_config(site, lambda d: d["models"][0].update(processes=2))
    config = load_config(site)
    worker = Worker(config, InProcessBus(), SnapshotStore(tmp_path / "snapshots"))
    worker.start()
    try:
        old = worker.models["det"]
        assert old.processes == 2
        old_processes = [s.process for s in old.detector._slots]
        wait_until(lambda: worker.stats.frames_analysed.get("cam-a", 0) >= 2, timeout_s=30, what="analysis")
        edit_config(site, lambda d: d["models"][0].update(score_threshold=0.5))
        wait_until(lambda: worker.model_status()[0]["swaps"] == 1, timeout_s=60, what="the swap")
        assert worker.models["det"].detector.score_threshold == 0.5
        wait_until(lambda: not any(p.is_alive() for p in old_processes), timeout_s=30, what="old processes to end")
        before = worker.stats.frames_analysed["cam-b"]
        wait_until(lambda: worker.stats.frames_analysed["cam-b"] >= before + 2, timeout_s=30, what="analysis")
        assert worker.stats.frames_dropped == 0
    finally:
        worker.stop()
    assert not any(s.process.is_alive() for s in worker.models["det"].detector._slots)


def test_sighup_makes_the_running_service_check_its_models(site, tmp_path):
    """`brightkitchen serve` with polling off: a replaced file swaps in on SIGHUP, not before."""
    import signal
    import subprocess
    import sys

    import httpx

    from streams.rtsp_launcher import free_port

    edit_config(site, lambda d: (d["inference"].update(watch_interval_s=0), d.update(api={"auth": {"enabled": False}})))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "brightkitchen.cli", "serve", "-c", str(site), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def status():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/v1/models", timeout=5).json()[0]
        except httpx.TransportError:
            return None

    try:
        deadline = time.monotonic() + 60
        while status() is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        first = status()
        replace(site.parent / "models" / "det.onnx", retrained("v2"))
        time.sleep(1.5)
        assert status()["sha256"] == first["sha256"]  # no polling: nothing happened yet
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while status()["swaps"] != 1:
            assert proc.poll() is None and time.monotonic() < deadline, "no swap after SIGHUP"
            time.sleep(0.2)
        assert status()["sha256"] != first["sha256"] and status()["last_error"] is None
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def test_a_worker_leaves_the_models_it_was_given_open(site, tmp_path):
    edit_config(site, lambda d: d["models"][0].update(processes=2))
    config = load_config(site)
    models = load_models(config)
    try:
        worker = Worker(config, InProcessBus(), SnapshotStore(tmp_path / "snapshots"), models=models)
        worker.start()
        worker.stop()
        assert models["det"].detector.live_processes() == 2  # the caller still uses them
        assert all(d is not None for d in models["det"].detect([np.zeros((180, 320, 3), np.uint8)] * 2))
    finally:
        models["det"].close()
