"""Users, their sessions and machine API keys; roles and what each role may see.

Roles: admin (every site), regulator (the sites of its jurisdiction), site_manager (exactly one site),
parent (one school; the live view only), platform (a machine API key: every site or the listed ones).
Passwords are hashed with scrypt; session tokens and API keys are random and stored only as sha256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Literal, get_args

from brightkitchen.db import IntegrityError
from brightkitchen.events import utc
from brightkitchen.store import EventStore

Role = Literal["admin", "regulator", "site_manager", "parent", "platform"]
USER_ROLES: tuple[Role, ...] = ("admin", "regulator", "site_manager", "parent")

# Who may use which part of the API.
EVENT_READERS: frozenset[Role] = frozenset({"admin", "regulator", "site_manager", "platform"})
WORKFLOW_ROLES: frozenset[Role] = frozenset(
    {"admin", "regulator", "site_manager"}
)  # audit, rectification photo
WATCHERS: frozenset[Role] = frozenset({"admin", "regulator", "site_manager", "parent"})  # the live view

API_KEY_PREFIX = "bk_"
PASSWORD_MIN_LENGTH = 8
# scrypt cost: about 16 MiB and tens of milliseconds per hash, which makes guessing slow.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class UserError(ValueError):
    """A user or key request that cannot be done; the message says why (and never holds a secret)."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a logged-in user, an API key, or the local admin when auth is disabled."""

    name: str
    role: Role
    sites: frozenset[str] | None  # None: every site
    kind: Literal["user", "api_key", "local"]

    def sees(self, site: str) -> bool:
        return self.sites is None or site in self.sites


LOCAL_ADMIN = Principal("local", "admin", None, "local")


