"""deploy/smoke_test.py, the check CI runs after each deploy: against the project's gunicorn serving a site
with a production model, and against small stand-in servers for starting, broken and absent sites."""

from __future__ import annotations

import contextlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from deploy import smoke_test
from tests.factories import make_user
from tests.live_gunicorn import free_port

# Proved once, in the service run, against PostgreSQL, Redis and S3 (see the Makefile's test target).
pytestmark = pytest.mark.deployment

ROOT = Path(settings.BASE_DIR)
SCRIPT = ROOT / "deploy" / "smoke_test.py"


def run_smoke_test(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def line_of(run: subprocess.CompletedProcess[str], check: str) -> str:
    found = [line for line in run.stdout.splitlines() if line[6:].startswith(f"{check}:")]
    assert found, f"no line for {check!r} in:\n{run.stdout}{run.stderr}"
    return found[0]


@pytest.mark.worker
def test_it_passes_on_a_healthy_site_and_fails_clearly_on_a_wrong_token_or_model(transactional_db, tmp_path):
    from predictions.tests.helpers import make_model_version, trained_model
    from tests.live_gunicorn import gunicorn_serving

    user = make_user("smoke")
    token_file = tmp_path / "token"
    token_file.write_text(Token.objects.create(user=user).key + "\n")
    wrong_token_file = tmp_path / "wrong-token"
    wrong_token_file.write_text("0" * 40)
    make_model_version(trained=trained_model("mixed"), name="mixed", version=1, stage="production")
    # The embedded broker's folders, which readiness checks (the worker makes them in a real site).
    for folder in ("queue", "processed", "control"):
        (tmp_path / "celery" / folder).mkdir(parents=True)
    # As in production: content-hashed static names, which WhiteNoise serves as immutable.
    static_env = {"STATIC_MANIFEST": "True", "STATIC_ROOT": str(tmp_path / "static")}
    subprocess.run(
        # The two largest bundles (plotly, the Swagger UI) are left out: the login page links neither.
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0",
         "--ignore", "plotly", "--ignore", "drf_spectacular_sidecar"],
        cwd=ROOT, env={**os.environ, **static_env, "DATA_DIR": str(tmp_path)}, check=True,
    )  # fmt: skip

    with gunicorn_serving(data_dir=tmp_path, env=static_env) as port:
        url = f"http://127.0.0.1:{port}"
        healthy = run_smoke_test(url, "--token-file", str(token_file), "--deadline", "30")
        named = run_smoke_test(url, "--token-file", str(token_file), "--model", "mixed", "--deadline", "30")
        wrong_token = run_smoke_test(url, "--token-file", str(wrong_token_file), "--deadline", "5")
        unknown_model = run_smoke_test(
            url, "--token-file", str(token_file), "--model", "no-such-model", "--deadline", "5"
        )
        without_token = run_smoke_test(url, "--deadline", "5")
        no_worker = run_smoke_test(url, "--deadline", "3", "--max-worker-age", "180")

    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert [line.split()[0] for line in healthy.stdout.splitlines()[:-1]] == ["ok"] * 6
    assert "immutable" in line_of(healthy, "static")
    assert "mixed has production version 1" in line_of(healthy, "api models")
    assert line_of(healthy, "predict").startswith("ok    predict: mixed version 1 predicted ")
    assert "smoke test passed" in healthy.stdout.splitlines()[-1]
    assert named.returncode == 0, named.stdout + named.stderr

    assert wrong_token.returncode == 1
    assert line_of(wrong_token, "api models").startswith("FAIL  api models: ")
    assert "answered 401" in line_of(wrong_token, "api models")
    assert "0" * 40 not in wrong_token.stdout  # the token is never printed
    assert line_of(wrong_token, "healthz").startswith("ok")

    assert unknown_model.returncode == 1
    assert "/api/models/no-such-model/ answered 404" in line_of(unknown_model, "api models")

    assert without_token.returncode == 0, without_token.stdout
    assert line_of(without_token, "api models") == "skip  api models: no --token-file"

    # No Celery worker runs here: required, its absence fails readiness after the deadline.
    assert no_worker.returncode == 1
    assert "no Celery worker has reported in the last 180 s" in line_of(no_worker, "readyz")


def test_it_fails_with_the_reason_when_nothing_answers_at_the_url():
    run = run_smoke_test(f"http://127.0.0.1:{free_port()}", "--deadline", "1")

    assert run.returncode == 1
    assert line_of(run, "healthz").startswith("FAIL  healthz: ")
    assert "Connection refused" in line_of(run, "healthz")
    assert "smoke test FAILED" in run.stdout


class StandInSite(http.server.BaseHTTPRequestHandler):
    """Answers like the app while it starts (503s first), with a login page and a static file whose
    Cache-Control the test chooses."""

    starting_answers = 0
    cache_control = "max-age=315360000, public, immutable"
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.path == "/healthz" and type(self).starting_answers > 0:
            type(self).starting_answers -= 1
            self._answer(503, b'{"status": "starting"}', "application/json")
        elif self.path in ("/healthz", "/readyz"):
            self._answer(200, b'{"status": "ok", "workers": []}', "application/json")
        elif self.path == "/accounts/login/":
            page = (
                b'<link rel="stylesheet" href="/static/css/site.0123456789ab.css">'
                b'<form><input name="csrfmiddlewaretoken"><input name="username"></form>'
            )
            self._answer(200, page, "text/html")
        elif self.path == "/static/css/site.0123456789ab.css":
            self._answer(200, b"body{}", "text/css", {"Cache-Control": self.cache_control})
        else:
            self._answer(404, b'{"detail": "Not found."}', "application/json")

    def _answer(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def stand_in_site(**attributes: object) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Site", (StandInSite,), {**attributes, "seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_it_waits_for_a_starting_site_until_it_answers():
    with stand_in_site(starting_answers=2) as (url, seen):
        run = run_smoke_test(url, "--deadline", "20")

    assert run.returncode == 0, run.stdout + run.stderr
    assert seen[:3] == ["/healthz"] * 3
    assert line_of(run, "healthz") == "ok    healthz: 200"


def test_it_gives_up_at_the_deadline_on_a_site_that_never_becomes_healthy():
    with stand_in_site(starting_answers=1000) as (url, _):
        run = run_smoke_test(url, "--deadline", "1")

    assert run.returncode == 1
    assert f"{url}/healthz answered 503" in line_of(run, "healthz")


def test_it_fails_when_hashed_static_files_are_not_cached_as_immutable():
    with stand_in_site(cache_control="max-age=60, public") as (url, _):
        run = run_smoke_test(url, "--deadline", "5")

    assert run.returncode == 1
    assert "Cache-Control 'max-age=60, public', not immutable" in line_of(run, "static")


def test_an_example_row_takes_the_middle_of_numeric_ranges_and_the_first_category():
    schema = [
        {"name": "age", "kind": "numeric", "min": 20.0, "max": 60.0},
        {"name": "income", "kind": "numeric", "min": None, "max": None},
        {"name": "city", "kind": "categorical", "categories": ["Lyon", "Paris"]},
        {"name": "note", "kind": "categorical", "categories": []},
    ]

    assert smoke_test.example_row(schema) == {"age": 40.0, "income": None, "city": "Lyon", "note": None}
