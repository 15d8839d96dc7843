"""Webhook subscriptions: create, list, inspect delivery state, delete, replay; and the webhook's own
documentation (its payload and headers appear in the OpenAPI document under `webhooks`).

Platform keys and admins subscribe. A subscriber scoped to some sites only gets those sites' events
(its subscriptions' site filter is checked and, when empty, set to its sites), and sees only the
subscriptions it created; an admin sees them all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from api.auth import no_nul, require
from api.feed import Feed
from brightkitchen.config import Identifier
from brightkitchen.db import MAX_INT64
from brightkitchen.events import Event, Phase, utc
from brightkitchen.outbox import Filters, Subscription, generate_secret
from brightkitchen.users import Principal, Role

MAX_FILTER_VALUES = 100
SUBSCRIBERS: frozenset[Role] = frozenset({"admin", "platform"})
Subscriber = Annotated[Principal, Depends(require(SUBSCRIBERS))]


class SubscriptionFilters(BaseModel):
    """Which changes a subscription receives; an empty list matches everything."""

    model_config = ConfigDict(extra="forbid")
    sites: list[Identifier] = Field([], max_length=MAX_FILTER_VALUES)
    cameras: list[Identifier] = Field([], max_length=MAX_FILTER_VALUES)
    rules: list[Identifier] = Field([], max_length=MAX_FILTER_VALUES)
    phases: list[Phase] = Field([], max_length=3)


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl = Field(description="http(s) URL that receives a POST per event revision")
    secret: str | None = Field(
        None, min_length=16, max_length=256, description="HMAC key for the signature; generated when omitted"
    )

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else no_nul(value)
    filters: SubscriptionFilters = SubscriptionFilters()


class DeliveryState(BaseModel):
    backlog: int = Field(description="deliveries waiting (new or being retried)")
    dead: int = Field(description="deliveries given up after the maximum age; replay to send them again")
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int = Field(description="failed attempts since the last success")


class SubscriptionOut(BaseModel):
    id: str
    url: str
    filters: SubscriptionFilters
    created_at: datetime
    delivery: DeliveryState


class SubscriptionCreated(SubscriptionOut):
    secret: str | None = Field(description="the generated secret, shown only here; null when you gave one")


class ReplayRequest(BaseModel):
    """Without a position: send the dead deliveries again, and retry the failing ones now. With
    `after_seq` or `since`: send every matching change after it again (delivered or not)."""

    model_config = ConfigDict(extra="forbid")
    after_seq: int | None = Field(None, ge=0, le=MAX_INT64, description="replay the changes after this seq")
    since: datetime | None = Field(None, description="replay the changes stored at or after this time")

    @model_validator(mode="after")
    def _one_position(self) -> ReplayRequest:
        if self.after_seq is not None and self.since is not None:
            raise ValueError("give after_seq or since, not both")
        return self


class ReplayResult(BaseModel):
    queued: int = Field(description="deliveries queued again")


class WebhookPayload(BaseModel):
    """The JSON body of every webhook delivery."""

    event: Event = Field(description="the event at this revision; de-duplicate by (event.id, event.revision)")
    seq: int = Field(description="the change seq: global order of stored revisions")
    delivery_id: str = Field(description="this delivery; the same for every retry of it, new for a replay")


def _ms(value: int | None) -> datetime | None:
    return None if value is None else utc(value / 1000)


def _out(sub: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        id=sub.id,
        url=sub.url,
        filters=SubscriptionFilters.model_validate(vars(sub.filters)),
        created_at=utc(sub.created_ms / 1000),
        delivery=DeliveryState(
            backlog=sub.backlog,
            dead=sub.dead,
            last_success_at=_ms(sub.last_success_ms),
            last_attempt_at=_ms(sub.last_attempt_ms),
            last_error=sub.last_error,
            last_error_at=_ms(sub.last_error_ms),
            consecutive_failures=sub.consecutive_failures,
        ),
    )


async def require_json(request: Request) -> None:
    """A body must be JSON: anything else gets a 415 that says so, not a confusing validation error."""
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if has_body and media_type != "application/json":
        raise HTTPException(415, f"send JSON (Content-Type: application/json), not {media_type!r}")


def _owner(who: Principal) -> str:
    return f"{who.kind}:{who.name}"


def _scoped_filters(filters: SubscriptionFilters, who: Principal) -> Filters:
    """The filters a subscriber may have: only its own sites, all of them when it names none."""
    sites = filters.sites
    if who.sites is not None:
        outside = sorted(set(sites) - who.sites)
        if outside:
            raise HTTPException(403, f"not allowed to subscribe to sites {', '.join(outside)}")
        sites = sites or sorted(who.sites)
    return Filters(sites=sites, cameras=filters.cameras, rules=filters.rules, phases=list(filters.phases))


def subscriptions_router(feed: Feed) -> APIRouter:
    router = APIRouter(
        prefix="/api/v1/subscriptions", tags=["subscriptions"], dependencies=[Depends(require_json)]
    )
    not_found = {404: {"description": "no such subscription"}}

    def _get(sub_id: str, who: Principal) -> Subscription:
        """The subscription if the caller may manage it; 404 otherwise, so others' ids do not leak."""
        sub = feed.outbox.get(sub_id)
        if sub is None or (who.role != "admin" and sub.owner != _owner(who)):
            raise HTTPException(404, f"no subscription {sub_id!r}")
        return sub

    @router.post("", status_code=201, response_model=SubscriptionCreated, responses={403: {}, 415: {}})
    def create_subscription(body: SubscriptionCreate, who: Subscriber) -> SubscriptionCreated:
        """Subscribe a URL to the event feed. Changes stored from now on are delivered; replay with
        `after_seq` to also get earlier ones."""
        secret = body.secret or generate_secret()
        sub = feed.outbox.create(_owner(who), str(body.url), secret, _scoped_filters(body.filters, who))
        return SubscriptionCreated(**_out(sub).model_dump(), secret=None if body.secret else secret)

    @router.get("", response_model=list[SubscriptionOut])
    def list_subscriptions(who: Subscriber) -> list[SubscriptionOut]:
        owner = None if who.role == "admin" else _owner(who)
        return [_out(s) for s in feed.outbox.list(owner)]

    @router.get("/{sub_id}", response_model=SubscriptionOut, responses=not_found)
    def get_subscription(sub_id: str, who: Subscriber) -> SubscriptionOut:
        """The subscription with its delivery state."""
        return _out(_get(sub_id, who))

    @router.delete("/{sub_id}", status_code=204, response_class=Response, responses=not_found)
    def delete_subscription(sub_id: str, who: Subscriber) -> Response:
        """Unsubscribe; its queued deliveries are dropped."""
        feed.outbox.delete(_get(sub_id, who).id)
        return Response(status_code=204)

    @router.post("/{sub_id}/replay", response_model=ReplayResult, responses=not_found)
    def replay(sub_id: str, who: Subscriber, body: ReplayRequest | None = None) -> ReplayResult:
        """Queue deliveries again (see ReplayRequest); they are sent in order per camera."""
        _get(sub_id, who)
        request = body or ReplayRequest()
        after = request.after_seq
        if request.since is not None:
            since = request.since if request.since.tzinfo else request.since.replace(tzinfo=UTC)
            after = feed.changes.seq_before(since)
        queued = feed.outbox.replay(sub_id, after_seq=after)
        feed.webhooks.wake()
        return ReplayResult(queued=queued)

    return router


def document_webhook(webhooks: APIRouter) -> None:
    """Describe the delivery in the OpenAPI document (`webhooks`), so its payload schema is published."""

    @webhooks.post("event-revision", status_code=204)
    def event_revision(
        body: WebhookPayload,
        x_brightkitchen_event_id: Annotated[str, Header(description="event.id")],
        x_brightkitchen_event_revision: Annotated[int, Header(description="event.revision")],
        x_brightkitchen_delivery: Annotated[str, Header(description="delivery_id")],
        x_brightkitchen_timestamp: Annotated[int, Header(description="unix seconds of signing")],
        x_brightkitchen_signature: Annotated[
            str, Header(description='"v1=" + hex HMAC-SHA256(secret, "<timestamp>.<raw body>")')
        ],
    ) -> None:
        """Sent to each subscription's URL for every matching stored event revision. Answer 2xx once it
        is stored; anything else is retried with backoff. Verify the signature, reject old timestamps,
        and de-duplicate by (event id, revision): a delivery can arrive more than once."""
