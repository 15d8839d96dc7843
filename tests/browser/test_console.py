"""The web console in a real Chromium, logged in as people log in: the regulator's queue, filters and
one-click review, the event's audit trail, the canteen manager's rectification with a photo, statistics,
English, and a phone's screen. Every action is checked in the API afterwards."""

import cv2
import numpy as np
import pytest

from tests.brightkitchen.test_store import T0, make_event
from tests.browser.conftest import PHONE, screenshot
from tests.live_service import PASSWORD, live_service, wait_for

EVENTS = [  # site, camera, rule, title
    ("s1", "cam1", "no_hat", "未戴厨师帽"),
    ("s1", "cam1", "no_hat", "未戴厨师帽"),
    ("s1", "cam1", "smoking", "吸烟"),
    ("s2", "cam2", "rodent", "鼠患"),
]


@pytest.fixture
def console(tmp_path, rtsp_server, h264_clip):
    camera = rtsp_server({"/cam1": h264_clip, "/cam2": h264_clip})
    with live_service(tmp_path, camera) as svc:
        events = []
        for i, (site, cam, rule, title) in enumerate(EVENTS):
            event = make_event(i, site=site, camera=cam, camera_name=f"Kitchen {cam[-1]}", rule=rule, rule_title=title)
            jpeg = cv2.imencode(".jpg", np.full((180, 320, 3), 40 + 50 * i, np.uint8))[1].tobytes()
            event.snapshot, event.snapshot_sha256 = svc.snapshots.save(event.id, jpeg, T0.timestamp())
            svc.bus.publish(event)
            events.append(event)
        svc.app.state.test_events = events
        wait_for(lambda: svc.store.count() == len(EVENTS), 10, "the events to be stored")
        yield svc


def _login(page, name: str) -> None:
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#login [name=username]", name)
    page.fill("#login [name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login", state="hidden")


