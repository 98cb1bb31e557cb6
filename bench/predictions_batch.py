"""Batch prediction benchmark: a 1,000,000-row CSV through a real batch job against plain pandas + sklearn.

    python bench/predictions_batch.py [--rows 1000000] [--timeout 900] [--workers 1,2] [--database postgres]
        [--no-baseline] [--result-file-only]

The file: breast-cancer-like rows made with numpy from scikit-learn's bundled data (per class, a
multivariate normal with that class's feature means and covariances, in the dataset's class proportions,
clipped to each feature's training range and rounded to 4 decimals); nothing is downloaded.

Ours: the real path. `batch_prediction_start` checks and stores the upload and queues the job; real
Celery workers (`celery worker --concurrency 1` each, prefork, filesystem broker, each in its own process
group) run it: the worker that claims the job cuts the file into chunks, each chunk a leased job of its own
that any worker takes (validate, predict with onnxruntime, store every row as a Prediction, write its
parts); the worker storing the last chunk writes the result file (input columns + prediction,
probabilities, prediction id, row, warnings) and the errors file. Its time is the job's own, from the claim
to SUCCEEDED (started_at to finished_at); the upload is reported beside it. Peak memory is the high-water
mark of resident memory (VmHWM) of the busiest worker process.

`--workers 1,2` runs the same file once per count of worker processes, each run a job of its own on an
emptied predictions table (the previous run's rows deleted, vacuumed on PostgreSQL), and reports the
rows/s of each and the ratio of the last to the first (target: 2 workers at least 1.6 times the rows/s
of 1). `--database postgres` runs on PostgreSQL (DATABASE_URL, or a throwaway server, see
bench/postgres.py); the default is the embedded SQLite. `--result-file-only` submits the jobs with
store_predictions=False: the result file is their only output, no Prediction row is stored.

The baseline, in a process of its own (so its peak memory is its own too): `pd.read_csv`, the same
scikit-learn pipeline's `predict`, a `prediction` column added and `to_csv`, timed from the read to the
written file. Targets: our rows/s at least the baseline's, and the worker's peak under 1 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import predict_common as common
from bench import report
from bench.postgres import postgres
from bench.processes import group_cpu_seconds, group_pids, vm_hwm_bytes

RESULTS = common.ROOT / "bench" / "results" / "predictions_batch.json"
MIB = 1024 * 1024
PEAK_LIMIT_BYTES = 1024 * MIB
#: Rows/s of 2 worker processes over 1 that the scale-out target asks for.
SCALE_OUT_TARGET = 1.6


def csv_generate(path: Path, *, rows: int, feature_names: list[str], seed: int = 0) -> None:
    """Breast-cancer-like rows, written 100,000 at a time so the generator's memory stays small."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    frame = common.breast_cancer_frame()
    features = frame[feature_names].to_numpy(dtype="float64")
    labels = frame[common.LABEL].to_numpy()
    low, high = features.min(axis=0), features.max(axis=0)
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    shares = [float((labels == c).mean()) for c in classes]
    moments = [
        (features[labels == c].mean(axis=0), np.cov(features[labels == c], rowvar=False)) for c in classes
    ]
    with pacsv.CSVWriter(str(path), pa.schema([(n, pa.float64()) for n in feature_names])) as writer:
        done = 0
        while done < rows:
            n = min(100_000, rows - done)
            which = rng.choice(len(classes), size=n, p=shares)
            block = np.empty((n, len(feature_names)))
            for index, (mean, cov) in enumerate(moments):
                mask = which == index
                block[mask] = rng.multivariate_normal(mean, cov, size=int(mask.sum()), method="cholesky")
            block = np.round(np.clip(block, low, high), 4)
            writer.write_table(pa.table({n_: block[:, i] for i, n_ in enumerate(feature_names)}))
            done += n


