"""Login, tokens, API keys and the login rate limit, against the real API on uvicorn over SQLite."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.app import AppContext, create_app
from brightkitchen.bus import InProcessBus
from brightkitchen.config import AuthConfig
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore
from brightkitchen.users import UserStore
from tests.brightkitchen.test_store import make_event
from tests.serving import serve_in_thread

T_START = 1_800_000_000.0
TTL_S = 3600.0


class Clock:
    """The API's clock, moved by the test."""

    def __init__(self, t: float = T_START) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class AuthedApi:
    url: str
    store: EventStore
    users: UserStore
    snapshots: SnapshotStore
    bus: InProcessBus
    clock: Clock
    app: FastAPI | None = None
    cameras: list[dict] = field(default_factory=list)

    def client(self, credential: str | None = None, **headers: str) -> httpx.Client:
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def login(self, name: str, password: str) -> str:
        with self.client() as http:
            r = http.post("/api/v1/auth/login", json={"username": name, "password": password})
        assert r.status_code == 200, r.text
        return r.json()["token"]


@contextmanager
def serve_authed_api(
    tmp_path: Path,
    clock: Clock | None = None,
    *,
    site_timezones: dict[str, str] | None = None,
    log_level: str = "warning",
    database: str | None = None,
) -> Iterator[AuthedApi]:
    """The real API with auth enabled (token TTL one hour), its clock under the test's control."""
    clock = clock or Clock()
    store = EventStore(database or f"sqlite:///{tmp_path}/bk.db")
    snapshots = SnapshotStore(tmp_path / "snapshots")
    bus = InProcessBus()
    api = AuthedApi("", store, UserStore(store, clock), snapshots, bus, clock)
    ctx = AppContext(
        store=store,
        snapshots=snapshots,
        bus=bus,
        camera_status=lambda: api.cameras,
        config_schema=lambda: "{}",
        auth=AuthConfig(token_ttl_s=TTL_S),
        site_timezones=site_timezones or {},
        clock=clock,
    )
    api.app = create_app(ctx)
    try:
        with serve_in_thread(api.app, log_level) as url:
            api.url = url
            yield api
    finally:
        store.close()


@pytest.fixture
def api(tmp_path, database_url) -> Iterator[AuthedApi]:
    with serve_authed_api(tmp_path, database=database_url) as running:
        running.users.add_user("mgr", "site_manager", ["s1"], "manager-pass")
        running.users.add_user("reg", "regulator", ["s1", "s2"], "regulator-pass")
        yield running


def login(http: httpx.Client, name: str, password: str, address: str = "10.0.0.1") -> httpx.Response:
    # uvicorn takes the client address from X-Forwarded-For when the peer is a trusted proxy (loopback).
    return http.post(
        "/api/v1/auth/login",
        json={"username": name, "password": password},
        headers={"X-Forwarded-For": address},
    )


def test_login_with_right_and_wrong_password(api):
    with api.client() as http:
        r = login(http, "reg", "regulator-pass")
        assert r.status_code == 200
        body = r.json()
        assert body["role"] == "regulator" and body["sites"] == ["s1", "s2"]
        assert body["expires_at"] == "2027-01-15T09:00:00Z"  # T_START + one hour
        for name, password in (("reg", "regulator-pas"), ("nobody", "regulator-pass")):
            r = login(http, name, password)
            assert r.status_code == 401 and r.json()["detail"] == "wrong user name or password"
        assert login(http, "reg", "").status_code == 422
    with api.client(body["token"]) as http:
        assert http.get("/api/v1/auth/me").json() == {
            "name": "reg",
            "role": "regulator",
            "sites": ["s1", "s2"],
            "auth_enabled": True,
        }


def test_requests_without_valid_credentials_get_401(api):
    with api.client() as http:
        r = http.get("/api/v1/events")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "bearer token or an API key" in r.json()["detail"]
    with api.client("not-a-token") as http:
        r = http.get("/api/v1/events")
        assert r.status_code == 401 and r.json()["detail"] == "invalid, expired or revoked credentials"
        assert "not-a-token" not in r.text


def test_tokens_expire(api):
    token = api.login("mgr", "manager-pass")
    with api.client(token) as http:
        api.clock.t += TTL_S - 1
        assert http.get("/api/v1/events").status_code == 200
        api.clock.t += 1
        assert http.get("/api/v1/events").status_code == 401


def test_logout_ends_the_session(api):
    token = api.login("mgr", "manager-pass")
    other = api.login("mgr", "manager-pass")
    with api.client(token) as http:
        assert http.post("/api/v1/auth/logout").status_code == 204
        assert http.get("/api/v1/auth/me").status_code == 401
        assert http.post("/api/v1/auth/logout").status_code == 401
    with api.client(other) as http:  # only the session logged out ends
        assert http.get("/api/v1/auth/me").status_code == 200
    _, key = api.users.add_key("platform", [])
    with api.client(key) as http:
        r = http.post("/api/v1/auth/logout")
        assert r.status_code == 400 and "keys revoke" in r.json()["detail"]
    with api.client() as http:
        assert http.post("/api/v1/auth/logout").status_code == 401


