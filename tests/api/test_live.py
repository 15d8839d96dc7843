"""The live view's signalling against a real loopback RTSP camera, with WebRTC viewers made by aiortc:
who may watch what and when, the viewer limit, one camera pull for many viewers, H.264 only."""

import asyncio
import threading
from datetime import UTC, datetime

import httpx
import pytest

from benchmarks.live_client import Refused, offer_pc, watch
from tests.live_service import live_service, wait_for, window_around


@pytest.fixture
def camera(rtsp_server, h264_clip):
    return rtsp_server({"/cam1": h264_clip, "/cam2": h264_clip})


def _live_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("live-")]


async def _watch_until(url, camera_id, token, frames, timeout_s=20.0, viewers=1):
    opened = [await watch(url, camera_id, token) for _ in range(viewers)]
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while min(v.frames for v in opened) < frames:
            assert asyncio.get_running_loop().time() < deadline, [v.frames for v in opened]
            await asyncio.sleep(0.1)
        return opened
    finally:
        for v in opened:
            await v.close()


def test_viewers_share_one_pull_and_get_h264_frames(tmp_path, camera):
    with live_service(tmp_path, camera) as svc:
        viewers = asyncio.run(_watch_until(svc.url, "cam1", svc.tokens["parent1"], frames=30, viewers=3))
        assert all(v.frames >= 30 for v in viewers)
        # The answer sends H.264 and nothing else: the camera's stream goes out as it came in.
        video = viewers[0].answer_sdp.split("m=video", 1)[1]
        codecs = {line.split()[1].split("/")[0] for line in video.splitlines() if line.startswith("a=rtpmap:")}
        assert codecs <= {"H264", "rtx"} and "H264" in codecs
        feed = svc.live._feeds["cam1"]
        assert feed.reconnects == 0 and feed.keyframes >= 1
        assert _live_threads().count("live-cam1") == 1  # one RTSP pull for the three viewers
        wait_for(lambda: not svc.sessions(), 10, "the sessions to end")
        # With nobody watching, the pull closes after live.idle_close_s.
        wait_for(lambda: "live-cam1" not in _live_threads(), 10, "the idle pull to close")


def test_parent_sees_and_opens_only_its_own_school(tmp_path, camera):
    with live_service(tmp_path, camera) as svc, svc.client() as client:
        headers = {"Authorization": f"Bearer {svc.tokens['parent1']}"}
        listed = client.get("/api/v1/live/cameras", headers=headers).json()
        assert [c["id"] for c in listed] == ["cam1"] and listed[0]["watchable"] is True
        with pytest.raises(Refused) as refused:
            asyncio.run(watch(svc.url, "cam2", svc.tokens["parent1"]))
        assert refused.value.status == 404 and refused.value.detail["code"] == "no_camera"
        # The regulator of both schools sees both; parents cannot read events at all.
        regulator = {"Authorization": f"Bearer {svc.tokens['regulator']}"}
        assert [c["id"] for c in client.get("/api/v1/live/cameras", headers=regulator).json()] == ["cam1", "cam2"]
        assert client.get("/api/v1/events", headers=headers).status_code == 403
        assert client.get("/api/v1/live/cameras").status_code == 401
        assert "live-cam2" not in _live_threads()


def test_parent_outside_viewing_hours_is_refused_but_staff_may_watch(tmp_path, camera):
    past = window_around(datetime.now(UTC), 7200, -3600)  # ended an hour ago
    with live_service(tmp_path, camera, viewing=past) as svc, svc.client() as client:
        headers = {"Authorization": f"Bearer {svc.tokens['parent1']}"}
        listed = client.get("/api/v1/live/cameras", headers=headers).json()
        assert listed[0]["watchable"] is False and listed[0]["reason"] == "outside_viewing_hours"
        with pytest.raises(Refused) as refused:
            asyncio.run(watch(svc.url, "cam1", svc.tokens["parent1"]))
        assert refused.value.status == 403 and refused.value.detail["code"] == "outside_viewing_hours"
        assert not svc.sessions()
        viewers = asyncio.run(_watch_until(svc.url, "cam1", svc.tokens["manager1"], frames=10))
        assert viewers[0].frames >= 10


