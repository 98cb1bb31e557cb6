"""The LOGGING configuration: console lines for people, or one JSON object per line for Loki and friends.

Both formats carry the request id (mlops_site.request_id) and, while tracing is on, the trace and span
ids, so a log line leads to its trace and back. Plain stdlib logging: every logger (Django's, Celery's,
boto's, ours) goes through the same handler, with no second logging API to learn.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from mlops_site import request_id

FORMATS = ("console", "json")

#: The attributes every LogRecord has; anything else on a record was passed in `extra=`.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
#: Ours, set by ContextFilter; written once, under their own keys.
_CONTEXT_ATTRIBUTES = {"request_id", "trace_id", "span_id", "task_id", "task_name"}


class ContextFilter(logging.Filter):
    """Puts the request id, trace ids and Celery task on every record, on the handler so that records
    propagated from any logger get them; drops tracebacks of expected client errors (403, 404)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.current()
        record.trace_id, record.span_id = _trace_ids()
        record.task_id, record.task_name = _celery_task()
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and record.exc_info:
            # Django logs a refused request (PermissionDenied, Http404) with its exception: the one-line
            # "Forbidden: /path" says all; a traceback per 404 would bury the real errors.
            record.exc_info = None
            record.exc_text = None
        return True


def _trace_ids() -> tuple[str | None, str | None]:
    # Imported late: with tracing off the OpenTelemetry SDK is never loaded by logging.
    from mlops_site import tracing

    return tracing.current_ids()


def _celery_task() -> tuple[str | None, str | None]:
    celery_state = sys.modules.get("celery._state")
    if celery_state is None:
        return None, None
    task = celery_state.get_current_task()
    if task is None or task.request.id is None:
        return None, None
    return task.request.id, task.name


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, request_id, trace ids, extras."""

    def format(self, record: logging.LogRecord) -> str:
        created = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        line: dict[str, Any] = {
            "timestamp": created.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key in ("trace_id", "span_id", "task_id", "task_name"):
            if getattr(record, key, None) is not None:
                line[key] = getattr(record, key)
        for key, value in vars(record).items():
            # Extras that are plain values (Django's status_code, a job id); objects such as the
            # HttpRequest Django passes are left out rather than turned into their repr.
            known = key in _RECORD_ATTRIBUTES or key in _CONTEXT_ATTRIBUTES or key in line
            if not known and (value is None or isinstance(value, str | int | float | bool)):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """The plain format, with the request id in brackets when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [getattr(record, key, None) for key in ("request_id", "trace_id")]
        ids = [value for value in ids if value]
        record.context = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


def config(*, log_format: str, level: str) -> dict[str, Any]:
    """The dictConfig for settings.LOGGING."""
    if log_format not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    formatter = JsonFormatter if log_format == "json" else ConsoleFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": f"{__name__}.ContextFilter"}},
        "formatters": {"default": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["context"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.db.backends": {"level": "WARNING"}},
    }
