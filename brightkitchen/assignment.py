"""Camera assignment across worker processes, with Redis doing the distributed part.

- Membership: each worker renews its entry in a sorted set every `heartbeat_s`, scored with the time
  (Redis's own clock) after which it counts as gone (`ttl_s`). Every worker sees the same live set.
- Balance: from the live set, each worker computes the same plan: cameras in order, each to the member
  ranking it highest by rendezvous hash that has fewer than its share (ceil(cameras / members)). A
  member joining or leaving moves few cameras.
- Exclusion: a worker analyses a camera only while it holds the camera's lease, a Redis key set with
  NX and a TTL of `ttl_s` and renewed only by its holder. A camera planned for another member is
  stopped first and released after; a new owner acquires it once it is free (released, or expired when
  its holder was killed). So no camera is analysed by two workers, and a killed worker's cameras are
  taken over within about `ttl_s` plus one heartbeat.
- A worker that cannot renew its leases (Redis unreachable) stops its cameras one heartbeat before
  they can have expired in Redis, so it does not go on analysing a camera another worker may hold.

The workers also publish the status of their cameras (with the same TTL), which API-only processes show.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

from brightkitchen.config import AssignmentConfig, Config
from streams.worker import Worker, redact_url

log = logging.getLogger("brightkitchen.assignment")

# KEYS[1]: members zset. ARGV: member ('' to only read), ttl ms. Drops expired members, returns the live.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
# KEYS: leases. ARGV: holder, ttl ms. Extends the leases still held by holder; 1 per lease kept, 0 lost.
RENEW = """
local kept = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    kept[i] = 1
  else
    kept[i] = 0
  end
