"""Who a request acts as, and whether it may: bearer tokens, API keys, roles and site scopes.

Credentials: `Authorization: Bearer <token or bk_ key>` or `X-API-Key: bk_...`; the event stream also
takes `?access_token=` because browsers' EventSource cannot send headers. With auth disabled in the
config every request acts as a local admin.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator

from brightkitchen.config import AuthConfig
from brightkitchen.events import Event
from brightkitchen.store import EventStore
from brightkitchen.users import (
    API_KEY_PREFIX,
    EVENT_READERS,
    LOCAL_ADMIN,
    WORKFLOW_ROLES,
    Principal,
    Role,
    UserStore,
)

log = logging.getLogger("api.auth")
ANY_ROLE: frozenset[Role] = frozenset(get_args(Role))

_bearer = HTTPBearer(auto_error=False, description="a login's token, or a platform API key (bk_...)")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="a platform API key (bk_...)")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
ApiKeyHeader = Annotated[str | None, Depends(_api_key)]


class LoginLimiter:
    """Failed logins per key (a user name, a client address) in a sliding window."""

    MAX_KEYS = 10_000  # beyond this, keys without recent failures are forgotten

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.time) -> None:
        self.max_failures, self.window_s, self._clock = max_failures, window_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def retry_after(self, *keys: str) -> float:
        """Seconds until every key is below its limit again; 0 when none is limited."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                failures = self._recent(key, now)
                if len(failures) >= self.max_failures:
                    wait = max(wait, failures[len(failures) - self.max_failures] + self.window_s - now)
        return wait

    def fail(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= self.MAX_KEYS:
                self._failures = {k: q for k in list(self._failures) if (q := self._recent(k, now))}
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class RedactAccessTokens(logging.Filter):
    """Hides `access_token=` values in log lines: uvicorn's access log prints every request's query."""

    _token = re.compile(r"(access_token=)[^&\s\"']+")

    def _clean(self, value: Any) -> Any:
        return self._token.sub(r"\1***", value) if isinstance(value, str) else value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(a) for a in record.args)
        return True


_REDACTION = RedactAccessTokens()


def redact_access_tokens_in_logs() -> None:
    """Installs the redaction on the server's loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(_REDACTION)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


class Authenticator:
    def __init__(
        self, users: UserStore, settings: AuthConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.users = users
        self.settings = settings
        self.limiter = LoginLimiter(settings.login_max_failures, settings.login_window_s, clock)

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def identify(self, credential: str | None) -> Principal:
        """The principal of a credential; 401 when missing, unknown, expired or revoked."""
        if not self.enabled:
            return LOCAL_ADMIN
        if not credential:
            raise _unauthorized("authentication required: a bearer token or an API key")
        if credential.startswith(API_KEY_PREFIX):
            principal = self.users.key(credential)
        else:
            principal = self.users.session(credential)
        if principal is None:
            raise _unauthorized("invalid, expired or revoked credentials")
        return principal


def authenticator(request: Request) -> Authenticator:
    """The app's authenticator (create_app puts it in app.state)."""
    return request.app.state.auth


def reject_nul(request: Request) -> None:
    """400 for a NUL character in the path or the query: no id or filter holds one, and PostgreSQL
    cannot even compare text with one."""
    if "\x00" in request.url.path or any("\x00" in k + v for k, v in request.query_params.multi_items()):
        raise HTTPException(400, "the path and query may not contain NUL characters (%00)")


def no_nul(value: str) -> str:
    """A field validator: text with a NUL character is refused (422)."""
    if "\x00" in value:
        raise ValueError("may not contain NUL characters")
    return value


