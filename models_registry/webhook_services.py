"""Outgoing registry webhooks: recording an event per subscribed webhook, signing and delivering it."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from models_registry.models import RegisteredModel, Webhook, WebhookAttempt, WebhookDelivery, WebhookEvent

logger = logging.getLogger(__name__)

EVENTS = tuple(WebhookEvent.values)
SIGNATURE_HEADER = "X-MLOps-Signature"
USER_AGENT = "mlops-site-webhooks/1"
TIMEOUT_SECONDS = 10.0
#: Seconds to wait after failed attempt 1, 2, ...; the attempt after the last one is final.
BACKOFF_SECONDS = (10, 60, 5 * 60, 30 * 60, 2 * 60 * 60)
MAX_ATTEMPTS = len(BACKOFF_SECONDS) + 1
# While an attempt is in flight its delivery is not due, so a duplicate message cannot send it twice.
LEASE_SECONDS = int(TIMEOUT_SECONDS) + 50
# A retry message may run a little before next_attempt_at when worker clocks disagree.
CLOCK_SLACK_SECONDS = 5
# The sweeper leaves deliveries alone until their own retry message had time to run.
SWEEP_GRACE_SECONDS = 120
ERROR_MAX_LENGTH = 500


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class SendOutcome:
    """What one call of webhook_delivery_send did; `retry_in` is set when another attempt is due later."""

    status: str  # "succeeded", "retry", "failed", "skipped"
    retry_in: int | None = None
    reason: str = ""


#: Bytes of randomness in a generated secret (43 URL-safe characters).
SECRET_BYTES = 32


def webhook_secret_generate() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def webhook_secret_rotate(*, webhook: Webhook) -> str:
    """Give the webhook a new generated secret and return it: the one time anyone sees it.

    Deliveries are signed when sent, so pending retries are signed with the new secret from now on.
    """
    secret = webhook_secret_generate()
    Webhook.objects.filter(pk=webhook.pk).update(secret=secret)
    webhook.secret = secret
    logger.info("webhook %s: secret rotated", webhook.pk)
    return secret


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over "<timestamp>.<body>"; the timestamp stops replays of old bodies."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def webhook_signature_verify(*, secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """For receivers (and tests): constant-time comparison of the header with the expected signature."""
    expected = webhook_signature(secret=secret, timestamp=timestamp, body=body)
    return hmac.compare_digest(expected, signature)


def webhook_body(payload: dict[str, Any]) -> bytes:
    # Sorted keys and no spaces: every attempt of a delivery sends byte-identical bodies.
    return json.dumps(payload, cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":")).encode("utf-8")


def webhook_post(
    *,
    url: str,
    secret: str,
    event: str,
    event_id: str,
    body: bytes,
    timeout: float | None = None,
) -> PostResult:
    """POST a signed body once. Never raises for network trouble: it is reported in the result."""
    timeout = TIMEOUT_SECONDS if timeout is None else timeout
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-MLOps-Event": event,
        "X-MLOps-Delivery": event_id,
        "X-MLOps-Timestamp": timestamp,
        SIGNATURE_HEADER: webhook_signature(secret=secret, timestamp=timestamp, body=body),
    }
    started = time.monotonic()
    try:
        # Redirects are not followed: the receiver must answer at the configured address itself.
        response = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.Timeout:
        return PostResult(None, f"no answer within {timeout:g} s", _elapsed_ms(started))
    except requests.RequestException as exc:
        return PostResult(None, f"{type(exc).__name__}: {exc}"[:ERROR_MAX_LENGTH], _elapsed_ms(started))
    duration_ms = _elapsed_ms(started)
    response.close()
    if 200 <= response.status_code < 300:
        return PostResult(response.status_code, "", duration_ms)
    reason = f"HTTP {response.status_code} {response.reason or ''}".strip()
    if 300 <= response.status_code < 400:
        reason += " (redirects are not followed)"
    return PostResult(response.status_code, reason, duration_ms)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def webhook_backoff_seconds(*, attempts_made: int) -> int | None:
    """Seconds until the next attempt after `attempts_made` failed ones, or None when none is left."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    return BACKOFF_SECONDS[attempts_made - 1]


