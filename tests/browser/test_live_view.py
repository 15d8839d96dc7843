"""The live view in a real Chromium: frames really arrive (counted with requestVideoFrameCallback), as H.264;
parents reach only their own school and only in viewing hours; the page recovers when the camera restarts."""

from datetime import UTC, datetime

import pytest

from tests.browser.conftest import PHONE, screenshot
from tests.live_service import live_service, wait_for, window_around

# The test's own frame counter, independent of the page's: every frame the <video> presents.
COUNT_FRAMES = """() => {
  window.testFrames = 0;
  const video = document.querySelector('video');
  const tick = () => { window.testFrames += 1; video.requestVideoFrameCallback(tick); };
  video.requestVideoFrameCallback(tick);
}"""
CODEC = """async () => {
  const stats = await window.livePlayer.pc.getStats();
  let codec = null, decoded = 0;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') { codec = stats.get(r.codecId); decoded = r.framesDecoded; }
  });
  return {mime: codec && codec.mimeType, decoded};
}"""


@pytest.fixture
def camera(rtsp_server, h264_clip):
    return rtsp_server({"/cam1": h264_clip, "/cam2": h264_clip})


def _frames(page) -> int:
    return page.evaluate("window.testFrames")


def _status(page) -> str:
    return page.evaluate("document.getElementById('status').dataset.status")


def test_a_parent_watches_its_school_live_in_h264(tmp_path, camera, open_page):
    with live_service(tmp_path, camera) as svc:
        page = open_page(f"{svc.url}/live/cam1", svc.tokens["parent1"], viewport=PHONE)
        page.evaluate(COUNT_FRAMES)
        page.wait_for_function("window.testFrames >= 50", timeout=30_000)
        codec = page.evaluate(CODEC)
        assert codec["mime"] == "video/H264" and codec["decoded"] >= 50
        assert _status(page) == "live"
        assert page.evaluate("window.livePlayer.stats.firstFrameMs") > 0
        # The picture really is the camera's: 640x360, as the clip.
        size = page.evaluate("(v => [v.videoWidth, v.videoHeight])(document.querySelector('video'))")
        assert size == [640, 360]
        assert page.locator("#camera-name").inner_text() == "Kitchen 1"
        screenshot(page, "live-phone")


def test_a_parent_cannot_open_another_schools_stream(tmp_path, camera, open_page):
    with live_service(tmp_path, camera) as svc:
        page = open_page(f"{svc.url}/live/cam2", svc.tokens["parent1"])
        page.evaluate(COUNT_FRAMES)
        page.wait_for_function("document.getElementById('status').dataset.status === 'no_camera'")
        page.wait_for_timeout(2000)
        assert _frames(page) == 0
        assert not svc.sessions()
        assert "没有这个摄像头" in page.locator("#status").inner_text()


def test_a_parent_outside_viewing_hours_sees_why_and_no_video(tmp_path, camera, open_page):
    past = window_around(datetime.now(UTC), 7200, -3600)
    with live_service(tmp_path, camera, viewing=past) as svc:
        page = open_page(f"{svc.url}/live/cam1", svc.tokens["parent1"])
        page.evaluate(COUNT_FRAMES)
        page.wait_for_function("document.getElementById('status').dataset.status === 'outside_viewing_hours'")
        page.wait_for_timeout(2000)
        assert _frames(page) == 0 and not svc.sessions()
        assert page.locator("#overlay").inner_text() == "不在开放观看时间内"
        screenshot(page, "live-outside-hours")


def test_the_session_ends_when_the_viewing_window_closes(tmp_path, camera, open_page):
    closing = window_around(datetime.now(UTC), 3600, 8)
    with live_service(tmp_path, camera, viewing=closing) as svc:
        page = open_page(f"{svc.url}/live/cam1", svc.tokens["parent1"])
        page.evaluate(COUNT_FRAMES)
        page.wait_for_function("window.testFrames >= 10", timeout=30_000)
        page.wait_for_function("document.getElementById('status').dataset.status === 'outside_viewing_hours'",
                               timeout=30_000)
        page.wait_for_timeout(1000)
        frames = _frames(page)
        page.wait_for_timeout(1500)
        assert _frames(page) == frames, "video went on after the window closed"
        assert not svc.sessions()


