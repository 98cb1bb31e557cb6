"""Webhook delivery against a real HTTP server on 127.0.0.1: signing, attempts, back-off and idempotency."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from django.utils import timezone

from models_registry import transition_services, webhook_services

SECRET = "s3cret-for-tests"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (the timeout tests) leaves a broken pipe behind; that is expected.
        pass


@dataclass
class Receiver:
    """A webhook receiver that answers with the scripted status codes in turn (the last one repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    delay_seconds: float = 0.0
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/registry"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
                if receiver.delay_seconds:
                    time.sleep(receiver.delay_seconds)
                index = min(len(receiver.requests), len(receiver.statuses)) - 1
                self.send_response(receiver.statuses[index])
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


def assert_signed(received: Received, *, secret: str = SECRET) -> None:
    timestamp = received.headers["X-MLOps-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    signature = received.headers["X-MLOps-Signature"]
    assert signature.startswith("sha256=")
    assert webhook_services.webhook_signature_verify(
        secret=secret, timestamp=timestamp, body=received.body, signature=signature
    )


# ------------------------------------------------------------------------------
# Signing and a single POST
# ------------------------------------------------------------------------------
def test_the_signature_is_an_hmac_of_the_timestamp_and_the_body():
    import hashlib
    import hmac

    body = b'{"event":"version_promoted"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()

    assert webhook_services.webhook_signature(secret=SECRET, timestamp="1700000000", body=body) == (
        f"sha256={expected}"
    )


def test_a_signature_made_with_another_secret_or_body_does_not_verify():
    body = b'{"a":1}'
    signature = webhook_services.webhook_signature(secret=SECRET, timestamp="1", body=body)

    assert webhook_services.webhook_signature_verify(
        secret=SECRET, timestamp="1", body=body, signature=signature
    )
    assert not webhook_services.webhook_signature_verify(
        secret="other", timestamp="1", body=body, signature=signature
    )
    assert not webhook_services.webhook_signature_verify(
        secret=SECRET, timestamp="1", body=b'{"a":2}', signature=signature
    )
    assert not webhook_services.webhook_signature_verify(
        secret=SECRET, timestamp="2", body=body, signature=signature
    )


def test_a_post_sends_the_signed_json_body_with_the_event_headers(receiver):
    body = webhook_services.webhook_body({"event": "version_registered", "data": {"version": 3}})

    result = webhook_services.webhook_post(
        url=receiver.url, secret=SECRET, event="version_registered", event_id="abc-123", body=body
    )

    assert result.ok
    assert result.status_code == 200
    assert result.error == ""
    [received] = receiver.requests
    assert received.path == "/hooks/registry"
    assert received.body == body
    assert json.loads(received.body) == {"event": "version_registered", "data": {"version": 3}}
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-MLOps-Event"] == "version_registered"
    assert received.headers["X-MLOps-Delivery"] == "abc-123"
    assert_signed(received)


def test_a_server_error_is_reported_with_its_status(receiver):
    receiver.statuses = [503]

    result = webhook_services.webhook_post(
        url=receiver.url, secret=SECRET, event="version_promoted", event_id="x", body=b"{}"
    )

    assert not result.ok
    assert result.status_code == 503
    assert result.error.startswith("HTTP 503")


def test_a_redirect_is_not_followed_and_counts_as_a_failure(receiver):
    receiver.statuses = [302]

    result = webhook_services.webhook_post(
        url=receiver.url, secret=SECRET, event="version_promoted", event_id="x", body=b"{}"
    )

    assert not result.ok
    assert result.status_code == 302
    assert "redirects are not followed" in result.error
    assert len(receiver.requests) == 1


def test_a_slow_receiver_times_out_without_raising(receiver):
    receiver.delay_seconds = 1.0

    result = webhook_services.webhook_post(
        url=receiver.url, secret=SECRET, event="version_promoted", event_id="x", body=b"{}", timeout=0.2
    )

    assert not result.ok
    assert result.status_code is None
    assert "no answer within 0.2 s" in result.error


def test_a_refused_connection_is_reported_without_raising():
    import socket

    # A port that was free a moment ago and that nobody listens on.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = webhook_services.webhook_post(
        url=f"http://127.0.0.1:{port}/", secret=SECRET, event="e", event_id="x", body=b"{}"
    )

    assert not result.ok
    assert result.status_code is None
    assert "ConnectionError" in result.error


def test_the_back_off_grows_and_ends_after_the_last_attempt():
    waits = [webhook_services.webhook_backoff_seconds(attempts_made=n) for n in range(1, 7)]

    assert waits == [10, 60, 300, 1800, 7200, None]
    assert webhook_services.MAX_ATTEMPTS == 6
    assert dt.timedelta(seconds=sum(w for w in waits if w)) < dt.timedelta(hours=3)


# ------------------------------------------------------------------------------
# Events, deliveries and attempts in the database
# ------------------------------------------------------------------------------
@pytest.fixture
def registered_model(db, staff):
    from models_registry.models import RegisteredModel

    return RegisteredModel.objects.create(name="churn", task="classification", created_by=staff)


def make_webhook(registered_model, url, *, events=None, is_active=True, secret=SECRET):
    from models_registry.models import Webhook

    return Webhook.objects.create(
        registered_model=registered_model,
        url=url,
        secret=secret,
        events=events or ["version_registered", "version_promoted"],
        is_active=is_active,
    )


def emit(registered_model, capture, *, event="version_promoted", **kwargs):
    with capture(execute=True):
        return webhook_services.webhook_event_emit(
            registered_model=registered_model,
            event=event,
            payload={"version": 2, "to_stage": "production"},
            **kwargs,
        )


def make_due(delivery) -> None:
    """The back-off has elapsed."""
    from models_registry.models import WebhookDelivery

    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1)
    )


