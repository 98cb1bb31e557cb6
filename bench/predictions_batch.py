"""Batch prediction benchmark: a 1,000,000-row CSV through a real batch job against plain pandas + sklearn.

    python bench/predictions_batch.py [--rows 1000000] [--timeout 900]

The file: breast-cancer-like rows made with numpy from scikit-learn's bundled data (per class, a
multivariate normal with that class's feature means and covariances, in the dataset's class proportions,
clipped to each feature's training range and rounded to 4 decimals); nothing is downloaded.

Ours: the real path. `batch_prediction_start` checks and stores the upload and queues the job; a real
Celery worker (`celery worker --concurrency 1`, prefork, filesystem broker, in its own process group)
claims it and runs `batch_prediction_run`: read in chunks, validate, predict with onnxruntime, store every
row as a Prediction, write the result file (input columns + prediction, probabilities, prediction id,
row, warnings) and the errors file. Its time is the job's own, from the claim to SUCCEEDED
(started_at to finished_at); the upload is reported beside it. Peak memory is the high-water mark of
resident memory (VmHWM) of the worker process that ran the task.

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
from bench.processes import group_pids, vm_hwm_bytes

RESULTS = common.ROOT / "bench" / "results" / "predictions_batch.json"
MIB = 1024 * 1024
PEAK_LIMIT_BYTES = 1024 * MIB


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=int, default=900, help="seconds the job and the baseline may take")
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

    with common.temp_dir("bench-batch-") as tmp, contextlib.ExitStack() as servers:
        data_dir = Path(tmp)
        env = common.django_configure(data_dir)
        database = common.database_label()
        from django.contrib.auth import get_user_model

        from mlops_site import storage
        from predictions.batch import services as batch_services
        from predictions.models import BatchPredictionJob, Prediction

        user = get_user_model().objects.create_user(f"bench-batch-{os.getpid()}", is_staff=True)
        common.say(f"training the forest through the training service ({database})")
        model = common.forest_train_and_promote(data_dir=data_dir, user=user)

        source = data_dir / "batch.csv"
        common.say(f"writing {args.rows:,} breast-cancer-like rows")
        generate_started = time.perf_counter()
        csv_generate(source, rows=args.rows, feature_names=model.feature_names)
        size = source.stat().st_size
        common.say(f"{size / MIB:.0f} MiB in {time.perf_counter() - generate_started:.1f} s")

        common.say("baseline: pandas read_csv + scikit-learn predict + to_csv, in its own process")
        baseline_output = data_dir / "baseline.csv"
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

        # Training ran eagerly in this process; the job must go to the worker through the broker.
        worker_env = common.celery_broker_ready(data_dir, env)
        worker_command = common.celery_worker_command(
            f"bench-{os.getpid()}", "--without-heartbeat", "--without-gossip", "--without-mingle"
        )
        worker = servers.enter_context(common.server_running("worker", worker_command, worker_env, data_dir))

        common.say("ours: batch_prediction_start (checks and stores the upload, queues the job)")
        upload_started = time.perf_counter()
        with source.open("rb") as handle:
            job = batch_services.batch_prediction_start(
                registered_model_name=model.name, input_file=handle, filename=source.name, requested_by=user
            )
        upload_seconds = time.perf_counter() - upload_started
        job = common.job_wait(
            BatchPredictionJob,
            job.pk,
            deadline=time.monotonic() + args.timeout,
            worker=worker,
            label="ours",
            name="batch job",
            poll_seconds=1.0,
        )
        if job.status != job.Status.SUCCEEDED:
            raise RuntimeError(f"batch job {job.pk} {job.status}: {job.error_message}\n{worker.log_tail()}")
        peaks = {pid: vm_hwm_bytes(pid) for pid in group_pids(worker.process.pid)}
        job_seconds = (job.finished_at - job.started_at).total_seconds()
        stored = Prediction.objects.filter(batch_job=job).count()
        ours_output = data_dir / "ours.csv"
        with storage.open_read(job.result_key) as handle, ours_output.open("wb") as out:
            while block := handle.read(1024 * 1024):
                out.write(block)
        agreement = _predictions_agree(ours_output, baseline_output)

    peak = max(peaks.values())
    ours = {
        "rows": job.rows_done,
        "rows_failed": job.rows_failed,
        "predictions_stored": stored,
        "chunk_rows": job.chunk_rows,
        "seconds": round(job_seconds, 3),
        "rows_per_second": round(job.rows_done / job_seconds, 1),
        "upload_seconds": round(upload_seconds, 3),
        "timings": job.timings,
        "worker_peak_rss_mib": round(peak / MIB, 1),
        "worker_processes_peak_rss_mib": sorted(round(v / MIB, 1) for v in peaks.values()),
    }
    summary = {
        "rows_per_second_ratio": round(ours["rows_per_second"] / baseline["rows_per_second"], 3),
        "rows_per_second_target": "ours >= baseline",
        "rows_per_second_target_met": ours["rows_per_second"] >= baseline["rows_per_second"],
        "peak_memory_target": "worker peak RSS < 1 GiB",
        "peak_memory_target_met": peak < PEAK_LIMIT_BYTES,
        **agreement,
    }
    print()
    print(f"{'':<34} {'seconds':>9} {'rows/s':>11} {'peak RSS MiB':>13}")
    print(
        f"{'pandas + scikit-learn (baseline)':<34} {baseline['seconds']:>9.1f} "
        f"{baseline['rows_per_second']:>11,.0f} {baseline['peak_rss_mib']:>13.0f}"
    )
    print(
        f"{'batch job (worker)':<34} {ours['seconds']:>9.1f} {ours['rows_per_second']:>11,.0f} "
        f"{ours['worker_peak_rss_mib']:>13.0f}"
    )
    print(f"\nupload check + store before the job: {ours['upload_seconds']:.1f} s; job steps: {job.timings}")
    print(
        f"rows/s ours / baseline: {summary['rows_per_second_ratio']:.2f} (target >= 1: "
        f"{'met' if summary['rows_per_second_target_met'] else 'MISSED'}); worker peak "
        f"{ours['worker_peak_rss_mib']:.0f} MiB (target < 1024: "
        f"{'met' if summary['peak_memory_target_met'] else 'MISSED'})"
    )
    print(
        f"predictions stored: {stored:,}; same rows in order: {agreement['rows_match']}; "
        f"same prediction as scikit-learn: {agreement['agreement']}"
    )
    report.results_write(
        args.output,
        benchmark="predictions_batch",
        environment={
            "database": database,
            "worker": "celery worker --concurrency 1 (prefork), filesystem broker",
            "load_average_after": report.load_average(),
        },
        started=started,
        input={"rows": args.rows, "bytes": size, "features": len(model.feature_names)},
        baseline=baseline,
        ours=ours,
        summary=summary,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
