"""Feedback import benchmark: a 200,000-row CSV of true outcomes through a real import on PostgreSQL.

    python bench/feedback_import.py [--rows 200000] [--bad-every 100] [--timeout 900] [--profile]

On PostgreSQL: the server of DATABASE_URL when given, else a throwaway one started the way
deploy/test_services.py starts it (loopback only, stopped at the end). The breast-cancer forest is
trained through our training service and promoted; `--rows` predictions of it (spread over the last 7
days, one request per hour) are stored with COPY and counted per hour with the real
`prediction_hours_add`.

The file: `prediction_id,true_label,comment` for every prediction in random order, the true class right
about 90% of the time, a comment on one row in 20; every `--bad-every`-th row is refused (an unknown id,
a label that is not a class, or a prediction named on an earlier row), so the errors file is written too.

Ours: the real path. `feedback_import_start` checks and stores the upload and queues the import; a real
Celery worker (`celery worker --concurrency 1`, prefork, filesystem broker, in its own process group)
claims it and runs `feedback_import_run`: the first pass for duplicates, then chunks of
FEEDBACK_IMPORT_CHUNK_ROWS rows parsed, checked by `feedback_check` and stored by `feedback_store` with
the checkpoint in one transaction each, then the errors file. Its time is the import's own, from the
claim to SUCCEEDED (started_at to finished_at); the upload is reported beside it. The same file is then
imported again with every true label flipped (each stored outcome updated, its change kept in the
history). Peak memory is the high-water mark of resident memory (VmHWM) of the worker's processes.
`--profile` also runs a third import (labels flipped back) in this process under cProfile, storing on
the main thread so the profile sees it, and prints the functions that took the most time.

Targets: at least 20,000 rows/s for the first import, and the worker's peak under 500 MiB. The counts
and the rollups are checked after each import (the benchmark fails when they are wrong).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import copy_seed, report
from bench import predict_common as common
from bench.postgres import postgres
from bench.processes import group_pids, vm_hwm_bytes, vm_rss_bytes

RESULTS = common.ROOT / "bench" / "results" / "feedback_import.json"
MIB = 1024 * 1024
RATE_TARGET = 20_000
PEAK_LIMIT_BYTES = 500 * MIB


def predictions_seed(*, version_id: int, user_id: int, classes: list[str], rows: int, seed: int = 0) -> Any:
    """COPY `rows` predictions over the last 7 days (one request per hour); returns their predicted class
    index, in id order (ids 1..rows)."""
    import numpy as np
    from django.utils import timezone

    from mlops_site import rollups

    rng = np.random.default_rng(seed)
    now = timezone.now()
    seconds_ago = np.sort(rng.uniform(0, 7 * 24 * 3600, rows))[::-1]
    predicted = (rng.random(rows) < 0.37).astype(np.int64)
    confidence = np.round(rng.uniform(0.5, 1.0, rows), 6)
    requests: dict[dt.datetime, list[int]] = {}
    prediction_lines = []
    for i in range(rows):
        created = now - dt.timedelta(seconds=float(seconds_ago[i]))
        hour = rollups.hour_of(created)
        request = requests.setdefault(hour, [len(requests) + 1, 0])
        label, p = classes[predicted[i]], confidence[i]
        first = p if predicted[i] == 0 else round(1 - p, 6)
        probabilities = f'{{"{classes[0]}": {first}, "{classes[1]}": {round(1 - first, 6)}}}'
        prediction_lines.append(
            f'{i + 1}\t{request[0]}\t{request[1]}\t{user_id}\t{version_id}\tapi\t{{}}\t"{label}"\t'
            f"{probabilities}\t[]\t{p}\t{created.isoformat()}\n"
        )
        request[1] += 1
    request_lines = [
        f"{rid}\tbench-{rid}\t{user_id}\tapi\t{version_id}\t\t{n}\t1.0\t{hour.isoformat()}\n"
        for hour, (rid, n) in requests.items()
    ]
    copy_seed.predictions_copy(
        request_lines=request_lines,
        prediction_lines=prediction_lines,
        hours=[(version_id, hour, n) for hour, (_, n) in requests.items()],
    )
    return predicted


def file_write(
    path: Path, *, predicted: Any, classes: list[str], bad_every: int, flip: bool, seed: int = 1
) -> dict:
    """The outcomes file; returns how many rows it has and how many of them must be refused."""
    import csv

    import numpy as np

    rng = np.random.default_rng(seed)
    total = len(predicted)
    order = rng.permutation(total)
    right = rng.random(total) < 0.9
    true_index = np.where(right, predicted, 1 - predicted)
    if flip:
        true_index = 1 - true_index
    refused = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["prediction_id", "true_label", "comment"])
        for position, index in enumerate(order):
            pk, label = int(index) + 1, classes[true_index[index]]
            comment = f"checked {position}" if position % 20 == 0 else ""
            if bad_every and position % bad_every == bad_every - 1:
                kind = (position // bad_every) % 3
                refused += 1
                if kind == 0:
                    writer.writerow([total + 1 + position, label, ""])
                elif kind == 1:
                    writer.writerow([pk, "platypus", ""])
                else:
                    writer.writerow([int(order[0]) + 1, label, ""])
                continue
            writer.writerow([pk, label, comment])
    return {"rows": total, "refused": refused}


def _idle_rss(worker: common.Server, *, timeout: float = 120.0) -> dict[int, int]:
    """Resident memory of the worker's processes once its pool child is up and nothing runs yet."""
    deadline = time.monotonic() + timeout
    while len(group_pids(worker.process.pid)) < 2:
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start:\n{worker.log_tail()}")
        time.sleep(0.5)
    time.sleep(3)
    return {pid: vm_rss_bytes(pid) for pid in group_pids(worker.process.pid)}


