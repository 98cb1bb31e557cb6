"""Where a single-row predict request spends its time: exclusive wall and CPU time per step, in-process.

    python bench/predict_profile.py [--requests 2000]

Sets up the same throwaway site and model as bench/predictions_api.py, then sends the same request
(token auth, one row) through Django's WSGI handler in this process, as a gunicorn sync worker does, with
timers around each step of the request path: connecting to and closing the database, token
authentication, throttling, JSON parsing, body checks, the version lookup, validation, the model cache and
the model call, storing the prediction (insert + commit), rendering the response, and the rest (Django's
middleware, URL routing, the WSGI exchange). Times are exclusive (a step's nested steps are not counted
twice), as means per request in microseconds; CPU time shows what is computation and what is waiting
(disk, locks). cProfile output for the same loop is written with --cprofile FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import io
import itertools
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import predict_common as common


class StepTimers:
    """Exclusive wall and CPU time per named step; a step's time excludes the steps nested inside it."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[float]] = []  # [child wall, child cpu] per open step

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._stack.append([0.0, 0.0])
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            child_wall, child_cpu = self._stack.pop()
            self.wall[name] += wall - child_wall
            self.cpu[name] += cpu - child_cpu
            self.calls[name] += 1
            if self._stack:
                self._stack[-1][0] += wall
                self._stack[-1][1] += cpu

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        """Time every call of owner.attribute (a function, method or property getter) as step `name`."""
        # getattr_static finds an inherited method or property as defined, without binding it.
        original = (
            inspect.getattr_static(owner, attribute) if isinstance(owner, type) else getattr(owner, attribute)
        )
        if isinstance(original, property):
            getter = original.fget

            @functools.wraps(getter)
            def timed_getter(instance: Any) -> Any:
                with self.step(name):
                    return getter(instance)

            setattr(owner, attribute, property(timed_getter))
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.step(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)

    def reset(self) -> None:
        self.wall.clear()
        self.cpu.clear()
        self.calls.clear()


def _instrument(timers: StepTimers) -> None:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.query import QuerySet
    from django_prometheus.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware
    from rest_framework.authentication import TokenAuthentication
    from rest_framework.renderers import JSONRenderer
    from rest_framework.request import Request
    from rest_framework.views import APIView

    from ml.predictor import OnnxPredictor, SklearnPredictor
    from mlops_site import inserts
    from monitoring import drift_rollups, prometheus
    from predictions import api, live_rollups, model_cache, services

    timers.wrap(BaseDatabaseWrapper, "connect", "db connect")
    timers.wrap(BaseDatabaseWrapper, "close", "db close")
    timers.wrap(TokenAuthentication, "authenticate", "auth (token lookup)")
    timers.wrap(APIView, "check_throttles", "throttle")
    timers.wrap(Request, "_parse", "JSON parsing")
    timers.wrap(api, "predict_body_read", "body checks")
    # prediction_make's own time is storing: its other steps are timed inside it, and storing's parts too.
    timers.wrap(services, "prediction_make", "store: the rest (transaction, objects)")
    timers.wrap(QuerySet, "create", "store: row inserts")
    timers.wrap(QuerySet, "bulk_create", "store: row inserts")
    timers.wrap(inserts, "objects_insert", "store: row inserts")
    # PostgreSQL with the rollups summed per process: the request and its rows in one statement, committed
    # with it (no transaction around it).
    timers.wrap(inserts, "family_insert", "store: row inserts")
    timers.wrap(live_rollups, "prediction_hours_add", "store: hourly rollups")
    timers.wrap(live_rollups, "latency_hours_add", "store: hourly rollups")
    timers.wrap(drift_rollups, "prediction_features_add", "store: drift rollups")
    # PREDICTION_ROLLUP_DELAY_SECONDS above 0: the sums kept per process and their writes.
    timers.wrap(live_rollups.PendingRollups, "add", "store: rollups summed per process")
    timers.wrap(live_rollups.PendingRollups, "write", "store: rollups summed per process")
    timers.wrap(BaseDatabaseWrapper, "commit", "store: commit")
    timers.wrap(prometheus, "prediction_observed", "metrics")
    for middleware in (PrometheusBeforeMiddleware, PrometheusAfterMiddleware):
        for hook in ("process_request", "process_view", "process_response"):
            if hasattr(middleware, hook):
                timers.wrap(middleware, hook, "metrics")
    timers.wrap(model_cache.VersionResolutions, "resolve", "version lookup")
    timers.wrap(services, "rows_validate", "validation")
    timers.wrap(model_cache.PredictorCache, "get", "model cache")
    timers.wrap(OnnxPredictor, "predict_columns", "model call")
    timers.wrap(SklearnPredictor, "predict_columns", "model call")
    timers.wrap(JSONRenderer, "render", "response JSON")


