"""The OpenAPI document fuzzed with schemathesis against the real API (uvicorn, auth on, an admin's
token, SQLite and PostgreSQL): whatever a client sends, the answer is never a 5xx.

Left out: the event stream (it never ends by design; tests/api/test_feed.py covers it) and logout
(it would end the token the fuzzing uses; tests/api/test_auth.py covers it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from brightkitchen.review import store_photo
from brightkitchen.users import LOCAL_ADMIN
from tests.api.test_auth import serve_authed_api
from tests.api.test_review import JPEG
from tests.brightkitchen.test_store import make_event
from tests.databases import url_for

# Bounded: about a minute for both databases on a quiet 2-core machine.
EXAMPLES_PER_OPERATION = 60


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    for database in url_for(request.param, folder):
        with serve_authed_api(folder, database=database) as api:
            from brightkitchen.review import ReviewStore

            api.users.add_user("admin", "admin", [], "admin-password")
            api.cameras.append({"id": "c1", "name": "C1", "site": "s1", "url": "rtsp://c1", "connected": True})
            reviews = ReviewStore(api.store, api.clock)
            ids = []
            for i, state in enumerate(("pending", "confirmed", "rectified")):
                event = make_event(i)
                event.snapshot, event.snapshot_sha256 = api.snapshots.save(event.id, JPEG, 0)
                api.store.upsert(event)
                ids.append(event.id)
                if state != "pending":
                    reviews.transition(event, "confirmed", LOCAL_ADMIN)
                if state == "rectified":
                    photo = store_photo(api.snapshots.root, JPEG, "jpg")
                    reviews.transition(api.store.get(event.id), "rectified", LOCAL_ADMIN, "done", photo)
            token = api.login("admin", "admin-password")
            with api.client(token) as http:
                created = http.post("/api/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook"})
            assert created.status_code == 201
            yield {"url": api.url, "token": token, "event_ids": ids, "sub_id": created.json()["id"]}


def test_no_request_gets_a_server_error(fuzzed_api: dict):
    headers = {"Authorization": f"Bearer {fuzzed_api['token']}"}
    schema = schemathesis.openapi.from_url(f"{fuzzed_api['url']}/openapi.json")
    schema = schema.exclude(path="/api/v1/events/stream").exclude(path="/api/v1/auth/logout")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # the whole API, not an empty document
    failures: list[str] = []
    for operation in operations:
        # Valid and invalid requests; where the path names an event or a subscription, existing ones too.
        fixed: list[dict] = [{}]
        if "{event_id}" in operation.path:
            fixed += [{"event_id": i} for i in fuzzed_api["event_ids"]]
        if "{sub_id}" in operation.path:
            fixed.append({"sub_id": fuzzed_api["sub_id"]})
        strategy = st.one_of(
            operation.as_strategy(mode, path_parameters=params or None)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            for params in fixed
        )

        @given(case=strategy)
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def no_server_error(case) -> None:
            response = case.call(base_url=fuzzed_api["url"], headers=headers, timeout=30)
            assert response.status_code < 500, f"{response.status_code} {response.text[:300]}"

        try:
            no_server_error()
        except AssertionError as e:  # hypothesis has shrunk it to a small example
            failures.append(f"{operation.label}: {str(e).splitlines()[0]}")
    assert not failures, "\n".join(failures)
