"""Every endpoint times every kind of caller, with the exact status each must get.

The event endpoints are called on an event of site s1 ("site A"); s2 is "site B". A caller that may use
an endpoint but not see site A gets 404 (ids of other sites do not leak); a role that may not use the
endpoint at all gets 403; missing, expired or revoked credentials get 401.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import Route

from brightkitchen.events import Event
from brightkitchen.review import ReviewStore, store_photo
from brightkitchen.users import LOCAL_ADMIN
from tests.api.test_auth import TTL_S, AuthedApi, serve_authed_api
from tests.api.test_review import JPEG
from tests.brightkitchen.test_store import make_event
from tests.databases import url_for

# The status each caller gets; the event endpoints are called on a site A event, {sub_id} is a
# subscription made by the "platform" key. Columns in the order of PRINCIPALS.
TABLE = """
                                                       adm regA regB mgrA parA plat  plB anon  exp  rev
GET    /                                               200  200  200  200  200  200  200  200  200  200
GET    /openapi.json                                   200  200  200  200  200  200  200  200  200  200
GET    /docs                                           200  200  200  200  200  200  200  200  200  200
GET    /docs/oauth2-redirect                           200  200  200  200  200  200  200  200  200  200
GET    /redoc                                          200  200  200  200  200  200  200  200  200  200
GET    /healthz                                        200  200  200  200  200  200  200  200  200  200
GET    /metrics                                        200  200  200  200  200  200  200  200  200  200
POST   /api/v1/auth/login                              200  200  200  200  200  200  200  200  200  200
POST   /api/v1/auth/logout                             204  204  204  204  204  400  400  401  401  401
GET    /api/v1/auth/me                                 200  200  200  200  200  200  200  401  401  401
GET    /api/v1/events                                  200  200  200  200  403  200  200  401  401  401
GET    /api/v1/events/stream                           200  200  200  200  403  200  200  401  401  401
GET    /api/v1/events/{event_id}                       200  200  404  200  403  200  404  401  401  401
GET    /api/v1/events/{event_id}/snapshot.jpg          200  200  404  200  403  200  404  401  401  401
POST   /api/v1/events/{event_id}/review                200  200  404  403  403  403  403  401  401  401
POST   /api/v1/events/{event_id}/rectification         200  403  403  200  403  403  403  401  401  401
GET    /api/v1/events/{event_id}/audit                 200  200  404  200  403  403  403  401  401  401
GET    /api/v1/events/{event_id}/rectification.{ext}   200  200  404  200  403  403  403  401  401  401
GET    /api/v1/cameras                                 200  200  200  200  403  200  200  401  401  401
GET    /api/v1/config/schema                           200  200  200  200  403  200  200  401  401  401
GET    /api/v1/models                                  200  200  200  200  403  200  200  401  401  401
GET    /api/v1/stats                                   200  200  200  200  403  200  200  401  401  401
GET    /api/v1/stats.csv                               200  200  200  200  403  200  200  401  401  401
POST   /api/v1/subscriptions                           201  403  403  403  403  201  201  401  401  401
GET    /api/v1/subscriptions                           200  403  403  403  403  200  200  401  401  401
GET    /api/v1/subscriptions/{sub_id}                  200  403  403  403  403  200  404  401  401  401
DELETE /api/v1/subscriptions/{sub_id}                  204  403  403  403  403  204  404  401  401  401
POST   /api/v1/subscriptions/{sub_id}/replay           200  403  403  403  403  200  404  401  401  401
GET    /static/{name}                                  200  200  200  200  200  200  200  200  200  200
GET    /live/{camera_id}                               200  200  200  200  200  200  200  200  200  200
GET    /api/v1/live/cameras                            200  200  200  200  200  403  403  401  401  401
POST   /api/v1/live/{camera_id}/offer                  503  503  404  503  503  403  403  401  401  401
DELETE /api/v1/live/sessions/{session_id}              404  404  404  404  404  403  403  401  401  401
"""
# The live view is off in this app (no video source): whoever may open camera A's stream gets 503.
PRINCIPALS = (
    "admin", "regulator_a", "regulator_b", "manager_a", "parent_a",
    "platform", "platform_b", "anonymous", "expired", "revoked",
)  # fmt: skip
MATRIX: dict[tuple[str, str], tuple[int, ...]] = {
    (method, path): tuple(int(status) for status in statuses)
    for method, path, *statuses in (line.split() for line in TABLE.strip().splitlines()[1:])
}
PASSWORD = "matrix-password"
# A subscription whose filter matches no event, so nothing is ever delivered.
SUBSCRIPTION = {"url": "http://127.0.0.1:9/hook", "filters": {"rules": ["matches-nothing"]}}

USERS = {  # principal -> (role, sites)
    "admin": ("admin", []),
    "regulator_a": ("regulator", ["s1"]),
    "regulator_b": ("regulator", ["s2"]),
    "manager_a": ("site_manager", ["s1"]),
    "parent_a": ("parent", ["s1"]),
    "expired": ("regulator", ["s1"]),
}


@dataclass
class World:
    api: AuthedApi
    reviews: ReviewStore
    credentials: dict[str, str | None]
    app_routes: set[tuple[str, str]]

    def headers(self, principal: str, fresh_session: bool = False) -> dict[str, str]:
        credential = self.credentials[principal]
        if fresh_session and principal in USERS and principal != "expired":
            credential = self.api.login(principal, PASSWORD)
        return {"Authorization": f"Bearer {credential}"} if credential else {}

    def event(self, site: str = "s1", state: str = "pending") -> Event:
        """A new event of the site, moved to the review state, with a snapshot (and a photo if rectified)."""
        event = make_event(0, site=site)
        event.snapshot, event.snapshot_sha256 = self.api.snapshots.save(event.id, JPEG, 0)
        self.api.store.upsert(event)
        if state in ("confirmed", "rectified"):
            self.reviews.transition(event, "confirmed", LOCAL_ADMIN)
        if state == "rectified":
            photo = store_photo(self.api.snapshots.root, JPEG, "jpg")
            self.reviews.transition(self.api.store.get(event.id), "rectified", LOCAL_ADMIN, "done", photo)
        return event


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("matrix")
    for database in url_for(request.param, folder):
        with serve_authed_api(folder, database=database) as api:
            yield from _world(api)


def _world(api: AuthedApi) -> Iterator[World]:
    api.cameras += [
        {"id": "cam-a", "name": "A", "site": "s1", "url": "rtsp://a", "connected": True},
        {"id": "cam-b", "name": "B", "site": "s2", "url": "rtsp://b", "connected": True},
    ]
    for name, (role, sites) in USERS.items():
        api.users.add_user(name, role, sites, PASSWORD)
    api.users.add_user("login-user", "regulator", ["s1"], PASSWORD)
    credentials: dict[str, str | None] = {"anonymous": None, "expired": api.login("expired", PASSWORD)}
    api.clock.t += TTL_S / 2
    for name in USERS:
        if name != "expired":
            credentials[name] = api.login(name, PASSWORD)
    api.clock.t += TTL_S / 2  # the first login has expired, the others have half their life left
    credentials["platform"] = api.users.add_key("platform", [])[1]
    credentials["platform_b"] = api.users.add_key("platform-b", ["s2"])[1]
    credentials["revoked"] = api.users.add_key("revoked", [])[1]
    api.users.revoke_key("revoked")
    yield World(api, ReviewStore(api.store, api.clock), credentials, _app_routes(api.app))


HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}


def _app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every HTTP endpoint: the OpenAPI document's, and the app's own undocumented ones."""
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method.upper() in HTTP_METHODS
    }
    undocumented = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    return documented | undocumented


