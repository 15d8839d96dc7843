"""Inference processes: same results as in-process, a killed or hung process is restarted and only the
frames it held are dropped."""

import os
import signal

import numpy as np
import pytest

from models.cards import builtin_model_path
from models.synthetic import render_scene
from streams.inference import DetectorSpec, InferencePool
from vision.runtime import ModelLoadError, plan_runtime

STARTER = builtin_model_path("kitchen-starter")
SPEC = DetectorSpec(path=str(STARTER), plan=plan_runtime("cpu", "fp32"), threads=1, score_threshold=0.35)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [render_scene(rng, 320, 180)[0] for _ in range(6)]


@pytest.fixture
def pool():
    pools = []

    def start(processes: int = 2, timeout_s: float = 10.0, spec: DetectorSpec = SPEC) -> InferencePool:
        p = InferencePool(spec, processes, timeout_s=timeout_s, label="test")
        pools.append(p)
        return p

    yield start
    for p in pools:
        p.close()
        assert not any(s.process.is_alive() for s in p._slots if s.process is not None)


def same(a, b) -> bool:
    return np.allclose(a.xyxy, b.xyxy, atol=1e-3) and np.array_equal(a.class_ids, b.class_ids)


def test_pool_finds_what_the_detector_finds_in_process(pool, images):
    reference = SPEC.build().detect(images, [(640, 360)] * len(images))
    p = pool(2)
    assert p.live_processes() == 2 and len(set(p.pids())) == 2
    assert p.names == SPEC.build().names and p.input_size == 320
    out = p.detect(images, [(640, 360)] * len(images))
    assert sum(len(d) for d in reference) > 5
    assert all(same(a, b) for a, b in zip(reference, out, strict=True))
    assert p.detect([]) == [] and len(p.detect(images[:1])) == 1
    assert p.stats.transfer_s and p.stats.frames_dropped == 0


def test_a_killed_process_drops_only_its_frames_and_is_restarted(pool, images, wait_until):
    p = pool(2)
    victim = p.pids()[0]
    os.kill(victim, signal.SIGKILL)
    out = p.detect(images)
    assert [d is None for d in out] == [True] * 3 + [False] * 3  # the first half went to the dead process
    assert p.stats.frames_dropped == 3
    wait_until(lambda: p.live_processes() == 2, timeout_s=60, what="the process to restart")
    assert victim not in p.pids() and p.stats.restarts == 1
    assert all(d is not None for d in p.detect(images))


def test_a_hung_process_is_killed_after_the_timeout(pool, images, wait_until):
    p = pool(2, timeout_s=1.5)
    hung = p.pids()[1]
    os.kill(hung, signal.SIGSTOP)
    try:
        out = p.detect(images)
    finally:
        try:
            os.kill(hung, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert [d is None for d in out] == [False] * 3 + [True] * 3
    wait_until(lambda: p.live_processes() == 2, timeout_s=60, what="the process to restart")
    assert hung not in p.pids()
    assert all(d is not None for d in p.detect(images))


def test_while_a_process_restarts_the_other_takes_the_whole_batch(pool, images):
    p = pool(2)
    os.kill(p.pids()[0], signal.SIGKILL)
    p.detect(images[:2])  # finds out the first one is dead
    assert p.live_processes() == 1
    assert all(d is not None for d in p.detect(images))


def test_a_model_the_processes_cannot_load_is_a_load_error(pool, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not a model" * 20)
    with pytest.raises(ModelLoadError, match="broken.onnx"):
        pool(2, spec=DetectorSpec(path=str(broken), plan=plan_runtime("cpu", "fp32"), threads=1))


def test_callers_in_several_threads_take_turns(pool, images):
    import threading

    p = pool(2)
    expected = p.detect(images)
    results: list = []

    def call():
        for _ in range(3):
            results.append(p.detect(images))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 9
    assert all(same(a, b) for out in results for a, b in zip(expected, out, strict=True))
