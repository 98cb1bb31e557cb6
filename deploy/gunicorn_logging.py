"""gunicorn's logger, following LOG_FORMAT like the application's logs.

With LOG_FORMAT=json the access lines are JSON objects with the fields a log search needs (method, path,
status, duration, bytes, client, user agent, the request id the application answered with) and gunicorn's
own error lines use the application's JSON formatter, so every line the web container writes parses. With
the console format gunicorn keeps its usual combined-log lines.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from gunicorn import glogging

#: Longer client-controlled values are cut: a 100 kB User-Agent must not become a 100 kB log line.
MAX_FIELD_CHARS = 512


def json_format() -> bool:
    return os.environ.get("LOG_FORMAT", "console").strip().lower() == "json"


def _cut(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + "…"


def _header(headers: Any, name: str) -> str | None:
    for key, value in headers or ():
        if key.lower() == name:
            return value
    return None


class Logger(glogging.Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if not json_format():
            return
        from mlops_site.logging_setup import JsonFormatter

        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(JsonFormatter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not json_format():
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        try:
            status = int(status)
        except (TypeError, ValueError):
            status = None
        method = _cut(environ.get("REQUEST_METHOD"))
        path = _cut(environ.get("PATH_INFO"))
        fields = {
            "method": method,
            "path": path,
            "query": _cut(environ.get("QUERY_STRING")) or None,
            "status_code": status,
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "bytes_sent": getattr(resp, "sent", None),
            "remote_addr": _cut(environ.get("REMOTE_ADDR")),
            "user_agent": _cut(environ.get("HTTP_USER_AGENT")),
            "protocol": _cut(environ.get("SERVER_PROTOCOL")),
            # The id the application answered with: the client's when it was acceptable, else a new one
            # (mlops_site.request_id), so a forged header is never what gets logged.
            "request_id": _cut(_header(getattr(resp, "headers", None), "x-request-id")),
        }
        try:
            self.access_log.info("%s %s %s", method, path, status, extra=fields)
        except Exception:  # a log line must never fail a request (gunicorn's own access() does the same)
            self.exception("access log line failed")