def test_an_event_is_delivered_signed_to_each_active_subscribed_webhook_and_recorded(
    registered_model, receiver, django_capture_on_commit_callbacks
):
    from models_registry.models import WebhookDelivery

    subscribed = make_webhook(registered_model, receiver.url)
    make_webhook(registered_model, receiver.url + "/other", events=["version_archived"])
    make_webhook(registered_model, receiver.url + "/off", is_active=False)

    [delivery] = emit(registered_model, django_capture_on_commit_callbacks)

    delivery.refresh_from_db()
    assert delivery.webhook == subscribed
    assert delivery.status == WebhookDelivery.Status.SUCCEEDED
    assert delivery.attempts == 1
    assert delivery.last_status_code == 200
    assert delivery.delivered_at is not None
    [attempt] = delivery.attempt_log.all()
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 200, "")
    [received] = receiver.requests
    assert received.path == "/hooks/registry"
    assert_signed(received)
    assert received.headers["X-MLOps-Event"] == "version_promoted"
    assert received.headers["X-MLOps-Delivery"] == str(delivery.event_id)
    body = json.loads(received.body)
    assert body == delivery.payload
    assert body["event"] == "version_promoted"
    assert body["event_id"] == str(delivery.event_id)
    assert body["registered_model"] == "churn"
    assert body["data"] == {"version": 2, "to_stage": "production"}


def test_each_webhook_verifies_the_body_with_its_own_secret(
    registered_model, receiver, django_capture_on_commit_callbacks
):
    make_webhook(registered_model, receiver.url + "/a", secret="first-secret")
    make_webhook(registered_model, receiver.url + "/b", secret="second-secret")

    deliveries = emit(registered_model, django_capture_on_commit_callbacks)

    assert len({d.event_id for d in deliveries}) == 1
    by_path = {received.path: received for received in receiver.requests}
    assert_signed(by_path["/hooks/registry/a"], secret="first-secret")
    assert_signed(by_path["/hooks/registry/b"], secret="second-secret")
    with pytest.raises(AssertionError):
        assert_signed(by_path["/hooks/registry/a"], secret="second-secret")


def test_a_retry_after_the_secret_was_rotated_is_signed_with_the_new_secret(registered_model, receiver):
    from models_registry.models import WebhookDelivery

    webhook = make_webhook(registered_model, receiver.url)
    receiver.statuses = [500, 200]
    with mock.patch("models_registry.tasks.webhook_delivery_send_task.delay"):
        [delivery] = webhook_services.webhook_event_emit(
            registered_model=registered_model, event="version_promoted", payload={"version": 2}
        )
    webhook_services.webhook_delivery_send(delivery_id=delivery.pk)
    new_secret = webhook_services.webhook_secret_rotate(webhook=webhook)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=None)

    assert webhook_services.webhook_delivery_send(delivery_id=delivery.pk).status == "succeeded"

    first, second = receiver.requests
    assert_signed(first)
    assert_signed(second, secret=new_secret)


def test_nothing_is_recorded_or_sent_when_the_callers_transaction_rolls_back(
    registered_model, receiver, django_capture_on_commit_callbacks
):
    from django.db import transaction

    from models_registry.models import WebhookDelivery

    make_webhook(registered_model, receiver.url)

    def transition_that_fails_after_emitting() -> None:
        with transaction.atomic():
            webhook_services.webhook_event_emit(
                registered_model=registered_model, event="version_promoted", payload={}
            )
            raise RuntimeError("the transition failed after emitting")

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        transition_that_fails_after_emitting()

    assert callbacks == []

    assert WebhookDelivery.objects.count() == 0
    assert receiver.requests == []