def _event(svc, event_id: str, token: str) -> dict:
    with svc.client() as client:
        r = client.get(f"/api/v1/events/{event_id}", headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        return r.json()


def test_the_regulator_reviews_alerts_in_one_click(console, open_page):
    svc = console
    events = svc.app.state.test_events
    page = open_page(svc.url + "/")
    _login(page, "regulator")
    page.wait_for_function("document.querySelectorAll('article.event').length === 4")
    page.wait_for_function("[...document.querySelectorAll('article.event img')].every(i => i.naturalWidth === 320)")
    # Newest first, with site, camera, rule, time and review state.
    assert page.locator("article.event .rule").all_inner_texts() == ["鼠患", "吸烟", "未戴厨师帽", "未戴厨师帽"]
    assert page.locator("article.event .where").first.inner_text() == "s2 / Kitchen 2"
    assert set(page.locator("article.event .badge.state").all_inner_texts()) == {"待审核"}
    screenshot(page, "console-alerts")

    # Filters: one site, then one rule.
    page.select_option("#filters [name=site]", "s1")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('article.event').length === 3")
    page.select_option("#filters [name=rule]", "smoking")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('article.event').length === 1")
    page.select_option("#filters [name=rule]", "")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('article.event').length === 3")

    # One click confirms, one click dismisses; the API has it at once.
    confirm, dismiss = events[0], events[1]
    page.click(f"article.event[data-id='{confirm.id}'] button[data-decision=confirmed]")
    page.wait_for_function(
        f"document.querySelector(\"article.event[data-id='{confirm.id}']\").dataset.state === 'confirmed'")
    page.click(f"article.event[data-id='{dismiss.id}'] button[data-decision=false_positive]")
    page.wait_for_function(
        f"document.querySelector(\"article.event[data-id='{dismiss.id}']\").dataset.state === 'false_positive'")
    token = svc.tokens["regulator"]
    assert _event(svc, confirm.id, token)["review_state"] == "confirmed"
    assert _event(svc, dismiss.id, token)["review_state"] == "false_positive"
    assert page.locator(f"article.event[data-id='{confirm.id}'] button").count() == 0  # nothing left to decide

    # The review-state filter shows the queue still to do.
    page.select_option("#filters [name=state]", "pending")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('article.event').length === 1")

    # The event's page: its audit trail names who did what.
    page.goto(f"{svc.url}/#/event/{confirm.id}")
    page.wait_for_function("document.querySelectorAll('#audit li[data-to]').length === 1")
    assert "待审核 → 已确认" in page.locator("#audit li").inner_text()
    assert "regulator（监管人员）" in page.locator("#audit li").inner_text()
    assert page.locator("#detail-fields [data-field=state]").inner_text() == "已确认"
    assert page.locator("#rectify").is_hidden()  # rectification is the canteen manager's
    page.wait_for_function("document.getElementById('detail-snapshot').naturalWidth === 320")
    screenshot(page, "console-event")


def test_the_canteen_manager_records_a_rectification_with_a_photo(console, open_page, tmp_path):
    svc = console
    events = svc.app.state.test_events
    with svc.client() as client:
        r = client.post(f"/api/v1/events/{events[2].id}/review", json={"decision": "confirmed", "note": "seen"},
                        headers={"Authorization": f"Bearer {svc.tokens['regulator']}"})
        assert r.status_code == 200
    photo = tmp_path / "fixed.png"
    cv2.imwrite(str(photo), np.full((120, 160, 3), (40, 200, 40), np.uint8))

    page = open_page(svc.url + "/", viewport=PHONE)
    _login(page, "manager1")
    # Only its own site's alerts, and no review buttons.
    page.wait_for_function("document.querySelectorAll('article.event').length === 3")
    assert set(page.locator("article.event .where").all_inner_texts()) == {"s1 / Kitchen 1"}
    assert page.locator("article.event button[data-decision]").count() == 0
    screenshot(page, "console-manager-phone")

    page.click(f"article.event[data-id='{events[2].id}'] .rule")
    page.wait_for_selector("#rectify:not([hidden])")
    page.fill("#rectify [name=note]", "已清理吸烟区域并培训员工")
    page.set_input_files("#rectify [name=photo]", str(photo))
    page.click("#rectify button[type=submit]")
    page.wait_for_function("document.querySelector('#detail-fields [data-field=state]').textContent === '已整改'")
    page.wait_for_function("document.querySelectorAll('#audit li[data-to]').length === 2")
    page.wait_for_function("document.querySelector('#audit img.photo') && "
                           "document.querySelector('#audit img.photo').naturalWidth === 160")
    assert "已清理吸烟区域并培训员工" in page.locator("#audit").inner_text()
    screenshot(page, "console-rectification-phone")

    after = _event(svc, events[2].id, svc.tokens["manager1"])
    assert after["review_state"] == "rectified"
    with svc.client() as client:
        audit = client.get(f"/api/v1/events/{events[2].id}/audit",
                           headers={"Authorization": f"Bearer {svc.tokens['manager1']}"}).json()
    assert [a["to_state"] for a in audit] == ["confirmed", "rectified"]
    assert audit[1]["actor"] == "manager1" and audit[1]["photo_url"].endswith(".png")


def test_statistics_with_charts_in_both_languages(console, open_page):
    svc = console
    events = svc.app.state.test_events
    with svc.client() as client:
        headers = {"Authorization": f"Bearer {svc.tokens['regulator']}"}
        client.post(f"/api/v1/events/{events[0].id}/review", json={"decision": "confirmed"}, headers=headers)
        client.post(f"/api/v1/events/{events[3].id}/review", json={"decision": "false_positive"}, headers=headers)
    page = open_page(f"{svc.url}/#/stats", svc.tokens["regulator"])
    page.wait_for_selector("#totals .total")
    assert page.locator("[data-total=events] b").inner_text() == "4"
    assert page.locator("[data-total=pending] b").inner_text() == "2"
    assert page.locator("[data-total=confirm_rate] b").inner_text() == "50%"
    # One bar per rule, split by review state; one per site.
    labels = page.evaluate("[...document.querySelectorAll('#chart-rule svg text.label')].map(t => t.textContent)")
    assert sorted(labels) == sorted(["未戴厨师帽", "吸烟", "鼠患"])
    assert page.locator("#chart-site svg rect[data-state=false_positive]").count() == 1
    assert page.locator("#chart-day svg rect").count() >= 1
    assert page.locator("#stats-table tr").count() == 4  # header + 3 (site, rule) rows
    screenshot(page, "console-stats")

    page.click("#lang")
    page.wait_for_function("document.querySelector('[data-total=events] span').textContent === 'Alerts'")
    assert page.locator("nav a[data-route=stats]").inner_text() == "Statistics"
    assert page.evaluate("document.documentElement.lang") == "en"
    page.set_viewport_size(PHONE)
    screenshot(page, "console-stats-en-phone")
    # The choice is remembered.
    page.reload()
    page.wait_for_selector("#totals .total")
    assert page.locator("nav a[data-route=alerts]").inner_text() == "Alerts"


def test_the_console_loads_nothing_from_elsewhere(console, open_page):
    page = open_page(console.url + "/", console.tokens["admin"])
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.reload()
    page.wait_for_function("document.querySelectorAll('article.event').length === 4")
    page.goto(console.url + "/#/stats")
    page.wait_for_selector("#totals .total")
    # blob: URLs are the snapshots, fetched with the token and shown from memory.
    elsewhere = [url for url in requested if not url.startswith((console.url, "blob:"))]
    assert requested and elsewhere == []
