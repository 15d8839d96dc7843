"""The database behind every store: SQLite (the embedded default) or PostgreSQL, chosen by the URL.

    sqlite:///PATH                          one file; one process writes at a time
    postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?options=-csearch_path%3DSCHEMA]

Stores write their SQL once, with `?` or `:name` parameters, in the part of SQL both engines speak.
The few places where they differ are spelled out by the connection's `dialect` (random ids, the values
of a JSON array, DDL types) and by `serialize` (writers of one table taking turns). No ORM.

One connection per process, shared by its threads and serialised by a lock, as the stores expect; a
PostgreSQL connection that broke (server restart) is opened again on next use.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

SQLITE_PREFIX = "sqlite:///"
MAX_INT64 = 2**63 - 1  # the largest integer either engine stores
POSTGRESQL_PREFIXES = ("postgresql://", "postgres://")


class DatabaseError(ValueError):
    """A database URL or setting that cannot be used."""


# A row that breaks a unique key (or another constraint), on either engine.
IntegrityError = (sqlite3.IntegrityError, psycopg.IntegrityError)


@dataclass(frozen=True)
class Dialect:
    name: str
    random_id: str  # SQL expression: 32 random hex digits, new for every row
    _json_values: str  # SQL subquery giving the text values of a JSON array column

    def json_values(self, column: str) -> str:
        return self._json_values.format(column)

    def ddl(self, statement: str) -> str:
        """A migration statement (written for SQLite) in this dialect."""
        if self.name != "postgresql":
            return statement
        statement = re.sub(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b", "BIGSERIAL PRIMARY KEY", statement)
        return re.sub(r"\bINTEGER\b", "BIGINT", statement)


SQLITE = Dialect("sqlite", "lower(hex(randomblob(16)))", "SELECT value FROM json_each({})")
POSTGRESQL = Dialect(
    "postgresql", "replace(gen_random_uuid()::text, '-', '')", "SELECT jsonb_array_elements_text(({})::jsonb)"
)


def is_postgresql(url: str) -> bool:
    return url.startswith(POSTGRESQL_PREFIXES)


def sqlite_path(url: str) -> Path:
    if not url.startswith(SQLITE_PREFIX):
        raise DatabaseError(f"unsupported database URL {url!r}: expected sqlite:///PATH or postgresql://...")
    return Path(url.removeprefix(SQLITE_PREFIX))


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


class SqliteConnection(sqlite3.Connection):
    dialect = SQLITE

    def begin(self) -> None:
        self.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock later

    def serialize(self, name: str, shared: bool = False) -> None:
        """Writers of one database already take turns in SQLite (BEGIN IMMEDIATE)."""

    def notify(self, name: str) -> None:
        """Nothing to tell: one process serves a SQLite database."""


# Quoted literals (skipped), `?` and `:name` parameters, and `%` (psycopg's own parameter marker).
_SQL_TOKENS = re.compile(r"'(?:[^']|'')*'|\?|(?<![:\w]):([A-Za-z_]\w*)|%")


def _pyformat(match: re.Match[str]) -> str:
    token = match.group(0)
    if token.startswith("'"):
        return token.replace("%", "%%")
    if token == "?":
        return "%s"
    if token == "%":
        return "%%"
    return f"%({match.group(1)})s"


def postgresql_sql(sql: str) -> str:
    """SQL with `?` / `:name` parameters in psycopg's `%s` / `%(name)s` style."""
    return _SQL_TOKENS.sub(_pyformat, sql)


class PostgresConnection:
    """A psycopg connection in autocommit mode that takes the stores' SQL as it is."""

    dialect = POSTGRESQL

    def __init__(self, url: str) -> None:
        try:
            self.raw = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise DatabaseError(f"cannot connect to {redact(url)}: {str(e).strip()}") from None
        self.schema = self.raw.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
        if self.schema is None:
            self.raw.close()
            raise DatabaseError(f"{redact(url)}: no schema of its search_path exists")
        self._sql: dict[str, str] = {}

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        if params is None:  # psycopg reads no parameters then: the SQL is sent as it is
            return self.raw.execute(sql)
        query = self._sql.get(sql)
        if query is None:
            query = self._sql[sql] = postgresql_sql(sql)
        return self.raw.execute(query, params)  # type: ignore[arg-type]

    def lock_key(self, name: str) -> int:
        # Advisory locks are per database: the schema is in the key so that schemas do not share one.
        return zlib.crc32(f"brightkitchen:{self.schema}:{name}".encode())

    def serialize(self, name: str, shared: bool = False) -> None:
        """Inside a transaction: wait until no other transaction holds `name`, hold it until commit.
        Writers of the change log take it exclusively, so seq order is commit order."""
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        self.raw.execute(f"SELECT {function}(%s)", (self.lock_key(name),))

    def channel(self, name: str) -> str:
        """The LISTEN/NOTIFY channel `name` of this schema (channels, too, are per database)."""
        return f"brightkitchen_{name}_{self.lock_key(name)}"

    def notify(self, name: str) -> None:
        """Inside a transaction: wake the listeners of `name` in every process once it commits."""
        self.raw.execute("SELECT pg_notify(%s, '')", (self.channel(name),))

    @property
    def usable(self) -> bool:
        return not (self.raw.closed or self.raw.broken)

    def close(self) -> None:
        self.raw.close()


Connection = SqliteConnection | PostgresConnection


def connect(url: str) -> Connection:
    if is_postgresql(url):
        return PostgresConnection(url)
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=30.0, factory=SqliteConnection
    )
    conn.execute("PRAGMA journal_mode=WAL")  # readers go on while one writes
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn  # type: ignore[return-value]


class Database:
    """One connection for the whole process, used by one thread at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._conn = connect(url)

    @property
    def dialect(self) -> Dialect:
        return self._conn.dialect

    def channel(self, name: str) -> str | None:
        """The PostgreSQL channel that `notify(name)` signals; None for SQLite."""
        conn = self._conn
        return conn.channel(name) if isinstance(conn, PostgresConnection) else None

    def _connection(self) -> Connection:
        if isinstance(self._conn, PostgresConnection) and not self._conn.usable:
            self._conn.close()
            self._conn = PostgresConnection(self.url)
        return self._conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """The connection, each statement its own transaction."""
        with self._lock:
            yield self._connection()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """The connection inside one write transaction: committed on exit, rolled back on error."""
        with self._lock:
            conn = self._connection()
            if isinstance(conn, PostgresConnection):
                with conn.raw.transaction():
                    yield conn
            else:
                with conn:
                    conn.begin()
                    yield conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def in_list(column: str, values: frozenset[str] | set[str]) -> tuple[str, list[str]]:
    """`column IN (?, ...)` and its arguments; an empty set matches nothing (PostgreSQL has no `IN ()`)."""
    if not values:
        return "1 = 0", []
    return f"{column} IN ({', '.join('?' * len(values))})", sorted(values)
