"""The events page in a real headless Chromium: newest events with their pictures, live updates."""

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.brightkitchen.test_store import T0, make_event

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page():
    if not shutil.which(CHROMIUM) or not _has_playwright():
        if os.environ.get("CI"):
            pytest.fail("Chromium and playwright are needed for the browser tests (scripts/install.sh --dev)")
        pytest.skip("no Chromium or playwright on this machine")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page, errors
        browser.close()


def _has_playwright() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return True


def _snapshot(running_api, event, colour: int) -> None:
    image = np.full((180, 320, 3), colour, np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    event.snapshot, event.snapshot_sha256 = running_api.snapshots.save(event.id, jpeg, T0.timestamp())


def test_page_lists_events_with_pictures_and_updates_live(running_api, browser_page):
    page, errors = browser_page
    running_api.cameras.append({"id": "c1", "name": "Kitchen 1", "site": "s1", "url": "rtsp://x", "connected": True})
    events = [make_event(i, rule_title=f"rule {i}") for i in range(3)]
    for i, e in enumerate(events):
        _snapshot(running_api, e, 60 * i)
        running_api.bus.publish(e)
    running_api.wait_stored(3)

    page.goto(running_api.url + "/")
    page.wait_for_function("document.querySelectorAll('article.event img').length === 3")
    # Newest first, each with its snapshot really loaded.
    assert page.locator("article.event .rule").all_inner_texts() == ["rule 2", "rule 1", "rule 0"]
    page.wait_for_function("[...document.querySelectorAll('article.event img')].every(i => i.naturalWidth === 320)")
    page.wait_for_function("document.getElementById('cameras').title.includes('Kitchen 1')")
    assert page.locator("#login").is_hidden()

    # A new event and a phase change arrive over server-sent events, without a reload.
    new = make_event(3, rule_title="rule 3")
    running_api.bus.publish(new)
    page.wait_for_function("document.querySelectorAll('article.event').length === 4")
    running_api.bus.publish(events[0].model_copy(update={"phase": "closed", "revision": 2}))
    page.wait_for_function(
        f"document.querySelector('article.event[data-id=\"{events[0].id}\"] .phase').dataset.phase === 'closed'"
    )
    assert page.locator("article.event .rule").first.inner_text() == "rule 3"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "events-page.png"))
    assert errors == []