def test_emitting_the_same_event_id_again_creates_no_second_delivery(
    registered_model, receiver, django_capture_on_commit_callbacks
):
    import uuid

    make_webhook(registered_model, receiver.url)
    event_id = uuid.uuid4()

    [first] = emit(registered_model, django_capture_on_commit_callbacks, event_id=event_id)
    [again] = emit(registered_model, django_capture_on_commit_callbacks, event_id=event_id)

    assert again.pk == first.pk
    assert len(receiver.requests) == 1


def test_an_unknown_event_is_refused(registered_model):
    with pytest.raises(ValueError, match="Unknown webhook event 'version_deleted'"):
        webhook_services.webhook_event_emit(
            registered_model=registered_model, event="version_deleted", payload={}
        )


def test_a_server_error_is_retried_after_its_back_off_and_succeeds_later(
    registered_model, receiver, django_capture_on_commit_callbacks
):
    from unittest import mock

    from models_registry.models import WebhookDelivery
    from models_registry.tasks import webhook_delivery_send_task

    receiver.statuses = [500, 200]
    make_webhook(registered_model, receiver.url)

    with mock.patch.object(
        webhook_delivery_send_task, "retry", wraps=webhook_delivery_send_task.retry
    ) as retry:
        before = timezone.now()
        [delivery] = emit(registered_model, django_capture_on_commit_callbacks)

    # The first attempt failed; the retry is scheduled 10 s later, and an early run does not send.
    retry.assert_called_once_with(countdown=10)
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PENDING
    assert delivery.attempts == 1
    assert delivery.last_status_code == 500
    assert delivery.last_error.startswith("HTTP 500")
    wait = (delivery.next_attempt_at - before).total_seconds()
    assert 9 <= wait <= 12
    assert len(receiver.requests) == 1

    make_due(delivery)
    webhook_delivery_send_task.delay(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.SUCCEEDED
    assert delivery.attempts == 2
    assert delivery.next_attempt_at is None
    assert [(a.number, a.status_code) for a in delivery.attempt_log.all()] == [(1, 500), (2, 200)]
    first, second = receiver.requests
    assert first.body == second.body
    assert first.headers["X-MLOps-Delivery"] == second.headers["X-MLOps-Delivery"]
    assert_signed(second)


def test_a_delivery_that_succeeded_is_not_sent_again_when_its_task_runs_twice(
    registered_model, receiver, django_capture_on_commit_callbacks
):
    from models_registry.tasks import webhook_delivery_send_task

    make_webhook(registered_model, receiver.url)
    [delivery] = emit(registered_model, django_capture_on_commit_callbacks)

    webhook_delivery_send_task.delay(delivery.pk)
    make_due(delivery)
    webhook_delivery_send_task.delay(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.attempts == 1
    assert delivery.attempt_log.count() == 1
    assert len(receiver.requests) == 1


def test_a_delivery_that_is_not_due_is_skipped_so_a_duplicate_message_cannot_send_it_twice(
    registered_model, receiver
):
    from models_registry.models import WebhookDelivery

    webhook = make_webhook(registered_model, receiver.url)
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        event="version_promoted",
        payload={},
        attempts=1,
        next_attempt_at=timezone.now() + dt.timedelta(seconds=60),
    )

    outcome = webhook_services.webhook_delivery_send(delivery_id=delivery.pk)

    assert outcome.status == "skipped"
    assert outcome.reason == "not due"
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert delivery.attempts == 1


def test_a_delivery_fails_for_good_after_the_last_attempt(registered_model, receiver):
    from models_registry.models import WebhookDelivery

    receiver.statuses = [502]
    webhook = make_webhook(registered_model, receiver.url)
    delivery = WebhookDelivery.objects.create(webhook=webhook, event="version_promoted", payload={"a": 1})

    outcomes = []
    for _ in range(webhook_services.MAX_ATTEMPTS):
        make_due(delivery)
        outcomes.append(webhook_services.webhook_delivery_send(delivery_id=delivery.pk))

    assert [o.retry_in for o in outcomes] == [10, 60, 300, 1800, 7200, None]
    assert outcomes[-1].status == "failed"
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.attempts == 6
    assert delivery.next_attempt_at is None
    assert list(delivery.attempt_log.values_list("number", "status_code")) == [(n, 502) for n in range(1, 7)]

    assert webhook_services.webhook_delivery_send(delivery_id=delivery.pk).status == "skipped"
    assert len(receiver.requests) == 6


def test_a_timeout_is_recorded_as_a_failed_attempt_and_retried(registered_model, receiver, monkeypatch):
    from models_registry.models import WebhookDelivery

    monkeypatch.setattr(webhook_services, "TIMEOUT_SECONDS", 0.2)
    receiver.delay_seconds = 1.0
    webhook = make_webhook(registered_model, receiver.url)
    delivery = WebhookDelivery.objects.create(webhook=webhook, event="version_promoted", payload={})

    outcome = webhook_services.webhook_delivery_send(delivery_id=delivery.pk)

    assert (outcome.status, outcome.retry_in) == ("retry", 10)
    [attempt] = delivery.attempt_log.all()
    assert attempt.status_code is None
    assert attempt.error == "no answer within 0.2 s"
    assert attempt.duration_ms >= 200


def test_a_deactivated_webhook_is_not_called_and_its_delivery_fails(registered_model, receiver):
    from models_registry.models import Webhook, WebhookDelivery

    webhook = make_webhook(registered_model, receiver.url)
    delivery = WebhookDelivery.objects.create(webhook=webhook, event="version_promoted", payload={})
    Webhook.objects.filter(pk=webhook.pk).update(is_active=False)

    outcome = webhook_services.webhook_delivery_send(delivery_id=delivery.pk)

    assert outcome.status == "failed"
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.last_error == "the webhook was deactivated"


def test_the_sweeper_sends_overdue_deliveries_and_leaves_the_others(registered_model, receiver):
    from models_registry.models import WebhookDelivery
    from models_registry.tasks import webhook_deliveries_sweep_task

    webhook = make_webhook(registered_model, receiver.url)
    long_ago = timezone.now() - dt.timedelta(hours=1)
    lost = WebhookDelivery.objects.create(webhook=webhook, event="version_promoted", payload={"n": 1})
    WebhookDelivery.objects.filter(pk=lost.pk).update(created_at=long_ago)
    overdue_retry = WebhookDelivery.objects.create(
        webhook=webhook, event="version_promoted", payload={"n": 2}, attempts=1, next_attempt_at=long_ago
    )
    waiting = WebhookDelivery.objects.create(
        webhook=webhook,
        event="version_promoted",
        payload={"n": 3},
        attempts=1,
        next_attempt_at=timezone.now() + dt.timedelta(minutes=5),
    )
    just_created = WebhookDelivery.objects.create(webhook=webhook, event="version_promoted", payload={"n": 4})

    assert webhook_deliveries_sweep_task.delay().get() == 2

    statuses = dict(WebhookDelivery.objects.values_list("pk", "status"))
    assert statuses[lost.pk] == statuses[overdue_retry.pk] == "succeeded"
    assert statuses[waiting.pk] == statuses[just_created.pk] == "pending"
    assert sorted(json.loads(r.body)["n"] for r in receiver.requests) == [1, 2]
    assert webhook_deliveries_sweep_task.delay().get() == 0


def test_a_failed_delivery_resent_by_staff_gets_one_more_attempt(
    registered_model, receiver, django_capture_on_commit_callbacks
):
    from models_registry.models import WebhookDelivery

    webhook = make_webhook(registered_model, receiver.url)
    delivery = WebhookDelivery.objects.create(
        webhook=webhook, event="version_promoted", payload={}, status="failed", attempts=6
    )

    with django_capture_on_commit_callbacks(execute=True):
        webhook_services.webhook_delivery_resend(delivery=delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.SUCCEEDED
    assert delivery.attempts == 7
    assert len(receiver.requests) == 1


def test_a_promotion_through_the_registry_service_reaches_the_receiver_signed(
    registered_model, receiver, staff, django_capture_on_commit_callbacks
):
    from unittest import mock

    from models_registry.models import ModelVersion, WebhookDelivery

    make_webhook(registered_model, receiver.url)
    version = ModelVersion.objects.create(
        registered_model=registered_model,
        version=1,
        task="classification",
        metrics={"accuracy": 0.9},
        skops_key="models/sha256/aa/a.skops",
        skops_sha256="a" * 64,
    )

    # The MLflow alias sync also runs on commit; this test is about the webhook only.
    with (
        mock.patch("models_registry.tasks.model_aliases_sync_task.delay"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        transition_services.model_version_transition(model_version=version, to_stage="production", user=staff)

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDelivery.Status.SUCCEEDED
    [received] = receiver.requests
    assert_signed(received)
    body = json.loads(received.body)
    assert body["event"] == "version_promoted"
    assert body["data"]["version"] == 1
    assert body["data"]["transition"]["to_stage"] == "production"
    assert body["data"]["transition"]["user"] == staff.username
