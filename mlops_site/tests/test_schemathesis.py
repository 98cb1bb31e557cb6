"""Schemathesis with every check against the live API: generated requests from the OpenAPI schema.

The server is the project's gunicorn on the test database, with a staff token and a production model, so
the generated requests reach the code behind authentication and the 404s. Bounded: a fixed seed and a few
examples per operation (about 1,000 requests in all).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from predictions.tests.helpers import make_model_version, trained_model
from tests.factories import make_user
from tests.live_gunicorn import gunicorn_serving

pytestmark = pytest.mark.worker

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES_PER_OPERATION = 10
#: Seconds after which the run is a failure of its own (it takes about a minute on 2 cores).
MAX_SECONDS = 600


def test_every_operation_passes_every_schemathesis_check(transactional_db, tmp_path):
    staff = make_user("fuzzer", staff=True, superuser=True)
    token = Token.objects.create(user=staff)
    make_model_version(trained=trained_model("iris"), name="iris")
    # A generous request budget: the throttle is tested elsewhere and would turn generated cases into 429s.
    limits = {"API_THROTTLE_USER": "1000000/minute", "API_THROTTLE_ANON": "1000000/minute"}

    with gunicorn_serving(data_dir=tmp_path, env=limits) as port:
        run = subprocess.run(
            [
                str(SCHEMATHESIS), "run", f"http://127.0.0.1:{port}/api/schema/",
                "--header", f"Authorization: Token {token.key}",
                # Revoking the run's own token would turn every later case into a 401.
                "--exclude-operation-id", "auth_token_revoke",
                "--checks", "all", "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", "7",
                # One worker: schemathesis's threads describe hypothesis lambdas with ast.parse at the same
                # time, and CPython 3.11's parser is not thread-safe ("AST constructor recursion depth
                # mismatch" errors an operation at random).
                "--request-timeout", "30", "--workers", "1",
                # Correctness, not speed (bench/ measures that): a loaded CI machine may take seconds.
                "--max-response-time", "30",
            ],
            cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=MAX_SECONDS,
            env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip

    # The whole report is kept beside the test's files: the assertion shows only its end.
    (tmp_path / "schemathesis.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-2000:]
    assert "generated" in run.stdout