def request_for(world: World, route: tuple[str, str], principal: str) -> tuple[str, str, dict[str, Any]]:
    method, path = route
    kwargs: dict[str, Any] = {"headers": world.headers(principal, fresh_session=path.endswith("/logout"))}
    if "{event_id}" in path:
        state = {"review": "pending", "rectification": "confirmed", "rectification.{ext}": "rectified"}
        event = world.event(state=state.get(path.rsplit("/", 1)[1], "pending"))
        path = path.replace("{event_id}", event.id).replace("{ext}", "jpg")
    if "{sub_id}" in path:
        with world.api.client(world.credentials["platform"]) as http:
            created = http.post("/api/v1/subscriptions", json=SUBSCRIPTION)
        assert created.status_code == 201, created.text
        path = path.replace("{sub_id}", created.json()["id"])
    path = path.replace("{name}", "console.js").replace("{camera_id}", "cam-a").replace("{session_id}", "none")
    if path.endswith("/offer"):
        kwargs["json"] = {"sdp": "v=0 H264", "type": "offer"}
    if path == "/api/v1/subscriptions" and method == "POST":
        kwargs["json"] = SUBSCRIPTION
    elif path.endswith("/login"):
        kwargs["json"] = {"username": "login-user", "password": PASSWORD}
    elif path.endswith("/review"):
        kwargs["json"] = {"decision": "confirmed", "note": "seen"}
    elif path.endswith("/rectification"):
        kwargs["data"] = {"note": "fixed"}
        kwargs["files"] = {"photo": ("after.jpg", JPEG, "image/jpeg")}
    return method, path, kwargs


