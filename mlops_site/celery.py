"""The Celery application and what the job sweeps read of its broker; tasks live in each app's tasks.py."""

from __future__ import annotations

import base64
import json
import logging
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")

logger = logging.getLogger(__name__)

app = Celery("mlops_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

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