def request_caller(*, path: str, body: bytes, tokens: list[str]) -> Callable[[], bytes]:
    """A function sending one POST through Django's WSGI handler, as gunicorn's sync worker would.

    The tokens are used in turn (one per simulated client), so no client reaches its rate limit.
    """
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()
    base = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    turn = itertools.cycle(tokens)

    def call() -> bytes:
        statuses: list[str] = []
        environ = {**base, "wsgi.input": io.BytesIO(body), "HTTP_AUTHORIZATION": f"Token {next(turn)}"}
        response = handler(environ, lambda status, headers, exc_info=None: statuses.append(status))
        try:
            content = b"".join(response)
        finally:
            response.close()  # sends request_finished, as a WSGI server does
        if not statuses or not statuses[0].startswith("200"):
            raise RuntimeError(f"{statuses}: {content[:300]!r}")
        return content

    return call


def profile(call: Callable[[], bytes], *, requests: int, timers: StepTimers) -> dict[str, Any]:
    timers.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        with timers.step("other (middleware, routing, WSGI)"):
            call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    steps = sorted(timers.wall, key=lambda name: -timers.wall[name])
    return {
        "requests": requests,
        "mean_wall_us": round(wall / requests * 1e6, 1),
        "mean_cpu_us": round(cpu / requests * 1e6, 1),
        "steps": [
            {
                "step": name,
                "wall_us": round(timers.wall[name] / requests * 1e6, 1),
                "cpu_us": round(timers.cpu[name] / requests * 1e6, 1),
                "share": round(timers.wall[name] / wall, 3),
                "calls_per_request": round(timers.calls[name] / requests, 2),
            }
            for name in steps
        ],
    }


def print_profile(result: dict[str, Any]) -> None:
    print(f"\n{'step':<36} {'wall us':>9} {'cpu us':>9} {'share':>7}")
    print("-" * 64)
    for row in result["steps"]:
        print(f"{row['step']:<36} {row['wall_us']:>9.1f} {row['cpu_us']:>9.1f} {row['share'] * 100:>6.1f}%")
    print("-" * 64)
    print(f"{'total per request':<36} {result['mean_wall_us']:>9.1f} {result['mean_cpu_us']:>9.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--cprofile", type=Path, help="also write cProfile stats of the loop to this file")
    parser.add_argument("--output", type=Path, help="write the step table as JSON here")
    parser.add_argument(
        "--settings",
        default="mlops_site.settings",
        help="settings module to profile (one importing mlops_site.settings and changing it tries a change)",
    )
    args = parser.parse_args()
    if not 1 <= args.requests <= 20000:
        parser.error("--requests must be 1..20000")

    with common.temp_dir("bench-profile-") as tmp:
        data_dir = Path(tmp)
        common.django_configure(data_dir, DJANGO_SETTINGS_MODULE=args.settings)
        # The web process does not run tasks eagerly; nothing here enqueues one, but keep it faithful.
        os.environ["CELERY_TASK_ALWAYS_EAGER"] = "False"
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        users = get_user_model()
        owner = users.objects.create_user(f"bench-owner-{os.getpid()}", is_staff=True)
        common.say(f"training the forest through the training service ({common.database_label()})")
        model = common.forest_train_and_promote(data_dir=data_dir, user=owner)
        tokens = [
            Token.objects.create(user=users.objects.create_user(f"bench-{os.getpid()}-{i}")).key
            for i in range(50)
        ]
        frame = common.breast_cancer_frame()
        body = json.dumps({"inputs": {n: float(frame.iloc[0][n]) for n in model.feature_names}}).encode()
        from django.db import connections

        connections.close_all()
        call = request_caller(path=f"/api/models/{model.name}/predict/", body=body, tokens=tokens)
        timers = StepTimers()
        _instrument(timers)
        for _ in range(100):  # warm-up: the model loads, code paths get hot
            call()
        result = profile(call, requests=args.requests, timers=timers)
        print_profile(result)
        if args.cprofile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.runcall(lambda: [call() for _ in range(min(args.requests, 1000))])
            profiler.dump_stats(str(args.cprofile))
            print(f"wrote {args.cprofile}")
        # PREDICTION_ROLLUP_DELAY_SECONDS above 0: the sums not yet written go before the site's folder does.
        from predictions import live_rollups

        live_rollups.pending.write()
        connections.close_all()
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