def test_every_route_is_in_the_matrix(world):
    assert world.app_routes == set(MATRIX), "add the new endpoints to MATRIX with the status of every caller"


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("route", list(MATRIX), ids=" ".join)
def test_role_matrix(world, route, principal):
    expected = MATRIX[route][PRINCIPALS.index(principal)]
    method, url, kwargs = request_for(world, route, principal)
    with world.api.client() as http:
        if route[1].endswith("/stream"):
            with http.stream(method, url, **kwargs) as r:
                status = r.status_code
        else:
            status = http.request(method, url, **kwargs).status_code
    assert status == expected, f"{principal} {method} {url}"


def test_other_sites_events_are_not_found(world):
    """A site manager reaching for site B's event, and a regulator confirming outside its jurisdiction."""
    event_b = world.event(site="s2", state="confirmed")
    with world.api.client() as http:
        for suffix in ("", "/snapshot.jpg", "/audit", "/rectification.jpg"):
            r = http.get(f"/api/v1/events/{event_b.id}{suffix}", headers=world.headers("manager_a"))
            assert r.status_code == 404 and r.json()["detail"] == f"no event {event_b.id!r}"
        r = http.post(
            f"/api/v1/events/{event_b.id}/rectification",
            data={"note": "x"},
            headers=world.headers("manager_a"),
        )
        assert r.status_code == 404
        pending_b = world.event(site="s2")
        r = http.post(
            f"/api/v1/events/{pending_b.id}/review",
            json={"decision": "confirmed"},
            headers=world.headers("regulator_a"),
        )
        assert r.status_code == 404
    assert world.api.store.get(pending_b.id).review_state == "pending"


def test_lists_show_only_the_callers_sites(world):
    world.event(site="s1")
    world.event(site="s2")
    expected = {
        "admin": {"s1", "s2"},
        "regulator_a": {"s1"},
        "regulator_b": {"s2"},
        "manager_a": {"s1"},
        "platform": {"s1", "s2"},
        "platform_b": {"s2"},
    }
    with world.api.client() as http:
        for principal, sites in expected.items():
            headers = world.headers(principal)
            events = http.get("/api/v1/events", params={"limit": 500}, headers=headers).json()["items"]
            assert {e["site"] for e in events} == sites, principal
            cameras = http.get("/api/v1/cameras", headers=headers).json()
            assert {c["site"] for c in cameras} == sites, principal
            stats = http.get("/api/v1/stats", headers=headers).json()
            assert {s["site"] for s in stats["sites"]} == sites, principal
            asked_b = http.get("/api/v1/events", params={"site": "s2"}, headers=headers).json()["items"]
            assert bool(asked_b) == ("s2" in sites), principal


def test_parents_may_only_watch(world):
    with world.api.client() as http:
        me = http.get("/api/v1/auth/me", headers=world.headers("parent_a")).json()
        assert me == {"name": "parent_a", "role": "parent", "sites": ["s1"], "auth_enabled": True}
        r = http.get("/api/v1/events", headers=world.headers("parent_a"))
        assert r.status_code == 403 and r.json()["detail"] == "the parent role may not use this endpoint"
