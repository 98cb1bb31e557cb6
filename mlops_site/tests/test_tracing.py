"""OpenTelemetry traces: off without an endpoint; with one, spans reach a local OTLP/HTTP receiver."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.db import connection
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.celery_worker import database_url_for_other_processes, storage_env_for_other_processes

ROOT = Path(__file__).resolve().parents[2]
SERVER = trace_pb2.Span.SPAN_KIND_SERVER
PRODUCER = trace_pb2.Span.SPAN_KIND_PRODUCER
CONSUMER = trace_pb2.Span.SPAN_KIND_CONSUMER
HEARTBEAT_TASK = "monitoring.tasks.worker_heartbeat_task"
#: Django's database vendor -> the db.system a query span carries.
DB_SYSTEMS = {"sqlite": "sqlite", "postgresql": "postgresql"}


@dataclass
class ReceivedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, object]


class OtlpReceiver:
    """What a collector (Tempo, the OpenTelemetry Collector) does first: accept POST /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = self.headers.get("Content-Encoding")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                receiver._store(self.path, body)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _store(self, path: str, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    spans.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=attributes,
                        )
                    )
        with self._lock:
            self.paths.append(path)
            self.spans.extend(spans)

    def wait_for(self, predicate, *, timeout: float = 30) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [span for span in self.spans if predicate(span)]
            if found:
                return found
            time.sleep(0.1)
        with self._lock:
            names = sorted({(s.service, s.name) for s in self.spans})
        pytest.fail(f"no matching span in {timeout}s; received: {names}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _value(value) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def test_tracing_is_off_without_an_endpoint(settings):
    from opentelemetry import trace

    import mlops_site.wsgi  # noqa: F401  (the web's start, which would set tracing up)
    from mlops_site import tracing

    assert settings.OTEL_EXPORTER_OTLP_ENDPOINT == ""
    assert not tracing.enabled()
    assert tracing.current_ids() == (None, None)
    # No provider installed, no middleware inserted, no driver wrapped.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not any("opentelemetry" in name for name in settings.MIDDLEWARE)
    assert not hasattr(sqlite3.dbapi2.connect, "__wrapped__")


# A web process as gunicorn starts it (mlops_site.wsgi, tracing from the environment), serving a view
# that queries the database and enqueues a task, called once through Django's test client.
WEB_PROCESS = """
import sys, types

import mlops_site.wsgi
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.http import HttpResponse
from django.test import Client
from django.urls import path

from mlops_site import tracing
from mlops_site.celery import app


def enqueue(request):
    get_user_model().objects.count()
    default_storage.exists("tracing-probe")  # an S3 call when a bucket is configured
    app.send_task("monitoring.tasks.worker_heartbeat_task")
    return HttpResponse("queued")


urls = types.ModuleType("tracing_test_urls")
urls.urlpatterns = [path("enqueue/", enqueue)]
sys.modules["tracing_test_urls"] = urls
settings.ROOT_URLCONF = "tracing_test_urls"
assert tracing.enabled()
response = Client().get("/enqueue/", HTTP_X_REQUEST_ID="follow-me-42")
print(response.status_code, response["X-Request-ID"])
tracing.shutdown()
"""


@pytest.mark.worker
def test_a_request_its_query_and_the_task_it_enqueues_are_one_trace_at_the_receiver(
    start_celery_worker, otlp_receiver, tmp_path, settings
):
    tracing_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        # Export within a tenth of a second instead of five, so the test need not wait.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "LOG_FORMAT": "json",
    }
    worker = start_celery_worker("filesystem://", extra_env=tracing_env)
    web = subprocess.run(
        [sys.executable, "-c", WEB_PROCESS],
        env={
            **os.environ,
            **tracing_env,
            "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
            "DATABASE_URL": database_url_for_other_processes(),
            # The worker fixture's data folder: the embedded broker's queue is in it.
            "DATA_DIR": str(tmp_path / "worker-data"),
            "CELERY_BROKER_URL": "filesystem://",
            "CELERY_TASK_ALWAYS_EAGER": "False",
            "ALLOWED_HOSTS": "testserver",
            **storage_env_for_other_processes(),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert web.returncode == 0, web.stderr[-3000:]
    assert web.stdout.split() == ["200", "follow-me-42"]

    [request] = otlp_receiver.wait_for(lambda s: s.kind == SERVER and s.service == "mlops-web")
    queries = otlp_receiver.wait_for(
        lambda s: s.parent_span_id == request.span_id and "db.system" in s.attributes
    )
    [publish] = otlp_receiver.wait_for(lambda s: s.kind == PRODUCER and s.trace_id == request.trace_id)
    [task] = otlp_receiver.wait_for(
        lambda s: s.kind == CONSUMER and s.service == "mlops-worker" and s.trace_id == request.trace_id
    )
    assert request.attributes["http.route"] == "enqueue/"
    assert {q.attributes.get("db.system") for q in queries} == {DB_SYSTEMS[connection.vendor]}
    if settings.AWS_STORAGE_BUCKET_NAME:
        [s3_call] = otlp_receiver.wait_for(lambda s: s.attributes.get("rpc.service") == "S3")
        assert s3_call.parent_span_id == request.span_id
        assert s3_call.name == "S3.HeadObject"
    assert HEARTBEAT_TASK in task.name
    assert task.parent_span_id == publish.span_id
    assert set(otlp_receiver.paths) == {"/v1/traces"}
    # The task's own queries are children of the task's span, in the same trace.
    otlp_receiver.wait_for(lambda s: s.parent_span_id == task.span_id and s.service == "mlops-worker")

    # The worker's JSON log line about the task carries the web request's id and the trace's id.
    task_lines = [
        line
        for line in map(json.loads, (raw for raw in worker.log().splitlines() if raw.startswith("{")))
        if line.get("task_name") == HEARTBEAT_TASK
    ]
    assert task_lines, worker.log()[-3000:]
    assert {line["request_id"] for line in task_lines} == {"follow-me-42"}
    assert {line["trace_id"] for line in task_lines} == {request.trace_id}