def _check(job: Any, *, expected: dict, created: int, updated: int, feedback_total: int) -> list[str]:
    """Wrong counts or rollups, as sentences (none when right)."""
    from django.db.models import Sum

    from feedback.models import Feedback, FeedbackChange, QualityHourly

    stored = expected["rows"] - expected["refused"]
    found = []
    if job.status != job.Status.SUCCEEDED:
        found.append(f"import {job.status}: {job.error_message}")
    if (job.rows_done, job.rows_failed) != (expected["rows"], expected["refused"]):
        found.append(f"rows done/failed {job.rows_done}/{job.rows_failed}, expected {expected}")
    if (job.rows_created, job.rows_updated) != (created, updated):
        found.append(f"created/updated {job.rows_created}/{job.rows_updated}, expected {created}/{updated}")
    if Feedback.objects.count() != feedback_total:
        found.append(f"{Feedback.objects.count()} feedback rows, expected {feedback_total}")
    n = QualityHourly.objects.aggregate(n=Sum("n"))["n"]
    if n != feedback_total:
        found.append(f"the quality rollups count {n}, expected {feedback_total}")
    changes = stored if updated else 0
    if FeedbackChange.objects.count() != changes:
        found.append(f"{FeedbackChange.objects.count()} changes kept, expected {changes}")
    return found