end
return kept
"""
# KEYS: leases. ARGV: holder. Deletes the leases still held by holder.
RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def _rank(member: str, camera: str) -> bytes:
    return hashlib.blake2b(f"{member}\0{camera}".encode(), digest_size=8).digest()


def plan(cameras: Iterable[str], members: Iterable[str]) -> dict[str, str]:
    """camera -> member: rendezvous hashing, bounded so no member gets more than its share."""
    cameras, members = sorted(set(cameras)), sorted(set(members))
    if not members:
        return {}
    share = math.ceil(len(cameras) / len(members))
    load = dict.fromkeys(members, 0)
    owners = {}
    for camera in cameras:
        for member in sorted(members, key=lambda m: _rank(m, camera), reverse=True):
            if load[member] < share:
                owners[camera] = member
                load[member] += 1
                break
    return owners


class Keys:
    def __init__(self, prefix: str) -> None:
        self.members = f"{prefix}:members"
        self.prefix = prefix

    def lease(self, camera: str) -> str:
        return f"{self.prefix}:lease:{camera}"

    def status(self, camera: str) -> str:
        return f"{self.prefix}:status:{camera}"


class CameraAssignment:
    """Runs one Worker as a member of the group: starts and stops its cameras as the plan and the
    leases say. start() and stop() also start and stop the worker."""

    def __init__(self, worker: Worker, settings: AssignmentConfig) -> None:
        assert settings.url is not None  # checked by the config
        self.worker, self.settings = worker, settings
        self.worker_id = settings.worker_id or default_worker_id()
        self.cameras = [c.id for _, c in worker.config.cameras()]
        self.keys = Keys(settings.prefix)
        timeout = max(0.5, settings.heartbeat_s)
        self._redis = redis.Redis.from_url(settings.url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._heartbeat = self._redis.register_script(HEARTBEAT)
        self._renew = self._redis.register_script(RENEW)
        self._release = self._redis.register_script(RELEASE)
        self._ttl_ms = int(settings.ttl_s * 1000)
        self._leases: set[str] = set()  # cameras whose lease this worker holds (and which it analyses)
        self._valid_until = 0.0  # monotonic time before which the held leases are surely still ours
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self.worker.hold_cameras()
        self.worker.start()
        self._thread = threading.Thread(target=self._run, name="camera-assignment", daemon=True)
        self._thread.start()
        log.info("worker %s joined (%d cameras configured)", self.worker_id, len(self.cameras))

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.worker.stop()
        self._redis.close()

    def owned(self) -> set[str]:
        return set(self._leases)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    self.tick()
                    if self._failing:
                        log.info("worker %s: Redis reachable again", self.worker_id)
                        self._failing = False
                except redis.RedisError as e:
                    if not self._failing:
                        log.warning("worker %s: cannot reach Redis (%s)", self.worker_id, e)
                        self._failing = True
                    self._drop_expiring()
                except Exception:  # a bug in one round must not end the assignment
                    log.exception("camera assignment round failed")
                    self._drop_expiring()
                self._stopping.wait(max(0.0, self.settings.heartbeat_s - (time.monotonic() - started)))
        finally:
            self._leave()

    def tick(self) -> None:
        """One round: heartbeat, renew, give up what is planned elsewhere, take what is planned here."""
        sent = time.monotonic()
        members = [m.decode() for m in self._heartbeat(keys=[self.keys.members], args=[self.worker_id, self._ttl_ms])]
        held = sorted(self._leases)
        if held:
            kept = self._renew(keys=[self.keys.lease(c) for c in held], args=[self.worker_id, self._ttl_ms])
            for camera, ok in zip(held, kept, strict=True):
                if not ok:
                    log.warning("worker %s: lost the lease of camera %s", self.worker_id, camera)
                    self._stop_camera(camera, release=False)
        self._valid_until = sent + self.settings.ttl_s  # the leases were renewed no earlier than `sent`
        mine = {c for c, m in plan(self.cameras, members).items() if m == self.worker_id}
        for camera in sorted(self._leases - mine):
            self._stop_camera(camera, release=True)  # stopped first, released after
        for camera in sorted(mine - self._leases):
            if self._redis.set(self.keys.lease(camera), self.worker_id, nx=True, px=self._ttl_ms):
                self._leases.add(camera)
                self.worker.start_camera(camera)
        self._publish_status()

    def _stop_camera(self, camera: str, release: bool) -> None:
        self.worker.stop_camera(camera)
        self._leases.discard(camera)
        if release:
            self._release(keys=[self.keys.lease(camera)], args=[self.worker_id])

    def _drop_expiring(self) -> None:
        """Without a renewal, stop every camera one heartbeat before its lease could expire in Redis."""
        if self._leases and time.monotonic() >= self._valid_until - self.settings.heartbeat_s:
            log.warning("worker %s: leases not renewed in time; stopping cameras %s", self.worker_id,
                        ", ".join(sorted(self._leases)))
            for camera in sorted(self._leases):
                self.worker.stop_camera(camera)
            self._leases.clear()

    def _leave(self) -> None:
        """Stop every camera, then free its lease and the membership so others take over at once."""
        held = sorted(self._leases)
        for camera in held:
            self.worker.stop_camera(camera)
        self._leases.clear()
        try:
            if held:
                self._release(keys=[self.keys.lease(c) for c in held], args=[self.worker_id])
            self._redis.zrem(self.keys.members, self.worker_id)
            log.info("worker %s left; released cameras %s", self.worker_id, ", ".join(held) or "(none)")
        except redis.RedisError as e:
            log.warning("worker %s: could not leave cleanly (%s); its leases expire by themselves",
                        self.worker_id, e)

    def _publish_status(self) -> None:
        statuses = self.worker.camera_status()
        if not statuses:
            return
        pipe = self._redis.pipeline(transaction=False)
        for status in statuses:
            status = {**status, "worker": self.worker_id}
            pipe.set(self.keys.status(status["id"]), json.dumps(status, default=str), px=self._ttl_ms)
        pipe.execute()


def shared_camera_status(config: Config) -> Any:
    """For a process without a worker: every configured camera, with the status its worker published."""
    settings = config.assignment
    keys = Keys(settings.prefix)
    client = redis.Redis.from_url(settings.url, socket_timeout=2, socket_connect_timeout=2) if settings.url else None

    def status() -> list[dict[str, Any]]:
        cameras = config.cameras()
        found: list[Any] = [None] * len(cameras)
        error = "no worker is analysing this camera"
        if client is not None:
            try:
                found = client.mget([keys.status(c.id) for _, c in cameras])
            except redis.RedisError as e:
                error = f"worker status unavailable: {e}"
        out = []
        for (site, camera), raw in zip(cameras, found, strict=True):
            if raw:
                out.append(json.loads(raw))
            else:
                out.append({"id": camera.id, "name": camera.display_name, "site": site.id,
                            "url": redact_url(camera.url), "connected": False, "last_error": error})
        return out

    return status
