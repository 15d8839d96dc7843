"""From RTSP cameras to violation events in the API: the real server, reader, model, rules, store and API."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from brightkitchen.config import parse_config
from brightkitchen.demo import demo_config
from brightkitchen.service import build_service
from models.cards import builtin_model_path, find_card
from streams.rtsp_launcher import free_port
from tests.serving import serve_in_thread


def two_camera_config(data_dir: Path, url1: str, url2: str):
    data = demo_config(data_dir, url1).model_dump(mode="json")
    cam = data["sites"][0]["cameras"][0]
    data["sites"][0]["cameras"] = [cam, {**cam, "id": "kitchen-2", "name": "Kitchen 2", "url": url2}]
    data["worker"].update(open_timeout_s=2.0, read_timeout_s=1.5, backoff_max_s=2.0)
    return parse_config(data, "test config", data_dir, environ={})


def camera(http: httpx.Client, camera_id: str) -> dict:
    return next(c for c in http.get("/api/v1/cameras").json() if c["id"] == camera_id)


def test_cameras_to_events_with_outages(tmp_path, demo_clip, rtsp_server, wait_until):
    server1 = rtsp_server({"/kitchen-1": demo_clip})
    server2 = rtsp_server({"/kitchen-2": demo_clip})
    config = two_camera_config(tmp_path, server1.url("/kitchen-1"), server2.url("/kitchen-2"))
    service = build_service(config)
    card = find_card(builtin_model_path("kitchen-starter"))
    with serve_in_thread(service.app()) as url, httpx.Client(base_url=url, timeout=10) as http:
        # Frames flow to events: the hatless worker enters at 3 s and stays for 22 s.
        def no_hat_events():
            return http.get("/api/v1/events", params={"rule": "no_hat", "camera": "kitchen-1"}).json()["items"]

        events = wait_until(no_hat_events, timeout_s=90, what="a no_hat event from kitchen-1")
        event = events[0]
        assert event["site"] == "demo-school" and event["class_name"] == "head_bare"
        assert event["model"] == {"name": "kitchen-starter", "version": card.version}
        assert event["frame_size"] == [640, 360] and event["boxes"][0]["label"] == "head_bare"
        assert event["score"] >= 0.4 and event["track_id"] >= 0
        snapshot = http.get(f"/api/v1/events/{event['id']}/snapshot.jpg")
        assert snapshot.status_code == 200
        assert hashlib.sha256(snapshot.content).hexdigest() == event["snapshot_sha256"]
        image = cv2.imdecode(np.frombuffer(snapshot.content, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (360, 640, 3)

        status = camera(http, "kitchen-1")
        assert status["connected"] and status["decode_mode"] == "keyframes"
        assert "1 fps" in status["decode_mode_reason"]

        # Camera 2's server hangs: its reader times out and says so; camera 1 keeps being analysed.
        server2.pause()
        wait_until(lambda: not camera(http, "kitchen-2")["connected"], timeout_s=20, what="kitchen-2 down")
        assert "timed out" in camera(http, "kitchen-2")["last_error"]
        seen = camera(http, "kitchen-1")["last_frame_at"]
        wait_until(lambda: camera(http, "kitchen-1")["last_frame_at"] > seen, timeout_s=10, what="kitchen-1 frames")
        server2.resume()
        wait_until(lambda: camera(http, "kitchen-2")["connected"], timeout_s=30, what="kitchen-2 back")
        assert camera(http, "kitchen-2")["reconnects"] >= 1

        # Camera 1's server dies and comes back on the same port.
        server1.stop()
        wait_until(lambda: not camera(http, "kitchen-1")["connected"], timeout_s=20, what="kitchen-1 down")
        assert camera(http, "kitchen-1")["last_error"]
        server1.start()
        wait_until(lambda: camera(http, "kitchen-1")["connected"], timeout_s=30, what="kitchen-1 back")

        # The violation closes (the worker left the scene, or the camera went dark): no event stays open.
        closed = wait_until(
            lambda: http.get(f"/api/v1/events/{event['id']}").json()["phase"] == "closed",
            timeout_s=30, what="the no_hat event closed",
        )
        assert closed
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["cameras"] == 2 and health["events"] >= 1
        metrics = http.get("/metrics").text
        assert 'brightkitchen_frames_analysed_total{camera="kitchen-1"}' in metrics
        assert 'brightkitchen_camera_connected{camera="kitchen-2"} 1.0' in metrics


def test_unreachable_camera_is_reported_not_fatal(tmp_path, demo_clip, rtsp_server, wait_until):
    server = rtsp_server({"/kitchen-1": demo_clip})
    dead = f"rtsp://127.0.0.1:{free_port()}/nothing"
    config = two_camera_config(tmp_path, server.url("/kitchen-1"), dead)
    service = build_service(config)
    with serve_in_thread(service.app()) as url, httpx.Client(base_url=url, timeout=10) as http:
        wait_until(lambda: camera(http, "kitchen-2")["last_error"], timeout_s=20, what="an error for kitchen-2")
        dead_status = camera(http, "kitchen-2")
        assert not dead_status["connected"] and "refused" in dead_status["last_error"]
        wait_until(lambda: camera(http, "kitchen-1")["analysed_fps"] > 0, timeout_s=20, what="kitchen-1 analysed")


def test_demo_command_serves_events(tmp_path):
    """The README's demo command on its embedded defaults, as a user runs it."""
    port = free_port()
    cmd = [sys.executable, "-m", "brightkitchen.cli", "demo", "--port", str(port), "--data-dir", str(tmp_path),
           "--seconds", "150"]
    # Ctrl-C as in a terminal: a test run started in the background (`cmd &`) has SIGINT ignored, and an
    # ignored signal stays ignored in the child; a handled one is reset to the default there.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 150
        items: list = []
        while time.monotonic() < deadline and not items:
            assert proc.poll() is None, proc.stdout.read()
            try:
                items = httpx.get(f"http://127.0.0.1:{port}/api/v1/events", timeout=5).json()["items"]
            except httpx.TransportError:
                pass
            time.sleep(1)
        assert items, "no events within the demo's first minutes"
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "明厨亮灶" in page.text
        shot = httpx.get(f"http://127.0.0.1:{port}/api/v1/events/{items[0]['id']}/snapshot.jpg", timeout=5)
        assert shot.status_code == 200 and shot.content[:2] == b"\xff\xd8"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert "demo camera served at rtsp://127.0.0.1:" in out
    assert proc.returncode == 130 and "Traceback" not in out, out[-3000:]  # 130: stopped by Ctrl-C, cleanly
    assert not (Path(tmp_path) / "demo-kitchen-v1.part.h264").exists()


def test_missing_model_file_is_a_clear_error(tmp_path):
    data = demo_config(tmp_path, "rtsp://127.0.0.1:1/x").model_dump(mode="json")
    data["models"][0]["path"] = str(tmp_path / "missing.onnx")
    config = parse_config(data, "test config", tmp_path, environ={})
    with pytest.raises(ValueError, match="missing.onnx"):
        build_service(config)
