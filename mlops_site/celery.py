"""The Celery application and what the job sweeps read of its broker; tasks live in each app's tasks.py."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import logging.config
import os
from contextvars import Token
from typing import Any

from celery import Celery, signals

from mlops_site import request_id, tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")

logger = logging.getLogger(__name__)

app = Celery("mlops_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# ------------------------------------------------------------------------------
# Logs and traces: the web request's id travels in the task's headers (mlops_site.request_id); tracing
# starts with the worker or beat process (mlops_site.tracing).
# ------------------------------------------------------------------------------
_REQUEST_ID_HEADER = "request_id"
# Tokens to unbind at postrun, per task id: prerun and postrun are two signal calls.
_request_id_tokens: dict[str, Token[str | None]] = {}


@signals.setup_logging.connect
def _logging_from_django_settings(**kwargs: Any) -> None:
    # A receiver here stops Celery from replacing the root handlers with its own format: the worker
    # logs like the web (LOG_FORMAT, LOG_LEVEL, the request id on every line).
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@signals.before_task_publish.connect
def _request_id_to_headers(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    value = request_id.current()
    if value is not None and headers is not None:
        headers.setdefault(_REQUEST_ID_HEADER, value)


@signals.task_prerun.connect
def _request_id_from_headers(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    # A worker puts a message's own headers on the request; `apply(headers=...)` keeps them apart.
    request = task.request if task is not None else None
    value = getattr(request, _REQUEST_ID_HEADER, None) or (getattr(request, "headers", None) or {}).get(
        _REQUEST_ID_HEADER
    )
    # A task run eagerly has no headers and keeps its caller's id; a header is checked like the web's.
    if task_id is not None and request_id.is_well_formed(value):
        _request_id_tokens[task_id] = request_id.bind(value)


@signals.task_postrun.connect
def _request_id_unbind(task_id: str | None = None, **kwargs: Any) -> None:
    token = _request_id_tokens.pop(task_id, None) if task_id is not None else None
    if token is not None:
        request_id.reset(token)


@signals.worker_init.connect
@signals.worker_process_init.connect
def _tracing_worker(**kwargs: Any) -> None:
    # worker_init for the solo and threads pools, worker_process_init in each prefork child (a no-op
    # there when the parent already set up: the SDK restarts its export thread after the fork).
    tracing.setup(default_service_name="mlops-worker")


@signals.beat_init.connect
def _tracing_beat(**kwargs: Any) -> None:
    tracing.setup(default_service_name="mlops-beat")


# kombu's Redis transport keeps a queue with priorities in one list per step, named queue + SEP + step.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)


def waiting_job_ids(task_name: str) -> set[int] | None:
    """The first argument of every `task_name` message waiting in the broker's queues, or None.

    None when the broker is not Redis or cannot be read: the caller then cannot tell a lost message from
    a waiting one. Messages a worker holds (running, prefetched, retried later) are not counted: a job
    re-sent while its message is held gets a duplicate, which finds it busy or finished.
    """
    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    queues = {queue.name for queue in app.amqp.queues.values()} or {app.conf.task_default_queue}
    keys = [f"{q}{_PRIORITY_SEP}{step}" if step else q for q in queues for step in _PRIORITY_STEPS]
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
            client = connection.default_channel.client
            raw = [item for key in keys for item in client.lrange(key, 0, -1)]
    except Exception:  # redis or kombu errors: the broker is down; the caller falls back to age alone
        logger.warning("could not read the broker's queues", exc_info=True)
        return None
    return {job_id for item in raw if (job_id := _job_id(item, task_name)) is not None}


def _redis_queue_keys() -> list[str]:
    queues = {queue.name for queue in app.amqp.queues.values()} or {app.conf.task_default_queue}
    return [f"{q}{_PRIORITY_SEP}{step}" if step else q for q in sorted(queues) for step in _PRIORITY_STEPS]


def queue_lengths() -> dict[str, int] | None:
    """Messages waiting per queue (Redis: its priority lists added up; RabbitMQ: ready messages), or None
    when the broker is neither or cannot be read."""
    url = app.conf.broker_url or ""
    if url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return _amqp_queue_lengths()
    if not url.startswith(("redis://", "rediss://")):
        return None
    keys = _redis_queue_keys()
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
            pipeline = connection.default_channel.client.pipeline(transaction=False)
            for key in keys:
                pipeline.llen(key)
            counts = pipeline.execute()
    except Exception:  # redis or kombu errors: the broker is down; the scrape answers without this gauge
        logger.warning("could not read the broker's queue lengths", exc_info=True)
        return None
    lengths: dict[str, int] = {}
    for key, count in zip(keys, counts, strict=True):
        queue = key.split(_PRIORITY_SEP, 1)[0]
        lengths[queue] = lengths.get(queue, 0) + int(count)
    return lengths


def _amqp_queue_lengths() -> dict[str, int] | None:
    """Ready messages per queue from a passive declare, which reads a queue without creating or changing
    it; a queue no worker has declared yet holds nothing."""
    from amqp.exceptions import NotFound  # the RabbitMQ client, loaded only with an amqp:// broker

    queues = sorted({queue.name for queue in app.amqp.queues.values()} or {app.conf.task_default_queue})
    lengths: dict[str, int] = {}
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
            for name in queues:
                # A passive declare of a missing queue closes the channel: each queue gets its own.
                channel = connection.channel()
                try:
                    lengths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except NotFound:
                    lengths[name] = 0
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
    except Exception:  # the broker is down: the scrape answers without this gauge
        logger.warning("could not read the broker's queue lengths", exc_info=True)
        return None
    return lengths


def _job_id(raw: bytes | str, task_name: str) -> int | None:
    try:
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != task_name:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return int(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


# ------------------------------------------------------------------------------
# Metrics: tasks counted by outcome; on a host without the web, the worker serves its metric files.
# ------------------------------------------------------------------------------
def _task_name(sender: object) -> str:
    return str(getattr(sender, "name", None) or "unknown")


@signals.task_success.connect
def _task_succeeded(sender: object = None, **kwargs: object) -> None:
    from monitoring import prometheus

    prometheus.task_finished(task=_task_name(sender), state="success")


@signals.task_failure.connect
def _task_failed(sender: object = None, **kwargs: object) -> None:
    from monitoring import prometheus

    prometheus.task_finished(task=_task_name(sender), state="failure")


@signals.task_retry.connect
def _task_retried(sender: object = None, **kwargs: object) -> None:
    from monitoring import prometheus

    prometheus.task_finished(task=_task_name(sender), state="retry")


@signals.worker_init.connect
def _metrics_serve(**kwargs: object) -> None:
    """With CELERY_METRICS_PORT, the worker's main process serves every metric file of its host's
    PROMETHEUS_MULTIPROC_DIR (its pool's processes included) over HTTP, for Prometheus to scrape."""
    from django.conf import settings

    from monitoring.multiprocess import multiprocess_dir_prepare

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    port = getattr(settings, "CELERY_METRICS_PORT", 0)
    if not path:
        return
    if not port:
        # The web's gunicorn master on this host cleans the folder; the worker may start first.
        os.makedirs(path, exist_ok=True)
        return
    # The folder is this host's own: the worker cleans it as gunicorn's master does on a web host.
    multiprocess_dir_prepare(path)
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    start_http_server(port, registry=registry)
    logger.info("serving this host's worker metrics on port %s", port)