def test_the_viewer_limit_is_explained(tmp_path, camera, open_page):
    with live_service(tmp_path, camera, max_viewers=1) as svc:
        first = open_page(f"{svc.url}/live/cam1", svc.tokens["parent1"])
        first.evaluate(COUNT_FRAMES)
        first.wait_for_function("window.testFrames >= 5", timeout=30_000)
        second = open_page(f"{svc.url}/live/cam1", svc.tokens["regulator"])
        second.wait_for_function("document.getElementById('status').dataset.status === 'viewer_limit'")
        assert second.locator("#status").inner_text() == "观看人数已满，稍后自动重试"
        assert len(svc.sessions()) == 1


def test_the_page_recovers_after_the_camera_restarts(tmp_path, camera, open_page):
    with live_service(tmp_path, camera) as svc:
        page = open_page(f"{svc.url}/live/cam1", svc.tokens["admin"])
        page.evaluate(COUNT_FRAMES)
        page.wait_for_function("window.testFrames >= 25", timeout=30_000)
        camera.stop()
        page.wait_for_function("document.getElementById('status').dataset.status === 'camera_offline'",
                               timeout=20_000)
        assert page.locator("#overlay").is_visible()
        screenshot(page, "live-camera-offline")
        stalled = _frames(page)
        page.wait_for_timeout(1000)
        assert _frames(page) <= stalled + 1
        camera.start()
        page.wait_for_function(f"window.testFrames >= {stalled + 50}", timeout=30_000)
        assert _status(page) == "live" and page.locator("#overlay").is_hidden()
        # The same session went on: the server reconnected the camera, the browser kept its connection.
        assert len(svc.sessions()) == 1 and svc.live._feeds["cam1"].reconnects >= 1
        assert page.evaluate("window.livePlayer.stats.reconnects") == 0


def test_the_live_wall_plays_every_camera_the_user_may_see(tmp_path, camera, open_page):
    with live_service(tmp_path, camera) as svc:
        page = open_page(f"{svc.url}/#/wall", svc.tokens["regulator"])
        page.wait_for_function("document.querySelectorAll('.tile').length === 2")
        page.wait_for_function("[...document.querySelectorAll('.tile')].every(t => t.dataset.status === 'live')",
                               timeout=30_000)
        page.wait_for_function("[...document.querySelectorAll('.tile video')].every(v => v.videoWidth === 640)")
        assert page.locator(".tile .name").all_inner_texts() == ["Kitchen 1", "Kitchen 2"]
        # Statuses refresh every 5 s: each camera has this one viewer now.
        page.wait_for_function(
            "[...document.querySelectorAll('.tile .viewers')].every(v => v.textContent === '1/8 人观看')",
            timeout=15_000)
        screenshot(page, "live-wall")
        # A parent's wall holds its own school's camera only, and no alerts or statistics.
        parent = open_page(f"{svc.url}/#/alerts", svc.tokens["parent1"], viewport=PHONE)
        parent.wait_for_function("document.querySelectorAll('.tile').length === 1")
        assert parent.locator(".tile").get_attribute("data-camera") == "cam1"
        assert parent.locator("#view-alerts").is_hidden()
        assert parent.locator("nav a:visible").all_inner_texts() == ["实时画面"]
        wait_for(lambda: len(svc.sessions()) == 3, 20, "three viewers")


def test_privacy_mode_plays_blurred_video_in_the_browser(tmp_path, rtsp_server, demo_clip, open_page):
    from streams.live import face_detector
    from tests.live_service import live_config

    camera = rtsp_server({"/cam1": demo_clip, "/cam2": demo_clip})
    detector = face_detector(live_config({"cam1": "x", "cam2": "y"}, viewing=window_around(datetime.now(UTC), 60, 60)))
    with live_service(tmp_path, camera, privacy="blur_faces", face_detector=detector) as svc:
        page = open_page(f"{svc.url}/live/cam1", svc.tokens["parent1"])
        page.evaluate(COUNT_FRAMES)
        page.wait_for_function("window.testFrames >= 50", timeout=60_000)
        assert page.evaluate(CODEC)["mime"] == "video/H264"
        assert page.locator("#privacy").is_visible() and page.locator("#privacy").inner_text() == "人脸已模糊"
        blur = svc.live._feeds["cam1"].blur
        assert blur is not None and blur.frames >= 50
        page.wait_for_function("window.testFrames >= 200", timeout=60_000)  # the demo's workers are in view
        assert blur.faces > 0, "faces were found and blurred"
        screenshot(page, "live-privacy")