def can_watch(principal: Principal, site_id: str) -> bool:
    """Whether the principal may open a site's live view (a parent: only its own school's)."""
    return principal.role in WATCHERS and principal.sees(site_id)


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    sites: tuple[str, ...]  # empty: every site
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    name: str
    hint: str  # the first characters of the key, to recognise it in listings
    sites: tuple[str, ...]  # empty: every site
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Session:
    token: str
    expires_at: datetime
    principal: Principal


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=64 * 1024 * 1024)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` with a random salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        if scheme != "scrypt":
            return False
        candidate = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p), len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(candidate, expected)


@cache
def _unknown_user_hash() -> str:
    # Checked against when the user does not exist, so both answers take as long (no user enumeration).
    return hash_password(secrets.token_urlsafe(16))


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UserError(
            f"invalid name {name!r}: 1-64 letters, digits or _ . @ -, starting with a letter or digit"
        )
    return name


def check_sites(role: Role, sites: Iterable[str]) -> tuple[str, ...]:
    """The sites a role is given, checked against what the role allows."""
    unique = tuple(dict.fromkeys(s.strip() for s in sites if s.strip()))
    if role not in get_args(Role):
        raise UserError(f"unknown role {role!r}: one of {', '.join(get_args(Role))}")
    if role == "admin" and unique:
        raise UserError("an admin sees every site: give no sites")
    if role == "regulator" and not unique:
        raise UserError("a regulator needs the sites of its jurisdiction")
    if role in ("site_manager", "parent") and len(unique) != 1:
        raise UserError(f"a {role} belongs to exactly one site")
    return unique


def _check_password(password: str) -> None:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise UserError(f"the password is too short: at least {PASSWORD_MIN_LENGTH} characters")


def _principal(name: str, role: Role, sites_json: str, kind: Literal["user", "api_key"]) -> Principal:
    sites = json.loads(sites_json)
    return Principal(name, role, frozenset(sites) if sites else None, kind)


class UserStore:
    """Users, sessions and API keys, in the events database (same connection and lock)."""

    def __init__(self, store: EventStore, clock: Callable[[], float] = time.time) -> None:
        self._db = store
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # Users

    def add_user(self, name: str, role: Role, sites: Iterable[str], password: str) -> User:
        check_name(name)
        if role not in USER_ROLES:
            raise UserError(f"a user's role is one of {', '.join(USER_ROLES)} (platforms use API keys)")
        site_list = check_sites(role, sites)
        _check_password(password)
        hashed = hash_password(password)  # slow: outside the database lock
        now = self._now_ms()
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO users (name, role, sites, password_hash, created_ms) VALUES (?, ?, ?, ?, ?)",
                    (name, role, json.dumps(site_list), hashed, now),
                )
        except IntegrityError:
            raise UserError(f"user {name!r} already exists") from None
        return User(name, role, site_list, utc(now / 1000))

    def users(self) -> list[User]:
        with self._db.reading() as conn:
            rows = conn.execute("SELECT name, role, sites, created_ms FROM users ORDER BY name").fetchall()
        return [User(n, r, tuple(json.loads(s)), utc(c / 1000)) for n, r, s, c in rows]

    def remove_user(self, name: str) -> None:
        """Remove a user and end its sessions."""
        with self._db.transaction() as conn:
            if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount != 1:
                raise UserError(f"no user {name!r}")
            conn.execute("DELETE FROM sessions WHERE user_name = ?", (name,))

    def set_password(self, name: str, password: str) -> None:
        """Change a user's password and end its sessions."""
        _check_password(password)
        hashed = hash_password(password)
        with self._db.transaction() as conn:
            if (
                conn.execute("UPDATE users SET password_hash = ? WHERE name = ?", (hashed, name)).rowcount
                != 1
            ):
                raise UserError(f"no user {name!r}")
            conn.execute("DELETE FROM sessions WHERE user_name = ?", (name,))

    # Sessions

    def login(self, name: str, password: str, ttl_s: float) -> Session | None:
        """A new session for the right password; None otherwise (unknown user or wrong password alike)."""
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT role, sites, password_hash FROM users WHERE name = ?", (name,)
            ).fetchone()
        ok = verify_password(password, row[2] if row else _unknown_user_hash())
        if not (ok and row):
            return None
        token = secrets.token_urlsafe(32)
        while token.startswith(API_KEY_PREFIX):  # keep the two kinds of credential apart
            token = secrets.token_urlsafe(32)
        now = self._now_ms()
        expires = now + int(ttl_s * 1000)
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_ms <= ?", (now,))
            conn.execute(
                "INSERT INTO sessions (token_sha256, user_name, created_ms, expires_ms) VALUES (?, ?, ?, ?)",
                (sha256_hex(token), name, now, expires),
            )
        return Session(token, utc(expires / 1000), _principal(name, row[0], row[1], "user"))

    def session(self, token: str) -> Principal | None:
        """The user of a live session token (its current role and sites); None when unknown or expired."""
        with self._db.reading() as conn:
            row = conn.execute(
                """SELECT u.name, u.role, u.sites FROM sessions s JOIN users u ON u.name = s.user_name
                   WHERE s.token_sha256 = ? AND s.expires_ms > ?""",
                (sha256_hex(token), self._now_ms()),
            ).fetchone()
        return _principal(row[0], row[1], row[2], "user") if row else None

    def logout(self, token: str) -> bool:
        with self._db.transaction() as conn:
            return (
                conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (sha256_hex(token),)).rowcount
                == 1
            )

    # API keys

    def add_key(self, name: str, sites: Iterable[str]) -> tuple[ApiKey, str]:
        """A new platform key; the key itself is returned only here and stored only as its hash."""
        check_name(name)
        site_list = check_sites("platform", sites)
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        hint = key[: len(API_KEY_PREFIX) + 6]
        now = self._now_ms()
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO api_keys (name, key_sha256, hint, sites, created_ms) VALUES (?, ?, ?, ?, ?)",
                    (name, sha256_hex(key), hint, json.dumps(site_list), now),
                )
        except IntegrityError:
            raise UserError(f"an API key named {name!r} already exists") from None
        return ApiKey(name, hint, site_list, utc(now / 1000), None), key

    def keys(self) -> list[ApiKey]:
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT name, hint, sites, created_ms, revoked_ms FROM api_keys ORDER BY name"
            ).fetchall()
        return [
            ApiKey(n, h, tuple(json.loads(s)), utc(c / 1000), utc(r / 1000) if r is not None else None)
            for n, h, s, c, r in rows
        ]

    def revoke_key(self, name: str) -> None:
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_ms = ? WHERE name = ? AND revoked_ms IS NULL",
                (self._now_ms(), name),
            )
            if cur.rowcount != 1:
                exists = conn.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone()
                raise UserError(f"API key {name!r} is already revoked" if exists else f"no API key {name!r}")

    def key(self, key: str) -> Principal | None:
        """The platform of a live API key; None when unknown or revoked."""
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT name, sites FROM api_keys WHERE key_sha256 = ? AND revoked_ms IS NULL",
                (sha256_hex(key),),
            ).fetchone()
        return _principal(row[0], "platform", row[1], "api_key") if row else None