def require(roles: frozenset[Role], *, query_token: bool = False) -> Callable[..., Principal]:
    """A dependency giving the request's principal; 401 without valid credentials, 403 for other roles."""

    def check(principal: Principal) -> Principal:
        if principal.role not in roles:
            raise HTTPException(403, f"the {principal.role} role may not use this endpoint")
        return principal

    if query_token:

        def from_headers_or_query(
            request: Request,
            bearer: Bearer,
            api_key: ApiKeyHeader,
            access_token: Annotated[
                str | None, Query(description="for clients that cannot send headers (EventSource)")
            ] = None,
        ) -> Principal:
            reject_nul(request)
            credential = bearer.credentials if bearer else api_key or access_token
            return check(authenticator(request).identify(credential))

        return from_headers_or_query

    def from_headers(request: Request, bearer: Bearer, api_key: ApiKeyHeader) -> Principal:
        reject_nul(request)
        return check(authenticator(request).identify(bearer.credentials if bearer else api_key))

    return from_headers


# Request parameters giving the principal, for endpoints open to these roles.
AnyPrincipal = Annotated[Principal, Depends(require(ANY_ROLE))]
Reader = Annotated[Principal, Depends(require(EVENT_READERS))]
StreamReader = Annotated[Principal, Depends(require(EVENT_READERS, query_token=True))]
WorkflowUser = Annotated[Principal, Depends(require(WORKFLOW_ROLES))]


def visible_event(store: EventStore, who: Principal, event_id: str) -> Event:
    """The event if the principal may see its site; 404 otherwise, so other sites' ids do not leak."""
    event = store.get(event_id)
    if event is None or not who.sees(event.site):
        raise HTTPException(404, f"no event {event_id!r}")
    return event


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)

    _username = field_validator("username")(no_nul)


class LoginResponse(BaseModel):
    token: str
    expires_at: datetime
    role: Role
    sites: list[str] | None = Field(description="the sites this account sees; null: every site")


class Me(BaseModel):
    name: str
    role: Role
    sites: list[str] | None = Field(description="null: every site")
    auth_enabled: bool


def _sites(principal: Principal) -> list[str] | None:
    return None if principal.sites is None else sorted(principal.sites)


def auth_router(auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

    @router.post("/login", response_model=LoginResponse, responses={401: {}, 429: {}})
    def login(body: LoginRequest, request: Request) -> LoginResponse:
        """A bearer token for a user name and password. Failed logins are limited per user name and per
        client address; past the limit every attempt, right or wrong, gets 429 until the window passes."""
        if not auth.enabled:
            raise HTTPException(
                400, "authentication is disabled (api.auth.enabled is false): no login needed"
            )
        address = request.client.host if request.client else "unknown"
        keys = (f"user:{body.username}", f"address:{address}")
        wait = auth.limiter.retry_after(*keys)
        if wait > 0:
            log.warning("login from %s refused: too many failed logins", address)
            raise HTTPException(
                429, "too many failed logins: try again later", headers={"Retry-After": str(math.ceil(wait))}
            )
        session = auth.users.login(body.username, body.password, auth.settings.token_ttl_s)
        if session is None:
            auth.limiter.fail(*keys)
            # The name is not logged: a password typed into the name field must not reach the logs.
            log.warning("failed login from %s", address)
            raise HTTPException(401, "wrong user name or password")
        auth.limiter.clear(keys[0])
        log.info("user %s logged in from %s", session.principal.name, address)
        return LoginResponse(
            token=session.token,
            expires_at=session.expires_at,
            role=session.principal.role,
            sites=_sites(session.principal),
        )

    @router.post("/logout", status_code=204, response_class=Response, responses={400: {}, 401: {}})
    def logout(bearer: Bearer, api_key: ApiKeyHeader) -> Response:
        """Ends the session of the bearer token."""
        credential = bearer.credentials if bearer else api_key
        if auth.enabled:
            auth.identify(credential)
            if credential and credential.startswith(API_KEY_PREFIX):
                raise HTTPException(
                    400, "an API key is not a session: revoke it with `brightkitchen keys revoke`"
                )
            auth.users.logout(credential or "")
        return Response(status_code=204)

    @router.get("/me", response_model=Me)
    def me(who: AnyPrincipal) -> Me:
        """The account the request acts as."""
        return Me(name=who.name, role=who.role, sites=_sites(who), auth_enabled=auth.enabled)

    return router
