"""Drift job benchmark: the hourly report from per-feature rollups against scipy on the raw input rows.

    python bench/drift_job.py [--rows 1000000] [--hours 24] [--repeats 5]

Embedded site (SQLite in a temporary folder). A logistic regression on 10 numeric and 2 categorical
features is trained with ml.train (its reference profile made there), registered as production, and
`--rows` live rows are drawn over the last `--hours` hours, half the features shifted. Every row goes
through the real `prediction_features_add` in batches of 1,000 (what a batch chunk or a busy API adds per
transaction), and, for the plain approach, its inputs are stored as JSON rows the way
predictions.Prediction.inputs keeps them.

1. Binning cost: `prediction_features_add` per row at batch sizes 1, 100 and 1,000 (in a transaction that
   is rolled back), and ml.drift_bins.Binner.bin alone per row and feature.
2. `drift_reports_compute` (median of `--repeats`), against the plain approach in the same run: read the
   window's raw input rows from the database, parse them, and run scipy's tests (KS / chi-square p-values
   or normalised Wasserstein / Jensen-Shannon, chosen the same way) against the raw training rows.

Both must flag the same features. Target: the drift job under 10 s (the issue's), ours well under one.
Results: a table on stdout and bench/results/drift_job.json. Exits 1 when the two disagree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report
from bench.embedded import django_configure

RESULTS = report.ROOT / "bench" / "results" / "drift_job.json"
NUMERIC = [f"n{i}" for i in range(10)]
CATEGORICAL = ["c0", "c1"]
SHIFTED = {"n0", "n1", "n2", "n3", "n4", "c0"}
CATEGORIES = np.array(["a", "b", "c", "d", "e"], dtype=object)
JOB_TARGET_SECONDS = 10.0
BATCH = 1000


def frame_draw(n: int, *, rng: np.random.Generator, shifted: bool) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for name in NUMERIC:
        shift = 0.5 if shifted and name in SHIFTED else 0.0
        columns[name] = np.round(rng.normal(shift, 1.0, n), 4)
    for name in CATEGORICAL:
        p = [0.1, 0.2, 0.2, 0.2, 0.3] if shifted and name in SHIFTED else [0.3, 0.2, 0.2, 0.2, 0.1]
        columns[name] = rng.choice(CATEGORIES, n, p=p)
    return pd.DataFrame(columns)


def version_train(rng: np.random.Generator) -> tuple[Any, pd.DataFrame, Any]:
    from ml import artifacts
    from ml.train import model_train
    from mlops_site import storage
    from models_registry.models import ModelVersion, RegisteredModel

    frame = frame_draw(20_000, rng=rng, shifted=False)
    score = frame[NUMERIC[:3]].sum(axis=1) + (frame["c1"] == "a") * 0.5
    frame["label"] = np.where(score + rng.normal(0, 1, len(frame)) > 0, "yes", "no")
    schema = [
        *({"name": n, "kind": "numeric"} for n in NUMERIC),
        *({"name": c, "kind": "categorical"} for c in CATEGORICAL),
        {"name": "label", "kind": "categorical"},
    ]
    result = model_train(
        frame=frame, schema_columns=schema, target_column="label", algorithm="logistic_regression", seed=0
    )
    data = artifacts.skops_dump(result.pipeline)
    sha = artifacts.sha256_hex(data)
    key = storage.put_bytes(f"models/{sha}.skops", data)
    registered = RegisteredModel.objects.create(
        name="bench-drift", task="classification", target_column="label"
    )
    version = ModelVersion.objects.create(
        registered_model=registered,
        version=1,
        task="classification",
        algorithm="logistic_regression",
        feature_schema=result.feature_schema,
        target_column="label",
        classes=result.classes,
        metrics=result.metrics,
        skops_key=key,
        skops_sha256=sha,
        stage="production",
        reference_profile=json.loads(json.dumps(result.reference_profile)),
    )
    training_rows = frame.loc[frame.index.difference(result.X_holdout.index)]
    return version, training_rows, result.pipeline


def raw_table_create() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_inputs (id INTEGER PRIMARY KEY, created_at TEXT, inputs TEXT)")
        cursor.execute("CREATE INDEX bench_inputs_created ON bench_inputs (created_at)")


def traffic_seed(
    version: Any, pipeline: Any, *, rows: int, hours: int, now: dt.datetime, rng: np.random.Generator
):
    """Every batch through prediction_features_add, and its raw inputs as JSON rows."""
    from django.db import connection, transaction

    from ml.pipeline import columns_from_frame, frame_prepare

    features = [{"name": c["name"], "kind": c["kind"]} for c in version.feature_schema]
    end = now.replace(minute=0, second=0, microsecond=0)
    rollup_seconds = 0.0
    per_hour = np.array_split(np.arange(rows), hours)
    for h, positions in enumerate(per_hour):
        hour = end - dt.timedelta(hours=hours - h)
        frame = frame_prepare(frame_draw(len(positions), rng=rng, shifted=True), features)
        proba = pipeline.predict_proba(frame)
        labels = pipeline.classes_[proba.argmax(axis=1)].tolist()
        confidences = proba.max(axis=1).tolist()
        columns = columns_from_frame(frame, version.feature_schema)
        records = frame.to_dict("records")
        stamp = hour.isoformat()
        for start in range(0, len(positions), BATCH):
            part = slice(start, start + BATCH)
            with transaction.atomic():
                rollup_seconds += _rollups_add(version, columns, labels, confidences, part=part, hour=hour)
                with connection.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO bench_inputs (created_at, inputs) VALUES (%s, %s)",
                        [(stamp, json.dumps(r)) for r in records[part]],
                    )
    return rollup_seconds


def _rollups_add(
    version: Any,
    columns: dict[str, np.ndarray],
    labels: list[Any],
    confidences: list[float],
    *,
    part: slice,
    hour: dt.datetime,
) -> float:
    """Seconds of one prediction_features_add call for the rows in `part`."""
    from monitoring import drift_rollups

    began = time.perf_counter()
    drift_rollups.prediction_features_add(
        model_version=version,
        columns={name: values[part] for name, values in columns.items()},
        predictions=labels[part],
        confidences=confidences[part],
        hour=hour,
    )
    return time.perf_counter() - began


def binning_cost(version: Any, pipeline: Any, rng: np.random.Generator) -> dict[str, Any]:
    from django.db import transaction

    from ml import drift_bins
    from ml.pipeline import columns_from_frame, frame_prepare

    features = [{"name": c["name"], "kind": c["kind"]} for c in version.feature_schema]
    frame = frame_prepare(frame_draw(1000, rng=rng, shifted=False), features)
    columns = columns_from_frame(frame, version.feature_schema)
    proba = pipeline.predict_proba(frame)
    labels = pipeline.classes_[proba.argmax(axis=1)].tolist()
    confidences = proba.max(axis=1).tolist()
    hour = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    found: dict[str, Any] = {}
    for size, calls in ((1, 300), (100, 100), (1000, 30)):
        timings = []
        for call in range(calls):
            part = slice((call * size) % 1000, (call * size) % 1000 + size)
            with transaction.atomic():
                timings.append(_rollups_add(version, columns, labels, confidences, part=part, hour=hour))
                transaction.set_rollback(True)
        found[f"batch_{size}_us_per_row"] = round(statistics.median(timings) / size * 1e6, 2)
    binners = [drift_bins.Binner.of(spec) for spec in version.reference_profile["features"]]
    big = frame_prepare(frame_draw(100_000, rng=rng, shifted=False), features)
    big_columns = columns_from_frame(big, version.feature_schema)
    began = time.perf_counter()
    for binner, spec in zip(binners, version.reference_profile["features"], strict=True):
        binner.bin(big_columns[spec["name"]])
    found["binning_only_us_per_row_and_feature"] = round(
        (time.perf_counter() - began) / (100_000 * len(binners)) * 1e6, 3
    )
    return found


def plain_job(training_rows: pd.DataFrame, *, start: dt.datetime, end: dt.datetime) -> dict[str, bool]:
    """Read the window's raw inputs and test each feature with scipy on raw values."""
    from django.db import connection
    from scipy import stats
    from scipy.spatial import distance

    from ml import drift

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT inputs FROM bench_inputs WHERE created_at >= %s AND created_at < %s",
            [start.isoformat(), end.isoformat()],
        )
        current = pd.DataFrame([json.loads(row[0]) for row in cursor.fetchall()])
    verdicts = {}
    for name in NUMERIC + CATEGORICAL:
        ref, cur = training_rows[name].dropna(), current[name].dropna()
        small = min(len(ref), len(cur)) <= drift.SMALL_SAMPLE_MAX
        if name in NUMERIC:
            if small:
                verdicts[name] = stats.ks_2samp(ref, cur).pvalue < drift.P_VALUE_THRESHOLD
            else:
                score = stats.wasserstein_distance(ref, cur) / max(np.std(ref), drift.STD_FLOOR)
                verdicts[name] = score >= drift.DISTANCE_THRESHOLD
        else:
            keys = sorted(set(ref) | set(cur))
            r = ref.value_counts().reindex(keys, fill_value=0).to_numpy()
            c = cur.value_counts().reindex(keys, fill_value=0).to_numpy()
            if small:
                verdicts[name] = stats.chi2_contingency(np.vstack([r, c])).pvalue < drift.P_VALUE_THRESHOLD
            else:
                verdicts[name] = distance.jensenshannon(r / r.sum(), c / c.sum()) >= drift.DISTANCE_THRESHOLD
    return {name: bool(v) for name, v in verdicts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    started = time.monotonic()
    django_configure(Path(tempfile.mkdtemp(prefix="bench-drift-")))

    from django.db import connection
    from django.utils import timezone

    from monitoring import drift_services
    from monitoring.models import DriftReport, FeatureHourly

    rng = np.random.default_rng(0)
    version, training_rows, pipeline = version_train(rng)
    raw_table_create()
    now = timezone.now()
    seeding = time.monotonic()
    rollup_seconds = traffic_seed(version, pipeline, rows=args.rows, hours=args.hours, now=now, rng=rng)
    seed_seconds = time.monotonic() - seeding
    costs = binning_cost(version, pipeline, rng)

    end = now.replace(minute=0, second=0, microsecond=0)
    job = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        drift_services.drift_reports_compute(now=now)
        job.append(time.perf_counter() - began)
    began = time.perf_counter()
    plain = plain_job(training_rows, start=end - dt.timedelta(hours=args.hours), end=end)
    plain_seconds = time.perf_counter() - began

    found = DriftReport.objects.get(model_version=version)
    ours = {f["feature"]: f["drifted"] for f in found.features}
    agree = ours == plain and found.rows == args.rows
    results = {
        "rows": args.rows,
        "hours": args.hours,
        "rollup_rows": FeatureHourly.objects.count(),
        "rollups_seconds_total": round(rollup_seconds, 2),
        "rollups_us_per_row": round(rollup_seconds / args.rows * 1e6, 2),
        "seed_seconds": round(seed_seconds, 1),
        **costs,
        "drift_job_seconds_median": round(statistics.median(job), 4),
        "plain_seconds": round(plain_seconds, 2),
        "speedup": round(plain_seconds / statistics.median(job), 1),
        "job_target_seconds": JOB_TARGET_SECONDS,
        "job_target_met": statistics.median(job) < JOB_TARGET_SECONDS,
        "drifted_ours": sorted(k for k, v in ours.items() if v),
        "drifted_plain": sorted(k for k, v in plain.items() if v),
        "agree": agree,
        "estimated_accuracy": found.estimated_score,
    }
    for name, value in results.items():
        print(f"{name:40} {value}")
    report.results_write(
        RESULTS,
        benchmark="drift_job",
        environment={"database": connection.vendor, "load_average": report.load_average()},
        started=started,
        results=results,
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