def test_a_parents_session_ends_when_the_viewing_window_closes(tmp_path, camera):
    closing = window_around(datetime.now(UTC), 3600, 6)

    async def run(svc):
        viewer = await watch(svc.url, "cam1", svc.tokens["parent1"])
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while not any(m.get("type") == "end" for m in viewer.messages):
                assert asyncio.get_running_loop().time() < deadline, viewer.messages
                await asyncio.sleep(0.1)
            frames_at_end = viewer.frames
            await asyncio.sleep(1.0)  # what was in flight when the server ended the session
            settled = viewer.frames
            await asyncio.sleep(1.5)
            return viewer, frames_at_end, settled
        finally:
            await viewer.close()

    with live_service(tmp_path, camera, viewing=closing) as svc:
        viewer, frames_at_end, settled = asyncio.run(run(svc))
        assert frames_at_end > 0, "video played before the window closed"
        assert {"type": "end", "reason": "outside_viewing_hours"} in viewer.messages
        assert viewer.frames == settled, "no video after the end"
        assert not svc.sessions()


def test_viewer_limit_per_camera_gives_a_clear_refusal(tmp_path, camera):
    async def run(svc):
        first = await watch(svc.url, "cam1", svc.tokens["parent1"])
        try:
            with pytest.raises(Refused) as refused:
                await watch(svc.url, "cam1", svc.tokens["regulator"])
            # Another camera has its own limit.
            other = await _watch_until(svc.url, "cam2", svc.tokens["regulator"], frames=5)
            assert other[0].frames >= 5
            return refused.value
        finally:
            await first.close()

    with live_service(tmp_path, camera, max_viewers=1) as svc:
        refused = asyncio.run(run(svc))
        assert refused.status == 503
        assert refused.detail["code"] == "viewer_limit" and refused.detail["max_viewers"] == 1
        assert "maximum of 1 viewers" in refused.detail["message"]
        # Once the first viewer has left, there is room again.
        wait_for(lambda: not svc.sessions(), 10, "the session to end")
        assert asyncio.run(_watch_until(svc.url, "cam1", svc.tokens["parent1"], frames=5))[0].frames >= 5


def test_bad_offers_get_clear_errors(tmp_path, camera):
    with live_service(tmp_path, camera) as svc, httpx.Client(base_url=svc.url, timeout=30) as client:
        headers = {"Authorization": f"Bearer {svc.tokens['admin']}"}
        r = client.post("/api/v1/live/cam1/offer", json={"sdp": "v=0", "type": "offer"}, headers=headers)
        assert r.status_code == 400 and r.json()["detail"]["code"] == "no_h264"
        r = client.post("/api/v1/live/cam1/offer", json={"sdp": "v=0 H264 nonsense", "type": "offer"},
                        headers=headers)
        assert r.status_code == 400 and r.json()["detail"]["code"] == "bad_offer"
        assert client.post("/api/v1/live/cam1/offer", json={"type": "offer"}, headers=headers).status_code == 422
        assert client.post("/api/v1/live/nope/offer", json={"sdp": "H264", "type": "offer"},
                           headers=headers).status_code == 404
        assert not svc.sessions()
        r = client.delete("/api/v1/live/sessions/nope", headers=headers)
        assert r.status_code == 404


def test_a_viewer_that_never_connects_gives_its_place_back(tmp_path, camera, monkeypatch):
    import api.live

    monkeypatch.setattr(api.live, "CONNECT_TIMEOUT_S", 1.0)

    async def offer_and_vanish(svc):
        # The page sends its offer, then is gone before it applies the answer: nothing ever connects.
        pc, _ = offer_pc()
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
            r = await client.post("/api/v1/live/cam1/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"},
                                  headers={"Authorization": f"Bearer {svc.tokens['parent1']}"})
        await pc.close()
        return r.json()["session"]

    with live_service(tmp_path, camera, max_viewers=1) as svc:
        session = asyncio.run(offer_and_vanish(svc))
        assert list(svc.sessions()) == [session]
        wait_for(lambda: not svc.sessions(), 10, "the unconnected session to end")
        # Its place is free again.
        assert asyncio.run(_watch_until(svc.url, "cam1", svc.tokens["parent1"], frames=5))[0].frames >= 5