def baseline_run(
    *, source: Path, output: Path, skops_path: Path, skops_sha256: str, features: list[str]
) -> dict:
    """What a data scientist would type: read, predict, add the column, write. Runs in its own process."""
    import pandas as pd

    from ml import artifacts

    pipeline = artifacts.skops_load(skops_path.read_bytes(), sha256=skops_sha256)
    started = time.perf_counter()
    frame = pd.read_csv(source)
    frame["prediction"] = pipeline.predict(frame[features])
    frame.to_csv(output, index=False)
    seconds = time.perf_counter() - started
    return {
        "rows": len(frame),
        "seconds": round(seconds, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _rows_cleared() -> None:
    """Delete the previous run's prediction rows and let the database settle, so each run starts from the
    same empty table: the second run of `--workers 1,2` otherwise met a table and indexes a million rows
    larger, with PostgreSQL's autovacuum working through them meanwhile."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("TRUNCATE predictions_prediction CASCADE")
            cursor.execute("VACUUM ANALYZE predictions_prediction")
            with contextlib.suppress(Exception):  # CHECKPOINT needs a privileged role
                cursor.execute("CHECKPOINT")
        else:
            cursor.execute("DELETE FROM predictions_prediction")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _baseline_in_subprocess(spec: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--baseline-spec", json.dumps(spec)],
        cwd=common.ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BASELINE_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"the baseline failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return json.loads(line.removeprefix("BASELINE_JSON "))


def _predictions_agree(ours_path: Path, baseline_path: Path) -> dict[str, Any]:
    """Same rows in the same order (row numbers 1..n), and how often the two predictions are equal."""
    import numpy as np
    import pandas as pd

    ours = pd.read_csv(ours_path, usecols=["prediction", "row"])
    theirs = pd.read_csv(baseline_path, usecols=["prediction"])
    if len(ours) != len(theirs) or not (ours["row"].to_numpy() == np.arange(1, len(ours) + 1)).all():
        return {"rows_match": False, "agreement": None}
    agreement = float((ours["prediction"].to_numpy() == theirs["prediction"].to_numpy()).mean())
    return {"rows_match": True, "agreement": round(agreement, 6)}


def _worker_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or any(not 1 <= n <= 16 for n in counts):
        raise argparse.ArgumentTypeError("give worker counts from 1 to 16, comma-separated: 1,2")
    return counts


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _job_run(
    *,
    workers: int,
    data_dir: Path,
    env: dict[str, str],
    model: Any,
    source: Path,
    user: Any,
    timeout: int,
    store_predictions: bool,
) -> dict[str, Any]:
    """Submit the file as a batch job, run it on `workers` worker processes, and measure it."""
    from predictions.batch import services as batch_services
    from predictions.models import BatchPredictionJob, Prediction

    with contextlib.ExitStack() as servers:
        running = []
        for index in range(workers):
            command = common.celery_worker_command(
                f"bench-{os.getpid()}-{workers}-{index}",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            )
            running.append(
                servers.enter_context(common.server_running(f"worker{index}", command, env, data_dir))
            )
        common.say(
            f"ours, {workers} worker process(es): batch_prediction_start (checks, stores, queues the job)"
        )
        upload_started = time.perf_counter()
        with source.open("rb") as handle:
            job = batch_services.batch_prediction_start(
                registered_model_name=model.name,
                input_file=handle,
                filename=source.name,
                requested_by=user,
                store_predictions=store_predictions,
            )
        upload_seconds = time.perf_counter() - upload_started
        busy_before, total_before = _cpu_ticks()
        cpu_before = sum(group_cpu_seconds(w.process.pid) for w in running)
        job = common.job_wait(
            BatchPredictionJob,
            job.pk,
            deadline=time.monotonic() + timeout,
            worker=running[0],
            label=f"ours ({workers})",
            name="batch job",
            poll_seconds=0.5,
        )
        if job.status != job.Status.SUCCEEDED:
            raise RuntimeError(
                f"batch job {job.pk} {job.status}: {job.error_message}\n{running[0].log_tail()}"
            )
        worker_cpu = sum(group_cpu_seconds(w.process.pid) for w in running) - cpu_before
        busy_after, total_after = _cpu_ticks()
        peaks = {pid: vm_hwm_bytes(pid) for w in running for pid in group_pids(w.process.pid)}
    job_seconds = (job.finished_at - job.started_at).total_seconds()
    stored = Prediction.objects.filter(batch_job=job).count()
    by_job = job.chunks.filter(claimed_by_job=True).count()
    return {
        "job": job,
        "workers": workers,
        "rows": job.rows_done,
        "rows_failed": job.rows_failed,
        "predictions_stored": stored,
        "chunk_rows": job.chunk_rows,
        "chunks": job.chunks_total,
        "chunks_stored_by_the_jobs_own_attempt": by_job,
        "seconds": round(job_seconds, 3),
        "rows_per_second": round(job.rows_done / job_seconds, 1),
        "upload_seconds": round(upload_seconds, 3),
        "timings": job.timings,
        # CPU the workers used while the job ran (the database server's is not in it), and how busy the
        # machine's CPUs were meanwhile, every process counted: near 100 % the run measured the machine.
        "workers_cpu_seconds": round(worker_cpu, 1),
        "machine_cpu_busy_percent": round(
            100 * (busy_after - busy_before) / max(1, total_after - total_before), 1
        ),
        "worker_peak_rss_mib": round(max(peaks.values()) / MIB, 1),
        "worker_processes_peak_rss_mib": sorted(round(v / MIB, 1) for v in peaks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=int, default=900, help="seconds the job and the baseline may take")
    parser.add_argument(
        "--workers", type=_worker_counts, default=[1], help="worker processes per run, comma-separated (1,2)"
    )
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--no-baseline", action="store_true", help="skip the pandas + scikit-learn baseline")
    parser.add_argument(
        "--result-file-only",
        action="store_true",
        help="submit the jobs with store_predictions=False: no Prediction rows, the result file only",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--baseline-spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_spec:
        spec = json.loads(args.baseline_spec)
        result = baseline_run(
            source=Path(spec["source"]),
            output=Path(spec["output"]),
            skops_path=Path(spec["skops_path"]),
            skops_sha256=spec["skops_sha256"],
            features=spec["features"],
        )
        print("BASELINE_JSON " + json.dumps(result), flush=True)
        return 0
    if not 1 <= args.rows <= 20_000_000 or not 10 <= args.timeout <= 3600:
        parser.error("--rows must be 1..20,000,000 and --timeout 10..3600")
    common.sigterm_unwinds()
    started = time.monotonic()

    database_context = postgres("batch") if args.database == "postgres" else contextlib.nullcontext("")
    with database_context, common.temp_dir("bench-batch-") as tmp:
        data_dir = Path(tmp)
        env = common.django_configure(data_dir)
        database = common.database_label()
        if args.database == "postgres" and database != "postgresql":
            raise SystemExit(f"--database postgres, but the site runs on {database}")
        from django.contrib.auth import get_user_model

        from mlops_site import storage

        user = get_user_model().objects.create_user(f"bench-batch-{os.getpid()}", is_staff=True)
        common.say(f"training the forest through the training service ({database})")
        model = common.forest_train_and_promote(data_dir=data_dir, user=user)

        source = data_dir / "batch.csv"
        common.say(f"writing {args.rows:,} breast-cancer-like rows")
        generate_started = time.perf_counter()
        csv_generate(source, rows=args.rows, feature_names=model.feature_names)
        size = source.stat().st_size
        common.say(f"{size / MIB:.0f} MiB in {time.perf_counter() - generate_started:.1f} s")

        baseline: dict[str, Any] | None = None
        baseline_output = data_dir / "baseline.csv"
        if not args.no_baseline:
            common.say("baseline: pandas read_csv + scikit-learn predict + to_csv, in its own process")
            baseline = _baseline_in_subprocess(
                {
                    "source": str(source),
                    "output": str(baseline_output),
                    "skops_path": str(model.skops_path),
                    "skops_sha256": model.skops_sha256,
                    "features": model.feature_names,
                },
                timeout=args.timeout,
            )
            baseline["rows_per_second"] = round(baseline["rows"] / baseline["seconds"], 1)
            common.say(f"baseline: {baseline['seconds']:.1f} s, {baseline['rows_per_second']:,.0f} rows/s")

        # Training ran eagerly in this process; the jobs must go to the workers through the broker.
        worker_env = common.celery_broker_ready(data_dir, env)
        runs = []
        for number, workers in enumerate(args.workers):
            if number:
                _rows_cleared()
            run = _job_run(
                workers=workers,
                data_dir=data_dir,
                env=worker_env,
                model=model,
                source=source,
                user=user,
                timeout=args.timeout,
                store_predictions=not args.result_file_only,
            )
            common.say(f"ours ({workers}): {run['seconds']:.1f} s, {run['rows_per_second']:,.0f} rows/s")
            runs.append(run)
        agreement: dict[str, Any] = {"rows_match": None, "agreement": None}
        if baseline is not None:
            ours_output = data_dir / "ours.csv"
            with storage.open_read(runs[-1]["job"].result_key) as handle, ours_output.open("wb") as out:
                while block := handle.read(1024 * 1024):
                    out.write(block)
            agreement = _predictions_agree(ours_output, baseline_output)

    for run in runs:
        del run["job"]
    ours = runs[0]
    peak = max(run["worker_peak_rss_mib"] for run in runs) * MIB
    summary: dict[str, Any] = {
        "peak_memory_target": "worker peak RSS < 1 GiB",
        "peak_memory_target_met": peak < PEAK_LIMIT_BYTES,
        **agreement,
    }
    if baseline is not None:
        summary.update(
            {
                "rows_per_second_ratio": round(ours["rows_per_second"] / baseline["rows_per_second"], 3),
                "rows_per_second_target": "ours (first worker count) >= baseline",
                "rows_per_second_target_met": ours["rows_per_second"] >= baseline["rows_per_second"],
            }
        )
    if len(runs) > 1:
        scale = round(runs[-1]["rows_per_second"] / runs[0]["rows_per_second"], 3)
        summary.update(
            {
                "scale_out_ratio": scale,
                "scale_out": f"rows/s of {runs[-1]['workers']} worker processes / {runs[0]['workers']}",
                "scale_out_target": f">= {SCALE_OUT_TARGET} for 2 workers over 1",
                "scale_out_target_met": scale >= SCALE_OUT_TARGET,
            }
        )
    print()
    print(f"{'':<34} {'seconds':>9} {'rows/s':>11} {'peak RSS MiB':>13}")
    if baseline is not None:
        print(
            f"{'pandas + scikit-learn (baseline)':<34} {baseline['seconds']:>9.1f} "
            f"{baseline['rows_per_second']:>11,.0f} {baseline['peak_rss_mib']:>13.0f}"
        )
    for run in runs:
        label = f"batch job ({run['workers']} worker{'s' if run['workers'] > 1 else ''})"
        print(
            f"{label:<34} {run['seconds']:>9.1f} {run['rows_per_second']:>11,.0f} "
            f"{run['worker_peak_rss_mib']:>13.0f}"
        )
    for run in runs:
        print(
            f"\n{run['workers']} worker(s): upload {run['upload_seconds']:.1f} s; workers' CPU "
            f"{run['workers_cpu_seconds']:.0f} s; machine CPUs {run['machine_cpu_busy_percent']:.0f} % busy; "
            f"job steps {run['timings']}"
        )
    if baseline is not None:
        print(
            f"rows/s ours / baseline: {summary['rows_per_second_ratio']:.2f} (target >= 1: "
            f"{'met' if summary['rows_per_second_target_met'] else 'MISSED'})"
        )
    if len(runs) > 1:
        print(
            f"rows/s {summary['scale_out']}: {summary['scale_out_ratio']:.2f} (target "
            f"{summary['scale_out_target']}: {'met' if summary['scale_out_target_met'] else 'MISSED'})"
        )
    print(
        f"worker peak {peak / MIB:.0f} MiB (target < 1024: "
        f"{'met' if summary['peak_memory_target_met'] else 'MISSED'}); predictions stored: "
        f"{', '.join(format(r['predictions_stored'], ',') for r in runs)}; same rows in order: "
        f"{agreement['rows_match']}; same prediction as scikit-learn: {agreement['agreement']}"
    )
    report.results_write(
        args.output,
        benchmark="predictions_batch",
        environment={
            "database": database,
            "worker": "celery worker --concurrency 1 (prefork) per worker process, filesystem broker",
            "load_average_after": report.load_average(),
        },
        started=started,
        input={"rows": args.rows, "bytes": size, "features": len(model.feature_names)},
        store_predictions=not args.result_file_only,
        baseline=baseline,
        ours=ours,
        runs=runs,
        summary=summary,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
