"""OpenTelemetry traces of web requests, Celery tasks, SQL queries and S3/HTTP calls, sent over OTLP/HTTP.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then nothing here imports the SDK or patches anything, so
tracing costs nothing. When set, `setup()` runs once per process at start (wsgi.py for the web, the
worker_init and beat_init signals in mlops_site.celery), never at settings import: the instrumentations
patch libraries and insert a Django middleware, which must happen before the first request or task.
The exporter reads the other standard variables itself (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT,
OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, ...). gunicorn workers and prefork Celery children are
forks: the SDK restarts its export thread in each child (os.register_at_fork), so setting up before the
fork is safe too.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)

# The process's provider once `setup()` ran with an endpoint; None means tracing is off.
_provider: TracerProvider | None = None
# Connection attributes psycopg 3 exposes under .info (what opentelemetry-instrumentation-psycopg reads).
_PSYCOPG_ATTRIBUTES = {
    "database": "info.dbname",
    "port": "info.port",
    "host": "info.host",
    "user": "info.user",
}


def enabled() -> bool:
    return _provider is not None


def setup(*, default_service_name: str) -> bool:
    """Install the tracer provider and the instrumentations when an endpoint is configured; True if on.

    OTEL_SERVICE_NAME names the service; without it each kind of process has its own default
    ("mlops-web", "mlops-worker", "mlops-beat"). Calling it again does nothing.
    """
    global _provider
    if _provider is not None:
        return True
    if not settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = new_provider(service_name=settings.OTEL_SERVICE_NAME or default_service_name)
    # No arguments: the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, headers and timeout itself.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    instrument(provider)
    _provider = provider
    logger.info("tracing on: spans go to %s", settings.OTEL_EXPORTER_OTLP_ENDPOINT)
    return True


def new_provider(*, service_name: str) -> TracerProvider:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and the SDK's own; the service name given wins.
    return TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))


def instrument(provider: TracerProvider) -> None:
    """Patch Django, Celery, the database drivers, botocore and requests to report to `provider`."""
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.dbapi import trace_integration
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    # Inserts its middleware first in settings.MIDDLEWARE: must run before the WSGI handler loads it.
    DjangoInstrumentor().instrument(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    BotocoreInstrumentor().instrument(tracer_provider=provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    # Django opens connections with sqlite3.dbapi2.connect and psycopg.connect: wrapping those two makes
    # every query of every connection opened from now on a span (a child of the request's or task's).
    # opentelemetry-instrumentation-sqlite3/-psycopg do the same, but lag the SDK's release.
    trace_integration(sqlite3.dbapi2, "connect", "sqlite", tracer_provider=provider)
    try:
        import psycopg
    except ImportError:  # the embedded default does not need it
        return
    trace_integration(psycopg, "connect", "postgresql", _PSYCOPG_ATTRIBUTES, tracer_provider=provider)


def uninstrument() -> None:
    """Undo `instrument()` (tests): the patched libraries behave as before."""
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.dbapi import unwrap_connect
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    for instrumentor in (DjangoInstrumentor, CeleryInstrumentor, BotocoreInstrumentor, RequestsInstrumentor):
        instrumentor().uninstrument()
    unwrap_connect(sqlite3.dbapi2, "connect")
    try:
        import psycopg
    except ImportError:
        return
    unwrap_connect(psycopg, "connect")


def shutdown() -> None:
    """Send the spans still buffered (a process about to exit)."""
    if _provider is not None:
        _provider.shutdown()


def current_ids() -> tuple[str | None, str | None]:
    """The hex trace and span ids of the current span, for log lines; (None, None) with tracing off."""
    if _provider is None:
        return None, None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
