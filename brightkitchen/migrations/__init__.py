"""Numbered SQL migrations (NNNN_name.sql), applied in order and recorded in schema_migrations."""

from __future__ import annotations

import sqlite3
from importlib import resources
from time import time


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".sql"):
            number, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append((int(number), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return row[0] or 0


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply every migration newer than the database; each in its own transaction."""
    applied = []
    for version, name, sql in available():
        if version <= current_version(conn):
            continue
        with conn:
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time()))
        applied.append(f"{version:04d}_{name}")
    return applied
