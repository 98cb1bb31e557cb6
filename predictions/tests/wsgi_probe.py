"""The project's WSGI app for multi-process tests, with a header naming the worker process."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")

from django.core.wsgi import get_wsgi_application

_django = get_wsgi_application()

WORKER_HEADER = "X-Worker-Pid"


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, (WORKER_HEADER, str(os.getpid()))], exc_info)

    return _django(environ, start)
