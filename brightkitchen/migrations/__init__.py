"""Numbered SQL migrations (NNNN_name.sql), applied in order and recorded in schema_migrations.

The files are written once, for both engines; `Dialect.ddl` turns the few SQLite-only types into
PostgreSQL's. Several processes may start at once (API replicas): on PostgreSQL they take turns on an
advisory lock, on SQLite on the write lock, and each migration is checked for again once the lock is
held, so it is applied exactly once, in one transaction with its record.
"""

from __future__ import annotations

from importlib import resources
from time import time
from typing import Any

from brightkitchen.db import Database

MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT, applied_at DOUBLE PRECISION)"
)


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".sql"):
            number, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append((int(number), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def current_version(conn: Any) -> int:
    """The newest migration applied to the database behind `conn` (0 for a new database)."""
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return row[0] or 0


def migrate(db: Database) -> list[str]:
    """Apply every migration newer than the database; each in its own transaction."""
    with db.transaction() as conn:
        conn.serialize("migrations")
        conn.execute(MIGRATIONS_TABLE)
    applied = []
    for version, name, sql in available():
        with db.transaction() as conn:
            conn.serialize("migrations")  # another process migrating: wait for it, then look again
            if version <= current_version(conn):
                continue
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(conn.dialect.ddl(statement))
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time()))
        applied.append(f"{version:04d}_{name}")
    return applied
