"""Mixed-traffic load test: single predictions, batch jobs, pages and API reads at once, on the real stack.

A throwaway site (as the other benchmarks), gunicorn started with deploy/gunicorn.conf.py, a real Celery
worker on the filesystem broker, and the breast-cancer forest trained through the training service and
promoted. Client threads then send a weighted mix of requests for --minutes; afterwards every batch job is
waited for and the script checks: no 5xx answer and no failed connection, the batch queue drained, every
job succeeded, and the predictions stored equal the rows clients were told were predicted (single + batch).
Writes bench/results/load_mixed.json and prints a table; the exit code is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import predict_common as common
from bench import report

RESULTS = common.ROOT / "bench" / "results" / "load_mixed.json"
#: What each client thread does between its batch jobs, by weight: mostly single predictions.
MIX = {"predict": 65, "api_read": 20, "page": 15}
KINDS = (*MIX, "batch")


@dataclass
class Tally:
    """What the clients saw, shared by the threads (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: Counter = field(default_factory=Counter)  # (kind, status) -> count; status 0: no answer
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    rows_predicted: int = 0  # rows single-prediction answers said were predicted
    batch_jobs: list[tuple[str, str]] = field(default_factory=list)  # (the submitter's token, the job's path)
    failures: list[str] = field(default_factory=list)
    odd: Counter = field(default_factory=Counter)  # (path, status) of every answer that was not 2xx

    def record(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            self.answers[kind, status] += 1
            self.latencies[kind].append(seconds)


class Client:
    """One keep-alive connection per thread, opened again after any connection error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            raise


def _multipart(filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: text/csv\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _batch_csv(frame: Any, features: list[str], rows: int, seed: int) -> bytes:
    sample = frame[features].sample(n=rows, replace=True, random_state=seed)
    buffer = io.StringIO()
    sample.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def _client_loop(
    *, port: int, stop_at: float, token: str, session: str, model: str, row: dict[str, float],
    batch_body: tuple[bytes, str], batch_every: float, tally: Tally, seed: int,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    # Each client submits a batch file every `batch_every` seconds, starting at a random offset, so the
    # worker gets a steady stream of jobs instead of one per client at once.
    next_batch = time.monotonic() + rng.uniform(0, batch_every)
    client = Client(port)
    api = {"Authorization": f"Token {token}"}
    pages = [
        "/",
        "/models/",
        f"/models/{model}/",
        "/predictions/",
        "/batch/",
        f"/predict/{model}/",
    ]
    reads = [
        "/api/models/",
        f"/api/models/{model}/versions/",
        "/api/predictions/?page_size=20",
        "/api/batch-jobs/",
    ]
    predict_body = json.dumps({"inputs": row}).encode()
    kinds, weights = list(MIX), list(MIX.values())
    while time.monotonic() < stop_at:
        kind = rng.choices(kinds, weights)[0]
        if time.monotonic() >= next_batch:
            kind, next_batch = "batch", next_batch + batch_every
        if kind == "predict":
            method, path, body = "POST", f"/api/models/{model}/predict/", predict_body
            headers = {**api, "Content-Type": "application/json"}
        elif kind == "api_read":
            method, path, body, headers = "GET", rng.choice(reads), None, api
        elif kind == "page":
            method, path, body, headers = "GET", rng.choice(pages), None, {"Cookie": f"sessionid={session}"}
        else:
            method, path, body = "POST", f"/api/models/{model}/batch/", batch_body[0]
            headers = {**api, "Content-Type": batch_body[1]}
        started = time.perf_counter()
        try:
            status, answer = client.request(method, path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            tally.record(kind, 0, time.perf_counter() - started)
            with tally.lock:
                tally.failures.append(f"{method} {path}: {exc!r}")
            continue
        tally.record(kind, status, time.perf_counter() - started)
        try:
            _note_answer(tally, f"{method} {path}", kind, status, answer, token)
        except (ValueError, KeyError) as exc:
            with tally.lock:
                tally.failures.append(f"{method} {path}: unreadable answer {exc!r}: {answer[:200]!r}")


def _note_answer(tally: Tally, request: str, kind: str, status: int, answer: bytes, token: str) -> None:
    """What the client was told: rows predicted, a job to wait for, or a failure."""
    if not 200 <= status < 300:
        with tally.lock:
            tally.odd[request, status] += 1
    if status >= 500:
        with tally.lock:
            tally.failures.append(f"{request}: HTTP {status} {answer[:200]!r}")
    elif kind == "predict" and status == 200:
        told = len(json.loads(answer)["predictions"])
        with tally.lock:
            tally.rows_predicted += told
    elif kind == "batch" and status == 202:
        job_path = urllib.parse.urlsplit(json.loads(answer)["url"]).path
        with tally.lock:
            tally.batch_jobs.append((token, job_path))


def _jobs_wait(port: int, jobs: list[tuple[str, str]], deadline: float) -> dict[str, dict[str, Any]]:
    """Each job's last answer from the API (asked as its submitter), once all are finished or time is up."""
    client = Client(port)
    last: dict[str, dict[str, Any]] = {}
    pending = list(jobs)
    while pending and time.monotonic() < deadline:
        still = []
        for token, path in pending:
            status, answer = client.request("GET", path, None, {"Authorization": f"Token {token}"})
            if status != 200:
                raise RuntimeError(f"batch job {path}: HTTP {status} {answer[:300]!r}")
            last[path] = json.loads(answer)
            if last[path]["status"] not in ("succeeded", "failed"):
                still.append((token, path))
        pending = still
        if pending:
            time.sleep(1)
    return last


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10, help="length of the mixed traffic (default 10)")
    parser.add_argument("--clients", type=int, default=8, help="client threads sending at once")
    parser.add_argument("--batch-rows", type=int, default=2000, help="rows in each batch file")
    parser.add_argument("--batch-every", type=float, default=20, help="seconds between one client's batches")
    parser.add_argument("--drain-timeout", type=int, default=900, help="seconds to wait for the batch queue")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 0 < args.minutes <= 120 or not 1 <= args.clients <= 64 or not 1 <= args.batch_rows <= 100_000:
        parser.error("--minutes must be in (0, 120], --clients 1..64, --batch-rows 1..100000")
    common.sigterm_unwinds()
    started = time.monotonic()

    with common.temp_dir("bench-load-") as tmp, contextlib.ExitStack() as servers:
        data_dir = Path(tmp)
        env = common.django_configure(data_dir)
        database = common.database_label()
        from django.test import Client as DjangoClient

        owner, clients, tokens = common.api_users(args.clients, prefix="load")
        sessions = []
        for user in clients:
            browser = DjangoClient()
            browser.force_login(user)
            sessions.append(browser.cookies["sessionid"].value)
        common.say(f"training the forest through the training service ({database})")
        model = common.forest_train_and_promote(data_dir=data_dir, user=owner)
        frame = common.breast_cancer_frame()
        row = {name: float(frame.iloc[0][name]) for name in model.feature_names}
        batch_body = _multipart("load.csv", _batch_csv(frame, model.feature_names, args.batch_rows, seed=7))

        site_env = common.celery_broker_ready(data_dir, env)
        (port,) = common.free_ports(1)
        # deploy/gunicorn.conf.py's own app and worker count: the settings a deployment runs with.
        web_command = common.gunicorn_command(port, workers=None, app=None)
        worker_command = common.celery_worker_command(f"load-{os.getpid()}")
        web = servers.enter_context(common.server_running("web", web_command, site_env, data_dir))
        worker = servers.enter_context(common.server_running("worker", worker_command, site_env, data_dir))
        probe = json.dumps({"inputs": row}).encode()
        web.wait_ready(
            f"http://127.0.0.1:{port}/api/models/{model.name}/predict/",
            probe,
            {"Content-Type": "application/json", "Authorization": f"Token {tokens[0]}"},
        )
        from predictions.models import BatchPredictionJob, Prediction

        before = Prediction.objects.count()

        tally = Tally()
        common.say(
            f"{args.clients} clients for {args.minutes:g} min: mix {MIX}, a batch each {args.batch_every:g} s"
        )
        load_before = report.load_average()
        traffic_started = time.monotonic()
        stop_at = traffic_started + args.minutes * 60
        threads = [
            threading.Thread(
                target=_client_loop,
                kwargs={
                    "port": port, "stop_at": stop_at, "token": tokens[i], "session": sessions[i],
                    "model": model.name, "row": row, "batch_body": batch_body,
                    "batch_every": args.batch_every, "tally": tally, "seed": i,
                },
                daemon=True,
            )
            for i in range(args.clients)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            time.sleep(min(30.0, max(0.5, stop_at - time.monotonic())))
            if web.process.poll() is not None or worker.process.poll() is not None:
                raise RuntimeError(f"a server died:\n{web.log_tail()}\n{worker.log_tail()}")
            done = sum(tally.answers.values())
            common.say(
                f"{time.monotonic() - traffic_started:.0f} s: {done:,} requests, {len(tally.failures)} failed"
            )
        traffic_seconds = time.monotonic() - traffic_started
        load_after = report.load_average()

        common.say(f"waiting for {len(tally.batch_jobs)} batch jobs to finish")
        drain_started = time.monotonic()
        jobs = _jobs_wait(port, tally.batch_jobs, deadline=drain_started + args.drain_timeout)
        drain_seconds = time.monotonic() - drain_started
        unfinished = BatchPredictionJob.objects.exclude(status__in=BatchPredictionJob.TERMINAL).count()
        failed_jobs = [u for u, job in jobs.items() if job["status"] != "succeeded"]
        queued_messages = len(list((data_dir / "celery" / "queue").iterdir()))
        batch_rows_told = sum(job["rows_predicted"] for job in jobs.values())
        stored = Prediction.objects.count() - before
        batch_stored = Prediction.objects.filter(batch_job__isnull=False).count()

    five_xx = sum(n for (kind, status), n in tally.answers.items() if status >= 500)
    no_answer = sum(n for (kind, status), n in tally.answers.items() if status == 0)
    told = tally.rows_predicted + batch_rows_told
    checks = {
        "no_5xx": five_xx == 0,
        "no_failed_connection": no_answer == 0,
        "queue_drained": unfinished == 0 and queued_messages == 0 and len(jobs) == len(tally.batch_jobs),
        "every_job_succeeded": not failed_jobs and len(jobs) == len(tally.batch_jobs),
        "stored_equals_told": stored == told,
    }
    by_kind = {}
    for kind in KINDS:
        statuses = {str(status): n for (k, status), n in sorted(tally.answers.items()) if k == kind}
        latencies = tally.latencies.get(kind, [])
        by_kind[kind] = {
            "requests": len(latencies),
            "per_second": round(len(latencies) / traffic_seconds, 1),
            "statuses": statuses,
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else 0.0,
            "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
            "max_ms": round(max(latencies, default=0) * 1000, 1),
        }
    document = {
        "benchmark": "load_mixed",
        "database": database,
        "git": report.git_state(),
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "traffic_seconds": round(traffic_seconds, 1),
        "clients": args.clients,
        "mix_weights": MIX,
        "batch_rows_per_job": args.batch_rows,
        "batch_every_seconds_per_client": args.batch_every,
        "server": "gunicorn -c deploy/gunicorn.conf.py (defaults), celery worker --concurrency 1",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "by_kind": by_kind,
        "five_xx": five_xx,
        "failed_connections": no_answer,
        "batch_jobs": len(tally.batch_jobs),
        "batch_jobs_failed": len(failed_jobs),
        "drain_seconds": round(drain_seconds, 1),
        "rows_told_single": tally.rows_predicted,
        "rows_told_batch": batch_rows_told,
        "predictions_stored": stored,
        "predictions_stored_by_batch_jobs": batch_stored,
        "first_failures": tally.failures[:20],
        "not_2xx": {f"{request} -> {status}": n for (request, status), n in sorted(tally.odd.items())},
        "checks": checks,
    }
    header = (
        f"{'traffic':<10} {'requests':>9} {'per s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>9}  statuses"
    )
    print()
    print(header)
    print("-" * len(header))
    for kind, row_ in by_kind.items():
        print(
            f"{kind:<10} {row_['requests']:>9,} {row_['per_second']:>7.1f} {row_['p50_ms']:>8.1f} "
            f"{row_['p99_ms']:>8.1f} {row_['max_ms']:>9.1f}  {row_['statuses']}"
        )
    print()
    print(
        f"5xx {five_xx}, failed connections {no_answer}; {len(tally.batch_jobs)} batch jobs, "
        f"{len(failed_jobs)} not succeeded, queue drained in {drain_seconds:.0f} s after the traffic"
    )
    print(
        f"rows told: {tally.rows_predicted:,} single + {batch_rows_told:,} batch = {told:,}; "
        f"predictions stored: {stored:,}"
    )
    for name, ok in checks.items():
        print(f"  {'ok    ' if ok else 'FAILED'} {name}")
    report.document_write(args.output, document)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
