"""Databases for tests: a SQLite file, or a fresh schema in the PostgreSQL that scripts/services.sh starts.

`database_url` is parametrised over both engines, so a test that takes it runs on each. Every
PostgreSQL test gets its own schema (random name, dropped afterwards): parallel runs never collide.
BRIGHTKITCHEN_TEST_POSTGRES names another server or database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

POSTGRES = os.environ.get("BRIGHTKITCHEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(reason: str) -> None:
    """Skip where the service is missing; CI installs and starts it, so there it fails."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL whose connections use a new, empty schema; the schema is dropped afterwards."""
    schema = f"bk_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        unavailable(f"no PostgreSQL at {POSTGRES} ({str(e).strip()}); scripts/services.sh starts one")
    try:
        admin.execute(f"CREATE SCHEMA {schema}")
        separator = "&" if "?" in POSTGRES else "?"
        yield f"{POSTGRES}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


def url_for(engine: str, folder: Path) -> Iterator[str]:
    if engine == "sqlite":
        yield f"sqlite:///{folder}/events.db"
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database, on SQLite and on PostgreSQL; the same URL again is a restart."""
    yield from url_for(request.param, tmp_path)
