"""Structured logs: JSON lines with the request id, a forged X-Request-ID replaced, the id in task logs."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import shared_task

from mlops_site import celery as celery_hooks
from mlops_site import logging_setup, request_id

ROOT = Path(__file__).resolve().parents[2]
GENERATED = re.compile(r"[0-9a-f]{32}\Z")
task_logger = logging.getLogger("mlops_site.tests.task")


@shared_task(name="mlops_site.tests.test_logging.log_line_task")
def log_line_task() -> None:
    task_logger.info("inside the task")


class JsonLines:
    """Whatever the root logger writes, through the JSON format settings use with LOG_FORMAT=json."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def by_logger(self, name: str) -> list[dict[str, object]]:
        return [line for line in self.lines() if line["logger"] == name]


@pytest.fixture
def json_logs() -> Iterator[JsonLines]:
    captured = JsonLines()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(logging_setup.JsonFormatter())
    handler.addFilter(logging_setup.ContextFilter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def test_a_json_log_line_parses_and_carries_timestamp_level_logger_message_and_request_id(json_logs):
    with request_id.bound("order-7.retry_2"):
        logging.getLogger("mlops_site.example").warning("scored %d rows", 3, extra={"job_id": 12})

    [line] = json_logs.by_logger("mlops_site.example")
    assert line["message"] == "scored 3 rows"
    assert line["level"] == "warning"
    assert line["request_id"] == "order-7.retry_2"
    assert line["job_id"] == 12
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00\Z", line["timestamp"])
    # Tracing is off in tests: no ids rather than empty ones.
    assert "trace_id" not in line
    assert "span_id" not in line


def test_a_log_line_outside_any_request_has_a_null_request_id(json_logs):
    logging.getLogger("mlops_site.example").info("beat tick")

    [line] = json_logs.by_logger("mlops_site.example")
    assert line["request_id"] is None


def test_an_exception_is_kept_in_one_json_line(json_logs):
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("mlops_site.example").exception("failed")

    [line] = json_logs.by_logger("mlops_site.example")
    assert "ValueError: broken" in line["exception"]


def test_the_console_format_shows_the_request_id_in_brackets():
    formatter = logging_setup.ConsoleFormatter()
    record = logging.LogRecord("mlops_site.example", logging.INFO, __file__, 1, "hello", (), None)
    logging_setup.ContextFilter().filter(record)
    with request_id.bound("abc-1"):
        bound = logging.LogRecord("mlops_site.example", logging.INFO, __file__, 1, "hello", (), None)
        logging_setup.ContextFilter().filter(bound)

    assert formatter.format(record).endswith(" INFO mlops_site.example hello")
    assert formatter.format(bound).endswith(" INFO mlops_site.example [abc-1] hello")


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logging_setup.config(log_format="xml", level="INFO")


def _python(code: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mlops_site.settings", **variables}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_settings_refuse_an_unknown_log_format():
    result = _python("import mlops_site.settings", LOG_FORMAT="yaml")

    assert result.returncode != 0
    assert "LOG_FORMAT must be console or json, not 'yaml'" in result.stderr


def test_log_format_json_makes_every_line_a_json_object(tmp_path):
    code = "import django, logging; django.setup(); logging.getLogger('mlops_site.x').warning('hello')"

    result = _python(code, LOG_FORMAT="json", DATA_DIR=str(tmp_path))

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert {"logger": "mlops_site.x", "message": "hello", "level": "warning", "request_id": None}.items() <= (
        lines[-1].items()
    )


@pytest.mark.django_db
def test_a_request_answers_with_its_id_and_its_log_lines_carry_it(client, json_logs):
    response = client.get("/no-such-page/", HTTP_X_REQUEST_ID="client-req.42")

    assert response.status_code == 404
    assert response["X-Request-ID"] == "client-req.42"
    [line] = json_logs.by_logger("django.request")
    assert line["request_id"] == "client-req.42"
    assert line["status_code"] == 404


@pytest.mark.django_db
def test_an_expected_404_is_logged_on_one_line_without_a_traceback(client, json_logs):
    client.get("/no-such-page/")

    [line] = json_logs.by_logger("django.request")
    assert line["message"] == "Not Found: /no-such-page/"
    assert "exception" not in line


def test_a_403_record_loses_its_traceback_but_a_500_keeps_it():
    def record(status: int) -> logging.LogRecord:
        try:
            raise PermissionError("no")
        except PermissionError as exc:
            made = logging.LogRecord(
                "django.request", logging.WARNING, __file__, 1, "x", (), (type(exc), exc, None)
            )
        made.status_code = status
        logging_setup.ContextFilter().filter(made)
        return made

    assert record(403).exc_info is None
    assert record(500).exc_info is not None


@pytest.mark.django_db
def test_without_a_header_each_request_gets_an_id_of_its_own(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]

    assert GENERATED.match(first)
    assert GENERATED.match(second)
    assert first != second


@pytest.mark.django_db
@pytest.mark.parametrize(
    "forged",
    ["x" * 65, "x" * 10_000, "has spaces", 'quote"d', "line\nbreak", "<script>", "ünïcode", ""],
    ids=["65-chars", "10k-chars", "spaces", "quote", "newline", "markup", "non-ascii", "empty"],
)
def test_a_forged_or_huge_request_id_is_replaced_and_never_logged(client, json_logs, forged):
    response = client.get("/no-such-page/", HTTP_X_REQUEST_ID=forged)

    assert GENERATED.match(response["X-Request-ID"])
    [line] = json_logs.by_logger("django.request")
    assert line["request_id"] == response["X-Request-ID"]
    if forged:
        assert forged not in json_logs.stream.getvalue()


def test_an_id_of_64_allowed_characters_is_kept():
    assert request_id.is_well_formed("A-z_0.9:" * 8)
    assert not request_id.is_well_formed("A-z_0.9:" * 8 + "x")
    assert not request_id.is_well_formed(None)


def test_the_request_id_travels_in_a_task_s_headers_and_is_bound_while_it_runs(json_logs):
    headers: dict[str, object] = {}
    with request_id.bound("web-req-9"):
        celery_hooks._request_id_to_headers(headers=headers)
    assert headers == {"request_id": "web-req-9"}

    # Run outside the request, as a worker would: only the header can bring the id.
    log_line_task.apply(headers=headers)

    [line] = json_logs.by_logger("mlops_site.tests.task")
    assert line["request_id"] == "web-req-9"
    assert line["task_name"] == "mlops_site.tests.test_logging.log_line_task"
    assert request_id.current() is None


def test_a_task_run_eagerly_inside_a_request_logs_the_request_s_id(json_logs):
    with request_id.bound("web-req-10"):
        log_line_task.delay()

    [line] = json_logs.by_logger("mlops_site.tests.task")
    assert line["request_id"] == "web-req-10"


def test_a_forged_request_id_header_on_a_task_is_ignored(json_logs):
    log_line_task.apply(headers={"request_id": "x" * 500})

    [line] = json_logs.by_logger("mlops_site.tests.task")
    assert line["request_id"] is None


def test_no_request_id_is_added_to_a_task_sent_outside_a_request():
    headers: dict[str, object] = {}
    celery_hooks._request_id_to_headers(headers=headers)

    assert headers == {}
