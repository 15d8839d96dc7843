"""The review workflow over the real API: transitions, audit trail, rectification uploads, statistics."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime

import cv2
import httpx
import numpy as np
import pytest

from tests.api.test_auth import AuthedApi, serve_authed_api
from tests.brightkitchen.test_store import make_event

JPEG = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
PNG = cv2.imencode(".png", np.full((48, 64, 3), 200, np.uint8))[1].tobytes()
MIB = 1024 * 1024


class Session:
    """Clients of the users that take part in the workflow."""

    def __init__(self, api: AuthedApi) -> None:
        self.api = api
        api.users.add_user("reg", "regulator", ["s1", "s2"], "regulator-pass")
        api.users.add_user("mgr", "site_manager", ["s1"], "manager-pass")
        api.users.add_user("mgr2", "site_manager", ["s2"], "manager-pass")
        self.reg = api.client(api.login("reg", "regulator-pass"))
        self.mgr = api.client(api.login("mgr", "manager-pass"))
        self.mgr2 = api.client(api.login("mgr2", "manager-pass"))

    def close(self) -> None:
        for http in (self.reg, self.mgr, self.mgr2):
            http.close()


@pytest.fixture
def workflow(tmp_path, database_url) -> Iterator[Session]:
    timezones = {"s1": "Asia/Shanghai", "s2": "UTC"}
    with serve_authed_api(tmp_path, site_timezones=timezones, database=database_url) as api:
        session = Session(api)
        yield session
        session.close()


def review(http: httpx.Client, event_id: str, decision: str, note: str = "") -> httpx.Response:
    return http.post(f"/api/v1/events/{event_id}/review", json={"decision": decision, "note": note})


def rectify(
    http: httpx.Client,
    event_id: str,
    note: str | None = "hats handed out",
    photo: bytes | None = None,
    filename: str = "after.jpg",
) -> httpx.Response:
    data = {} if note is None else {"note": note}
    files = {"photo": (filename, photo, "application/octet-stream")} if photo is not None else None
    return http.post(f"/api/v1/events/{event_id}/rectification", data=data, files=files)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_confirm_then_rectify_with_a_photo_leaves_an_audit_trail(workflow):
    api = workflow.api
    event = make_event(0, site="s1")
    api.store.upsert(event)
    t_confirm = api.clock.t
    r = review(workflow.reg, event.id, "confirmed", "no hat on camera 1")
    assert r.status_code == 200 and r.json()["review_state"] == "confirmed"
    r = review(workflow.reg, event.id, "confirmed")
    assert r.status_code == 409
    assert r.json()["detail"] == f"event {event.id!r} is confirmed: only a pending event can become confirmed"

    api.clock.t += 1800
    r = rectify(workflow.mgr, event.id, "  new hats for everyone  ", JPEG)
    assert r.status_code == 200 and r.json()["review_state"] == "rectified"
    r = rectify(workflow.mgr, event.id, "again", JPEG)
    assert r.status_code == 409 and "only a confirmed event can become rectified" in r.json()["detail"]

    digest = hashlib.sha256(JPEG).hexdigest()
    audit = workflow.reg.get(f"/api/v1/events/{event.id}/audit").json()
    assert audit == [
        {
            "event_id": event.id,
            "from_state": "pending",
            "to_state": "confirmed",
            "actor": "reg",
            "role": "regulator",
            "at": iso(t_confirm),
            "note": "no hat on camera 1",
            "photo_url": None,
            "photo_sha256": None,
        },
        {
            "event_id": event.id,
            "from_state": "confirmed",
            "to_state": "rectified",
            "actor": "mgr",
            "role": "site_manager",
            "at": iso(t_confirm + 1800),
            "note": "new hats for everyone",
            "photo_url": f"/api/v1/events/{event.id}/rectification.jpg",
            "photo_sha256": digest,
        },
    ]
    photo = workflow.reg.get(audit[1]["photo_url"])
    assert (
        photo.status_code == 200 and photo.content == JPEG and photo.headers["content-type"] == "image/jpeg"
    )
    assert photo.headers["x-photo-sha256"] == digest
    assert (api.snapshots.root / "rectifications" / f"{digest}.jpg").read_bytes() == JPEG
    r = workflow.reg.get(f"/api/v1/events/{event.id}/rectification.png")
    assert r.status_code == 404 and "rectification.jpg" in r.json()["detail"]

    # A later revision from the worker keeps the review state.
    api.store.upsert(event.model_copy(update={"phase": "closed", "revision": 2}))
    assert workflow.reg.get(f"/api/v1/events/{event.id}").json()["review_state"] == "rectified"


def test_false_positive_and_illegal_transitions(workflow):
    api = workflow.api
    pending, dismissed = make_event(0, site="s1"), make_event(1, site="s1")
    api.store.upsert(pending)
    api.store.upsert(dismissed)
    r = rectify(workflow.mgr, pending.id)
    assert r.status_code == 409
    assert (
        r.json()["detail"] == f"event {pending.id!r} is pending: only a confirmed event can become rectified"
    )

    r = review(workflow.reg, dismissed.id, "false_positive", "a white bowl, not a bare head")
    assert r.status_code == 200 and r.json()["review_state"] == "false_positive"
    r = review(workflow.reg, dismissed.id, "confirmed")
    assert r.status_code == 409 and "is false_positive" in r.json()["detail"]
    assert rectify(workflow.mgr, dismissed.id).status_code == 409

    for decision in ("rectified", "pending", "approved"):  # not decisions a review can make
        r = review(workflow.reg, pending.id, decision)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body.decision"
    assert (
        workflow.reg.post(
            f"/api/v1/events/{pending.id}/review", json={"decision": "confirmed", "extra": 1}
        ).status_code
        == 422
    )
    assert review(workflow.reg, "no-such-event", "confirmed").status_code == 404
    assert [a["to_state"] for a in workflow.reg.get(f"/api/v1/events/{dismissed.id}/audit").json()] == [
        "false_positive"
    ]
    assert workflow.reg.get(f"/api/v1/events/{pending.id}/audit").json() == []
    r = workflow.reg.get(f"/api/v1/events/{pending.id}/rectification.jpg")
    assert r.status_code == 404 and "no rectification photo" in r.json()["detail"]


def test_rectification_uploads_are_checked(workflow):
    api = workflow.api
    event = make_event(0, site="s1")
    api.store.upsert(event)
    assert review(workflow.reg, event.id, "confirmed").status_code == 200
    url = f"/api/v1/events/{event.id}/rectification"

    r = rectify(workflow.mgr, event.id, photo=b"\xff\xd8\xff" + b"\0" * (5 * MIB))  # one byte over 5 MiB
    assert r.status_code == 413 and "at most 5242880 bytes" in r.json()["detail"]
    r = rectify(workflow.mgr, event.id, photo=JPEG + b"\0" * (6 * MIB))  # refused on its Content-Length
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while reading
        yield b'--b\r\nContent-Disposition: form-data; name="photo"; filename="x.jpg"\r\n\r\n'
        for _ in range(7):
            yield b"\xff" * MIB

    r = workflow.mgr.post(url, content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413

    r = rectify(workflow.mgr, event.id, photo=b"GIF89a" + b"\0" * 100, filename="after.jpg")
    assert r.status_code == 415 and r.json()["detail"] == "the photo must be a JPEG or PNG image"
    r = workflow.mgr.post(url, json={"note": "done"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = workflow.mgr.post(
        url, content=b"a" * 100, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body.note"
    for note in (None, "   ", "x" * 2001):
        r = rectify(workflow.mgr, event.id, note=note, photo=PNG)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body.note"
    r = workflow.mgr.post(url, content=b"--b\r\n", headers={"Content-Type": "multipart/form-data"})
    assert (
        r.status_code == 400
        and r.json()["detail"] == "malformed form: Missing boundary in multipart."
    )
    assert (
        workflow.mgr.get(f"/api/v1/events/{event.id}").json()["review_state"] == "confirmed"
    )  # nothing stuck

    r = rectify(workflow.mgr, event.id, "cleaned, see photo", PNG, filename="after.png")
    assert r.status_code == 200
    photo = workflow.mgr.get(f"/api/v1/events/{event.id}/rectification.png")
    assert photo.content == PNG and photo.headers["content-type"] == "image/png"


def test_rectification_without_a_photo(workflow):
    event = make_event(0, site="s2")
    workflow.api.store.upsert(event)
    review(workflow.reg, event.id, "confirmed")
    assert rectify(workflow.mgr, event.id).status_code == 404  # another site's manager: not even its id
    r = rectify(workflow.mgr2, event.id, "staff retrained")
    assert r.status_code == 200 and r.json()["review_state"] == "rectified"
    audit = workflow.mgr2.get(f"/api/v1/events/{event.id}/audit").json()
    assert audit[-1]["photo_url"] is None and audit[-1]["note"] == "staff retrained"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def rates(events, pending, confirmed, false_positive, rectified, conf, fp, rect, mttr) -> dict:
    return {
        "events": events,
        "pending": pending,
        "confirmed": confirmed,
        "false_positive": false_positive,
        "rectified": rectified,
        "confirmation_rate": conf,
        "false_positive_rate": fp,
        "rectification_rate": rect,
        "mean_time_to_rectify_s": mttr,
    }


def test_statistics_on_a_known_dataset(workflow):
    api = workflow.api
    # s1 is in Asia/Shanghai (UTC+8): 16:30Z is already the next local day there. s2 counts days in UTC.
    events = {
        "a1": make_event(0, site="s1", rule="no_hat", started_at=at("2026-11-23T15:30:00+00:00")),
        "a2": make_event(1, site="s1", rule="no_hat", started_at=at("2026-11-23T16:30:00+00:00")),
        "a3": make_event(2, site="s1", rule="no_hat", started_at=at("2026-11-23T17:00:00+00:00")),
        "a4": make_event(3, site="s1", rule="smoking", started_at=at("2026-11-23T10:00:00+00:00")),
        "b1": make_event(4, site="s2", rule="no_hat", started_at=at("2026-11-23T16:30:00+00:00")),
        "b2": make_event(5, site="s2", rule="no_hat", started_at=at("2026-11-23T23:59:00+00:00")),
        "late": make_event(6, site="s2", rule="no_hat", started_at=at("2026-11-25T00:00:00+00:00")),
    }
    for e in events.values():
        api.store.upsert(e)
    for name in ("a1", "a2", "a4", "b1"):
        assert review(workflow.reg, events[name].id, "confirmed").status_code == 200
    assert review(workflow.reg, events["a3"].id, "false_positive").status_code == 200
    for name, http, after_s in (
        ("a1", workflow.mgr, 600),
        ("a2", workflow.mgr, 1200),
        ("b1", workflow.mgr2, 1200),
    ):
        api.clock.t += after_s  # a1 after 600 s, a2 after 1800 s, b1 after 3000 s
        assert rectify(http, events[name].id).status_code == 200

    window = {"since": "2026-11-23T00:00:00Z", "until": "2026-11-24T12:00:00Z"}
    report = workflow.reg.get("/api/v1/stats", params=window).json()
    assert report["since"] == "2026-11-23T00:00:00Z" and report["until"] == "2026-11-24T12:00:00Z"
    assert report["rows"] == [
        {"site": "s1", "rule": "no_hat", "day": "2026-11-23", **rates(1, 0, 0, 0, 1, 1.0, 0.0, 1.0, 600.0)},
        {"site": "s1", "rule": "no_hat", "day": "2026-11-24", **rates(2, 0, 0, 1, 1, 0.5, 0.5, 1.0, 1800.0)},
        {"site": "s1", "rule": "smoking", "day": "2026-11-23", **rates(1, 0, 1, 0, 0, 1.0, 0.0, 0.0, None)},
        {"site": "s2", "rule": "no_hat", "day": "2026-11-23", **rates(2, 1, 0, 0, 1, 1.0, 0.0, 1.0, 3000.0)},
    ]
    assert report["sites"] == [
        {"site": "s1", **rates(4, 0, 1, 1, 2, 0.75, 0.25, 2 / 3, 1200.0)},
        {"site": "s2", **rates(2, 1, 0, 0, 1, 1.0, 0.0, 1.0, 3000.0)},
    ]
    assert report["totals"] == rates(6, 1, 1, 1, 3, 0.8, 0.2, 0.75, 1800.0)

    narrow = workflow.reg.get("/api/v1/stats", params={"since": "2026-11-23T16:00:00", "site": "s1"}).json()
    assert [(r["rule"], r["day"], r["events"]) for r in narrow["rows"]] == [("no_hat", "2026-11-24", 2)]

    # A site manager's statistics cover its own site only.
    own = workflow.mgr.get("/api/v1/stats", params=window).json()
    assert [s["site"] for s in own["sites"]] == ["s1"] and own["totals"]["events"] == 4
    other = workflow.mgr.get("/api/v1/stats", params={**window, "site": "s2"}).json()
    assert other["rows"] == [] and other["totals"] == rates(0, 0, 0, 0, 0, None, None, None, None)

    csv = workflow.reg.get("/api/v1/stats.csv", params={**window, "site": "s1"})
    assert csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert csv.text.splitlines() == [
        "site,rule,day,events,pending,confirmed,false_positive,rectified,confirmation_rate,false_positive_rate,"
        "rectification_rate,mean_time_to_rectify_s",
        "s1,no_hat,2026-11-23,1,0,0,0,1,1.0,0.0,1.0,600.0",
        "s1,no_hat,2026-11-24,2,0,0,1,1,0.5,0.5,1.0,1800.0",
        "s1,smoking,2026-11-23,1,0,1,0,0,1.0,0.0,0.0,",
    ]
    assert workflow.reg.get("/api/v1/stats", params={"since": "last week"}).status_code == 422
