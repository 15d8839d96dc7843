"""Camera assignment: the shared plan, and what a worker does with its leases, against real Redis."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from types import SimpleNamespace

import pytest
import redis

from brightkitchen.assignment import CameraAssignment, Keys, plan
from brightkitchen.config import AssignmentConfig, ConfigError, parse_config
from streams.rtsp_launcher import free_port
from tests.databases import unavailable

CAMERAS = [f"cam-{i}" for i in range(10)]


def test_the_plan_gives_every_camera_one_member_and_balances_them():
    owners = plan(CAMERAS, ["w1", "w2", "w3"])
    assert set(owners) == set(CAMERAS) and set(owners.values()) == {"w1", "w2", "w3"}
    loads = sorted(list(owners.values()).count(m) for m in ("w1", "w2", "w3"))
    assert loads == [3, 3, 4]
    assert plan(CAMERAS, ["w3", "w1", "w2", "w1"]) == owners  # the same plan for every member's view
    assert plan(CAMERAS, []) == {}


def test_a_member_leaving_moves_only_what_it_had_and_a_little_more():
    before = plan(CAMERAS, ["w1", "w2", "w3"])
    after = plan(CAMERAS, ["w1", "w2"])
    moved = {c for c in CAMERAS if before[c] != after[c]}
    assert {c for c in CAMERAS if before[c] == "w3"} <= moved
    assert len(moved) <= len(CAMERAS) // 2 + 1  # not a reshuffle of everything


class RecordingWorker:
    """What CameraAssignment uses of a Worker, recording the cameras it runs."""

    def __init__(self, cameras: list[str]) -> None:
        self.config = SimpleNamespace(cameras=lambda: [(None, SimpleNamespace(id=c)) for c in cameras])
        self.running: set[str] = set()

    def hold_cameras(self) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...

    def start_camera(self, camera: str) -> bool:
        assert camera not in self.running
        self.running.add(camera)
        return True

    def stop_camera(self, camera: str) -> bool:
        self.running.discard(camera)
        return True

    def camera_status(self) -> list[dict]:
        return [{"id": c, "connected": True} for c in sorted(self.running)]


def _settings(url: str, prefix: str, worker_id: str) -> AssignmentConfig:
    return AssignmentConfig(kind="redis", url=url, prefix=prefix, heartbeat_s=0.2, ttl_s=1.0, worker_id=worker_id)


def test_two_workers_share_the_cameras_and_a_stopped_one_hands_them_over(wait_until):
    url = "redis://127.0.0.1:6379/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        unavailable(f"no Redis at 127.0.0.1:6379 ({e}); scripts/services.sh starts one")
    prefix = f"brightkitchen-test:{uuid.uuid4().hex[:12]}"
    cams = CAMERAS[:4]
    a, b = RecordingWorker(cams), RecordingWorker(cams)
    first = CameraAssignment(a, _settings(url, prefix, "w-a"))
    second = CameraAssignment(b, _settings(url, prefix, "w-b"))
    try:
        first.start()
        wait_until(lambda: a.running == set(cams), what="the only worker to run every camera")
        second.start()
        wait_until(lambda: len(a.running) == 2 and len(b.running) == 2, what="the cameras shared out")
        assert not a.running & b.running
        owners = {c: client.get(Keys(prefix).lease(c)) for c in cams}
        assert all(owners[c] == b"w-a" for c in a.running) and all(owners[c] == b"w-b" for c in b.running)
        first.stop()  # leaves: releases its leases at once
        wait_until(lambda: b.running == set(cams), timeout_s=5, what="the other worker to take them all")
        assert not client.zscore(Keys(prefix).members, "w-a")
    finally:
        second.stop()
        first.stop()
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        assert not [k for k in keys if b":lease:" in k]  # every lease released on the way out
        if keys:
            client.delete(*keys)
        client.close()


def test_without_redis_a_worker_stops_its_cameras_before_its_leases_expire(wait_until):
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed; scripts/services.sh installs it")
    port = free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    worker = RecordingWorker(CAMERAS[:2])
    assignment = CameraAssignment(worker, _settings(url, "bk", "w-a"))
    try:
        wait_until(lambda: _pings(url), what="the private Redis to start")
        assignment.start()
        wait_until(lambda: worker.running == set(CAMERAS[:2]), what="the cameras started")
        server.terminate()
        server.wait(timeout=10)
        # Not renewable any more: stopped one heartbeat before the leases (ttl 1 s) could expire.
        wait_until(lambda: not worker.running, timeout_s=5, what="the cameras stopped without Redis")
    finally:
        assignment.stop()
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_assignment_config_is_checked(tmp_path):
    base = {"sites": [{"id": "s1"}], "models": [{"name": "m", "path": "m.onnx"}]}
    with pytest.raises(ConfigError) as bad:
        parse_config({**base, "assignment": {"kind": "redis"}}, "x", tmp_path, {})
    assert "needs assignment.url" in str(bad.value)
    with pytest.raises(ConfigError) as bad:
        parse_config({**base, "assignment": {"kind": "redis", "url": "redis://r", "heartbeat_s": 3, "ttl_s": 4}},
                     "x", tmp_path, {})
    assert "at least twice heartbeat_s" in str(bad.value)