def _profile(path: Path, *, user: Any, top: int = 25) -> str:
    """A third import of `path` in this process under cProfile: the functions that took the most time."""
    from feedback.imports import chunks as import_chunks
    from feedback.imports import services as import_services
    from feedback.models import FeedbackImport

    # Not to the worker: this process runs it.
    enqueue, import_services._enqueue = import_services._enqueue, lambda import_id: None
    try:
        with path.open("rb") as handle:
            job = import_services.feedback_import_start(user=user, file=handle, filename=path.name)
    finally:
        import_services._enqueue = enqueue
    # The store on the main thread too: cProfile sees one thread.
    original = import_chunks.store_thread

    def unthreaded(attempt: Any, *, threaded: bool) -> Any:
        return original(attempt, threaded=False)

    import_chunks.store_thread = unthreaded  # type: ignore[assignment]
    profiler = cProfile.Profile()
    started = time.perf_counter()
    try:
        profiler.enable()
        import_services.feedback_import_run(import_id=job.pk)
        profiler.disable()
    finally:
        import_chunks.store_thread = original  # type: ignore[assignment]
    seconds = time.perf_counter() - started
    job = FeedbackImport.objects.get(pk=job.pk)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return f"in-process import under cProfile: {seconds:.1f} s, timings {job.timings}\n{out.getvalue()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--bad-every", type=int, default=100, help="every N-th row is refused (0: none)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds each import may take")
    parser.add_argument("--profile", action="store_true", help="also profile an import in this process")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 1000 <= args.rows <= 5_000_000 or not 10 <= args.timeout <= 3600 or args.bad_every < 0:
        parser.error("--rows must be 1,000..5,000,000, --timeout 10..3600 and --bad-every at least 0")
    common.sigterm_unwinds()
    started = time.monotonic()

    with (
        postgres("feedback-import") as database_note,
        common.temp_dir("bench-feedback-import-") as tmp,
        contextlib.ExitStack() as servers,
    ):
        data_dir = Path(tmp)
        env = common.django_configure(data_dir)
        database = common.database_label()
        if database != "postgresql":
            raise SystemExit(f"this benchmark measures PostgreSQL, not {database}")
        from django.contrib.auth import get_user_model

        from feedback.imports import services as import_services
        from feedback.models import FeedbackImport

        user = get_user_model().objects.create_user(f"bench-feedback-{os.getpid()}", is_staff=True)
        common.say(f"training the forest through the training service ({database_note})")
        model = common.forest_train_and_promote(data_dir=data_dir, user=user)
        from models_registry.models import ModelVersion

        version = ModelVersion.objects.get(registered_model__name=model.name, version=model.version)
        classes = [str(c) for c in model.classes]
        seeding_started = time.perf_counter()
        predicted = predictions_seed(version_id=version.pk, user_id=user.pk, classes=classes, rows=args.rows)
        common.say(
            f"{args.rows:,} predictions stored with COPY in {time.perf_counter() - seeding_started:.1f} s"
        )

        worker_env = common.celery_broker_ready(data_dir, env)
        worker_command = common.celery_worker_command(
            f"bench-feedback-{os.getpid()}", "--without-heartbeat", "--without-gossip", "--without-mingle"
        )
        worker = servers.enter_context(common.server_running("worker", worker_command, worker_env, data_dir))
        idle = _idle_rss(worker)
        common.say(f"worker idle: {sorted(round(v / MIB) for v in idle.values())} MiB resident")

        runs: dict[str, dict[str, Any]] = {}
        feedback_total = 0
        for name, flip in (("first", False), ("again_flipped", True)):
            path = data_dir / f"outcomes-{name}.csv"
            expected = file_write(
                path, predicted=predicted, classes=classes, bad_every=args.bad_every, flip=flip
            )
            common.say(
                f"{name}: {expected['rows']:,} rows ({path.stat().st_size / MIB:.1f} MiB), "
                f"{expected['refused']:,} to refuse"
            )
            upload_started = time.perf_counter()
            with path.open("rb") as handle:
                job = import_services.feedback_import_start(user=user, file=handle, filename=path.name)
            upload_seconds = time.perf_counter() - upload_started
            job = common.job_wait(
                FeedbackImport,
                job.pk,
                deadline=time.monotonic() + args.timeout,
                worker=worker,
                label="import",
                name="feedback import",
                poll_seconds=0.5,
            )
            stored = expected["rows"] - expected["refused"]
            first = name == "first"
            feedback_total = stored if first else feedback_total
            wrong = _check(
                job,
                expected=expected,
                created=stored if first else 0,
                updated=0 if first else stored,
                feedback_total=feedback_total,
            )
            if wrong:
                raise SystemExit(f"{name}: wrong results: {'; '.join(wrong)}\n{worker.log_tail()}")
            seconds = (job.finished_at - job.started_at).total_seconds()
            runs[name] = {
                "rows": job.rows_done,
                "rows_failed": job.rows_failed,
                "rows_created": job.rows_created,
                "rows_updated": job.rows_updated,
                "chunk_rows": job.chunk_rows,
                "seconds": round(seconds, 3),
                "rows_per_second": round(job.rows_done / seconds, 1),
                "upload_seconds": round(upload_seconds, 3),
                "timings": job.timings,
            }
            common.say(f"{name}: {seconds:.1f} s, {job.rows_done / seconds:,.0f} rows/s; steps {job.timings}")
        peaks = {pid: vm_hwm_bytes(pid) for pid in group_pids(worker.process.pid)}
        profile = _profile(data_dir / "outcomes-first.csv", user=user) if args.profile else ""

    peak = max(peaks.values())
    rate = runs["first"]["rows_per_second"]
    summary = {
        "rows_per_second_target": f">= {RATE_TARGET:,} (first import)",
        "rows_per_second_target_met": rate >= RATE_TARGET,
        "peak_memory_target": "worker peak RSS < 500 MiB",
        "peak_memory_target_met": peak < PEAK_LIMIT_BYTES,
        "worker_peak_rss_mib": round(peak / MIB, 1),
        "worker_processes_peak_rss_mib": sorted(round(v / MIB, 1) for v in peaks.values()),
        "worker_processes_idle_rss_mib": sorted(round(v / MIB, 1) for v in idle.values()),
    }
    print()
    print(f"{'':<36} {'seconds':>9} {'rows/s':>11}")
    for name, run in runs.items():
        print(f"{'import ' + name:<36} {run['seconds']:>9.1f} {run['rows_per_second']:>11,.0f}")
    print(
        f"\nfirst import: {rate:,.0f} rows/s (target >= {RATE_TARGET:,}: "
        f"{'met' if summary['rows_per_second_target_met'] else 'MISSED'}); worker peak "
        f"{summary['worker_peak_rss_mib']:.0f} MiB (target < 500: "
        f"{'met' if summary['peak_memory_target_met'] else 'MISSED'})"
    )
    if profile:
        print("\n" + profile)
    report.results_write(
        args.output,
        benchmark="feedback_import",
        environment={
            "database": f"{database} ({database_note})",
            "worker": "celery worker --concurrency 1 (prefork), filesystem broker",
            "load_average_after": report.load_average(),
        },
        started=started,
        input={"rows": args.rows, "bad_every": args.bad_every},
        runs=runs,
        summary=summary,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