def webhook_event_emit(
    *,
    registered_model: RegisteredModel,
    event: str,
    payload: dict[str, Any],
    event_id: uuid.UUID | None = None,
) -> list[WebhookDelivery]:
    """Record one delivery per active webhook of the model that subscribes to `event`.

    Runs in the caller's transaction, so a rolled-back transition announces nothing; sending is queued
    on commit. All deliveries of one event share its event id; emitting the same `event_id` again
    creates nothing new (the delivery is unique per webhook and event id).
    """
    from models_registry.tasks import webhook_delivery_send_task

    if event not in EVENTS:
        raise ValueError(f"Unknown webhook event {event!r}; expected one of {', '.join(EVENTS)}.")
    event_id = event_id or uuid.uuid4()
    envelope = {
        "event": event,
        "event_id": str(event_id),
        "occurred_at": timezone.now().isoformat(),
        "registered_model": registered_model.name,
        "data": payload,
    }
    # Through JSON so dates, decimals and UUIDs in the payload are stored as they will be sent.
    envelope = json.loads(webhook_body(envelope))
    deliveries = []
    webhooks = Webhook.objects.filter(registered_model=registered_model, is_active=True).order_by("pk")
    for webhook in webhooks:
        if event not in (webhook.events or []):
            continue
        delivery, created = WebhookDelivery.objects.get_or_create(
            webhook=webhook,
            event_id=event_id,
            defaults={"event": event, "payload": envelope},
        )
        deliveries.append(delivery)
        if created:
            delivery_id = delivery.pk
            # robust: a broker outage must not turn a committed transition into an error page;
            # the sweeper sends deliveries whose message never left.
            transaction.on_commit(lambda d=delivery_id: webhook_delivery_send_task.delay(d), robust=True)
    return deliveries


def webhook_delivery_send(*, delivery_id: int) -> SendOutcome:
    """Make the next attempt of a pending delivery that is due, and record it.

    Idempotent: a delivery that succeeded or failed for good is never sent again, and a delivery that is
    not due (its attempt is in flight elsewhere, or it waits for its back-off) is skipped. The attempt is
    claimed with a conditional UPDATE on the attempt count, and the HTTP call runs outside any
    transaction. After MAX_ATTEMPTS failed attempts the delivery is FAILED.
    """
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None:
        return SendOutcome("skipped", reason="no such delivery")
    if delivery.status != WebhookDelivery.Status.PENDING:
        return SendOutcome("skipped", reason=f"already {delivery.status}")
    now = timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(
        next_attempt_at__lte=now + dt.timedelta(seconds=CLOCK_SLACK_SECONDS)
    )
    number = delivery.attempts + 1
    claimed = WebhookDelivery.objects.filter(
        due, pk=delivery.pk, status=WebhookDelivery.Status.PENDING, attempts=number - 1
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + dt.timedelta(seconds=LEASE_SECONDS))
    if not claimed:
        return SendOutcome("skipped", reason="not due")

    webhook = delivery.webhook
    if not webhook.is_active:
        result = PostResult(None, "the webhook was deactivated", 0)
    else:
        result = webhook_post(
            url=webhook.url,
            secret=webhook.secret,
            event=delivery.event,
            event_id=str(delivery.event_id),
            body=webhook_body(delivery.payload),
        )

    retry_in = None if result.ok or not webhook.is_active else webhook_backoff_seconds(attempts_made=number)
    finished = timezone.now()
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=number,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
        )
        changes: dict[str, Any] = {"last_status_code": result.status_code, "last_error": result.error}
        if result.ok:
            changes.update(
                status=WebhookDelivery.Status.SUCCEEDED, delivered_at=finished, next_attempt_at=None
            )
        elif retry_in is None:
            changes.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
        else:
            changes.update(next_attempt_at=finished + dt.timedelta(seconds=retry_in))
        WebhookDelivery.objects.filter(pk=delivery.pk, attempts=number).update(**changes)

    if result.ok:
        return SendOutcome("succeeded")
    logger.warning(
        "webhook delivery %s attempt %s to %s failed: %s", delivery.pk, number, webhook.url, result.error
    )
    if retry_in is None:
        return SendOutcome("failed", reason=result.error)
    return SendOutcome("retry", retry_in=retry_in, reason=result.error)


def webhook_deliveries_overdue(*, now: dt.datetime | None = None) -> list[int]:
    """Pending deliveries whose own message should have run by now (lost by the broker or a dead worker)."""
    cutoff = (now or timezone.now()) - dt.timedelta(seconds=SWEEP_GRACE_SECONDS)
    overdue = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING).filter(
        Q(next_attempt_at__lte=cutoff) | Q(next_attempt_at__isnull=True, created_at__lte=cutoff)
    )
    return list(overdue.order_by("pk").values_list("pk", flat=True)[:500])


def webhook_delivery_resend(*, delivery: WebhookDelivery) -> None:
    """Staff asked to try a FAILED delivery again: it gets one more attempt, sent now."""
    from models_registry.tasks import webhook_delivery_send_task

    with transaction.atomic():
        updated = WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.FAILED).update(
            status=WebhookDelivery.Status.PENDING, next_attempt_at=None
        )
        if updated:
            transaction.on_commit(lambda: webhook_delivery_send_task.delay(delivery.pk), robust=True)