def test_api_keys_in_either_header_until_revoked(api):
    api.store.upsert(make_event(0, site="s1"))
    api.store.upsert(make_event(1, site="s2"))
    _, key = api.users.add_key("city", ["s2"])
    with api.client(key) as bearer, api.client(**{"X-API-Key": key}) as header:
        for http in (bearer, header):
            r = http.get("/api/v1/events")
            assert r.status_code == 200 and [e["site"] for e in r.json()["items"]] == ["s2"]
        assert header.get("/api/v1/auth/me").json()["role"] == "platform"
        api.users.revoke_key("city")
        for http in (bearer, header):
            assert http.get("/api/v1/events").status_code == 401


def test_failed_logins_are_limited_per_user_name(api):
    with api.client() as http:
        for _ in range(5):
            assert login(http, "mgr", "guess", "10.0.0.1").status_code == 401
        # The limit is on the name: the right password from another address waits too (a guesser
        # spread over many addresses is held back the same way); the window is five minutes.
        r = login(http, "mgr", "manager-pass", "10.0.0.2")
        assert r.status_code == 429 and r.headers["retry-after"] == "300"
        assert "manager-pass" not in r.text
        assert (
            login(http, "reg", "regulator-pass", "10.0.0.2").status_code == 200
        )  # other users are not affected
        api.clock.t += 200
        assert login(http, "mgr", "manager-pass", "10.0.0.2").headers["retry-after"] == "100"
        api.clock.t += 100
        assert login(http, "mgr", "manager-pass", "10.0.0.2").status_code == 200
        # Success clears the name's failures: one more wrong password is not yet limited.
        assert login(http, "mgr", "guess", "10.0.0.3").status_code == 401
        assert login(http, "mgr", "manager-pass", "10.0.0.3").status_code == 200


def test_failed_logins_are_limited_per_client_address(api):
    with api.client() as http:
        for i in range(5):
            assert login(http, f"user{i}", "guess", "10.0.0.9").status_code == 401
        assert login(http, "reg", "regulator-pass", "10.0.0.9").status_code == 429
        assert login(http, "reg", "regulator-pass", "10.0.0.8").status_code == 200


def test_event_stream_takes_the_token_from_the_query_and_filters_sites(api):
    token = api.login("mgr", "manager-pass")
    with api.client() as http:
        assert http.get("/api/v1/events", params={"access_token": token}).status_code == 401  # stream only
        assert http.get("/api/v1/events/stream", params={"access_token": "wrong"}).status_code == 401
        other_site, own_site = make_event(0, site="s2"), make_event(1, site="s1")
        with http.stream("GET", "/api/v1/events/stream", params={"access_token": token}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines) == ": connected"
            api.bus.publish(other_site)
            api.bus.publish(own_site)
            data = next(line for line in lines if line.startswith("data: "))
        assert f'"id":"{own_site.id}"' in data.replace(" ", "")


def test_auth_disabled_acts_as_local_admin(tmp_path, caplog):
    store = EventStore(f"sqlite:///{tmp_path}/bk.db")
    ctx = AppContext(
        store=store, snapshots=SnapshotStore(tmp_path / "s"), bus=InProcessBus(), camera_status=list
    )
    caplog.set_level(logging.WARNING, logger="api.app")
    try:
        with serve_in_thread(create_app(ctx)) as url, httpx.Client(base_url=url) as http:
            assert http.get("/api/v1/auth/me").json() == {
                "name": "local",
                "role": "admin",
                "sites": None,
                "auth_enabled": False,
            }
            r = http.post("/api/v1/auth/login", json={"username": "a", "password": "b"})
            assert r.status_code == 400 and "disabled" in r.json()["detail"]
    finally:
        store.close()
    assert [r.message for r in caplog.records if r.name == "api.app"] == [
        "authentication is disabled (api.auth.enabled: false): every request acts as a local admin"
    ]


def test_passwords_tokens_and_keys_never_reach_the_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    access = logging.getLogger("uvicorn.access")  # it does not propagate: listen to it directly
    with serve_authed_api(tmp_path, log_level="info") as api:
        api.users.add_user("mgr", "site_manager", ["s1"], "manager-pass")
        _, key = api.users.add_key("city", [])
        access.addHandler(caplog.handler)
        try:
            with api.client() as http:
                login(http, "manager-pass", "typed-in-the-name-field")
                login(http, "mgr", "wrong-pass")
                token = login(http, "mgr", "manager-pass").json()["token"]
                http.get("/api/v1/events", headers={"X-API-Key": key})
                with http.stream("GET", "/api/v1/events/stream", params={"access_token": token}) as r:
                    assert r.status_code == 200
                http.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
        finally:
            access.removeHandler(caplog.handler)
    # The server's log lines (the test's own HTTP client logs its URLs: not the service's).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert "failed login from" in logged and "user mgr logged in" in logged
    assert "/api/v1/events/stream?access_token=***" in logged  # the access log line, redacted
    for secret in ("manager-pass", "typed-in-the-name-field", "wrong-pass", token, key):
        assert secret not in logged
