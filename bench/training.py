"""Training benchmark: a whole training run against a plain scikit-learn fit on the same data.

    python bench/training.py [--rows 100000] [--repeats 3] [--algorithms ridge,classification:random_forest]

Every algorithm of the catalogue by default: the classification ones on a classification table, the
regression ones on a regression table of the same shape. `--algorithms` takes catalogue keys (a key
that exists for both tasks means both) or `task:key`.

Ours is `training_run_create` executing `training_run_execute_task` (Celery, eager): reading the
stored dataset (its columnar copy, checked), the seeded split, fitting, holdout metrics, feature
importances, the skops and ONNX artifacts with the ONNX check, the uploads to storage, MLflow logging and
registration, and the database records. Permutation importance and the ONNX check run on seeded samples
of the holdout whose sizes the run records (bench/README.md says which); the holdout metrics use the
whole holdout, on both sides. The baseline is what a data scientist would type: scikit-learn's
SimpleImputer (ours fits the same medians faster, ml/imputation.py), scaling, one-hot encoding and the
estimator as a plain Pipeline, `fit` on the same training rows, then the same holdout metrics. Both run
in this process, with native threads capped at one as the worker does, so the ratio compares like with
like. The aim is an overhead under 30% (ratio below 1.30) on 100,000 rows.

The ratio is of wall-clock medians. The process CPU time of each side is recorded too: on a machine
shared with other work, wall time swings with the load (also recorded) while CPU time mostly does not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import embedded  # noqa: E402  (after the path is set)

TARGET = "label"
REGIONS = ["north", "south", "east", "west"]


def _frame(rows: int, *, task: str, seed: int = 0):
    """A table shaped like real tabular data: 16 numeric and 2 categorical columns, gaps, and a target.

    Classification: a two-class text label. Regression: a continuous target that also depends on the
    categorical columns.
    """
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification, make_regression

    if task == "classification":
        features, target = make_classification(
            n_samples=rows, n_features=16, n_informative=8, n_redundant=4, random_state=seed
        )
    else:
        features, target = make_regression(
            n_samples=rows, n_features=16, n_informative=8, noise=10.0, random_state=seed
        )
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(features.shape[1])]).round(5)
    rng = np.random.default_rng(seed)
    frame["region"] = rng.choice(REGIONS, rows)
    frame["plan"] = np.where(frame["x0"] > 0, "premium", rng.choice(["basic", "standard"], rows))
    frame.loc[rng.random(rows) < 0.02, "x1"] = np.nan
    if task == "classification":
        frame[TARGET] = np.where(target == 1, "churn", "stay")
    else:
        shift = frame["region"].map(dict(zip(REGIONS, [-20.0, 0.0, 10.0, 30.0], strict=True)))
        frame[TARGET] = (target + shift + np.where(frame["plan"] == "premium", 15.0, 0.0)).round(4)
    return frame


def _timed(function, *args, **kwargs) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu


def _baseline(frame, *, task: str, algorithm: str, seed: int, test_size: float) -> None:
    """The same model written by hand: ColumnTransformer + estimator, fit, predict, holdout metrics."""
    import numpy as np
    from sklearn import metrics
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from threadpoolctl import threadpool_limits

    numeric = [c for c in frame.columns if c.startswith("x")]
    categorical = ["region", "plan"]
    # The catalogue's defaults, written out as a person would; linear models get scaled inputs.
    estimators = {
        ("classification", "logistic_regression"): (LogisticRegression(max_iter=1000), True),
        ("classification", "random_forest"): (RandomForestClassifier(random_state=seed), False),
        ("classification", "hist_gradient_boosting"): (
            HistGradientBoostingClassifier(random_state=seed),
            False,
        ),
        ("regression", "ridge"): (Ridge(), True),
        ("regression", "random_forest"): (RandomForestRegressor(random_state=seed), False),
        ("regression", "hist_gradient_boosting"): (HistGradientBoostingRegressor(random_state=seed), False),
    }
    estimator, scale = estimators[(task, algorithm)]
    numeric_steps = [SimpleImputer(strategy="median")] + ([StandardScaler()] if scale else [])
    pipeline = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("numeric", make_pipeline(*numeric_steps), numeric),
                        (
                            "categorical",
                            make_pipeline(
                                SimpleImputer(strategy="most_frequent"),
                                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                            ),
                            categorical,
                        ),
                    ]
                ),
            ),
            ("model", estimator),
        ]
    )
    X, y = frame.drop(columns=TARGET), frame[TARGET]
    with threadpool_limits(1):
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_size, random_state=seed, stratify=y if task == "classification" else None
        )
        pipeline.fit(X_train, y_train)
        predicted = pipeline.predict(X_test)
        if task == "classification":
            proba = pipeline.predict_proba(X_test)
            positive = list(pipeline.classes_).index("stay")
            scores = {
                "accuracy": metrics.accuracy_score(y_test, predicted),
                "balanced_accuracy": metrics.balanced_accuracy_score(y_test, predicted),
                "f1_macro": metrics.f1_score(y_test, predicted, average="macro"),
                "roc_auc": metrics.roc_auc_score(y_test == "stay", proba[:, positive]),
                "log_loss": metrics.log_loss(y_test, proba),
            }
        else:
            scores = {
                "rmse": metrics.root_mean_squared_error(y_test, predicted),
                "mae": metrics.mean_absolute_error(y_test, predicted),
                "r2": metrics.r2_score(y_test, predicted),
            }
    assert np.isfinite(list(scores.values())).all()


def _ours(dataset_version, *, task: str, algorithm: str, seed: int, test_size: float, user) -> None:
    from training import services as training_services
    from training.models import TrainingRun

    run = training_services.training_run_create(
        dataset_version=dataset_version,
        model_name=f"bench-{task}-{algorithm.replace('_', '-')}",
        algorithm=algorithm,
        params={},
        created_by=user,
        task=task,
        seed=seed,
        test_size=test_size,
    )
    run = TrainingRun.objects.get(pk=run.pk)
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise SystemExit(f"training run {run.pk} ended {run.status}: {run.error_message}")


def _selected(names: str | None) -> list[tuple[str, str]]:
    """(task, key) pairs from the catalogue: all of them, or those named as `key` or `task:key`."""
    from ml.catalogue import algorithm_list

    catalogue = [(a.task, a.key) for a in algorithm_list()]
    if not names:
        return catalogue
    chosen: list[tuple[str, str]] = []
    for name in names.split(","):
        task, _, key = name.strip().rpartition(":")
        found = [(t, k) for t, k in catalogue if k == key and task in ("", t)]
        if not found:
            known = ", ".join(f"{t}:{k}" for t, k in catalogue)
            raise SystemExit(f"unknown algorithm {name!r}; the catalogue has {known}")
        chosen += [pair for pair in found if pair not in chosen]
    return chosen


def _dataset_version(folder: Path, frame, *, name: str, user):
    from datasets import services as dataset_services
    from tests.factories import make_csv_bytes

    path = folder / f"{name}.csv"
    path.write_bytes(make_csv_bytes(frame))
    with path.open("rb") as handle:
        version, _ = dataset_services.dataset_version_create(
            name=name, file=handle, target_column=TARGET, created_by=user
        )
    return version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the median is reported")
    parser.add_argument(
        "--algorithms", default=None, help="comma-separated `key` or `task:key`; default: the whole catalogue"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "training.json")
    args = parser.parse_args()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        embedded.django_configure(Path(tmp))
        from django.contrib.auth import get_user_model

        selected = _selected(args.algorithms)
        user = get_user_model().objects.create_user("bench", is_staff=True)
        frames, versions = {}, {}
        for task in sorted({task for task, _ in selected}):
            frames[task] = _frame(args.rows, task=task)
            versions[task] = _dataset_version(Path(tmp), frames[task], name=f"bench-{task}", user=user)
            # One small run of each algorithm first, on both sides: MLflow, skops, skl2onnx and
            # scikit-learn pay one-off start-up costs (imports, converters) on their first call.
            small = _frame(500, task=task, seed=1)
            warmup = _dataset_version(Path(tmp), small, name=f"bench-warmup-{task}", user=user)
            for _, algorithm in [pair for pair in selected if pair[0] == task]:
                _baseline(small, task=task, algorithm=algorithm, seed=1, test_size=0.2)
                _ours(warmup, task=task, algorithm=algorithm, seed=1, test_size=0.2, user=user)

        results = []
        for task, algorithm in selected:
            baseline_runs, our_runs = [], []
            for repeat in range(args.repeats):
                seed = 42 + repeat
                baseline_runs.append(
                    _timed(_baseline, frames[task], task=task, algorithm=algorithm, seed=seed, test_size=0.2)
                )
                our_runs.append(
                    _timed(
                        _ours,
                        versions[task],
                        task=task,
                        algorithm=algorithm,
                        seed=seed,
                        test_size=0.2,
                        user=user,
                    )
                )
            baseline = statistics.median(wall for wall, _ in baseline_runs)
            ours = statistics.median(wall for wall, _ in our_runs)
            baseline_cpu = statistics.median(cpu for _, cpu in baseline_runs)
            ours_cpu = statistics.median(cpu for _, cpu in our_runs)
            results.append(
                {
                    "task": task,
                    "algorithm": algorithm,
                    "rows": args.rows,
                    "baseline_seconds": round(baseline, 3),
                    "training_run_seconds": round(ours, 3),
                    "ratio": round(ours / baseline, 3),
                    "overhead_percent": round((ours / baseline - 1) * 100, 1),
                    "baseline_cpu_seconds": round(baseline_cpu, 3),
                    "training_run_cpu_seconds": round(ours_cpu, 3),
                    "cpu_ratio": round(ours_cpu / baseline_cpu, 3),
                    "baseline_runs_seconds": [round(wall, 3) for wall, _ in baseline_runs],
                    "training_runs_seconds": [round(wall, 3) for wall, _ in our_runs],
                    "baseline_runs_cpu_seconds": [round(cpu, 3) for _, cpu in baseline_runs],
                    "training_runs_cpu_seconds": [round(cpu, 3) for _, cpu in our_runs],
                }
            )
            print(
                f"{task:14s} {algorithm:24s} rows={args.rows:>8d}  plain fit+metrics {baseline:7.2f} s  "
                f"training run {ours:7.2f} s  ratio {ours / baseline:5.2f}  (CPU time ratio "
                f"{ours_cpu / baseline_cpu:5.2f})",
                flush=True,
            )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
    }
    report = {
        "benchmark": "training",
        "command": " ".join(["python", "bench/training.py", *sys.argv[1:]]),
        "repeats": args.repeats,
        "machine": machine,
        "results": results,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
