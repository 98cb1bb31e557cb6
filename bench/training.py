"""Training benchmark: a whole training run against a plain scikit-learn fit on the same data.

    python bench/training.py [--rows 100000] [--repeats 2] [--algorithms hist_gradient_boosting,...]

Ours is `training_run_create` executing `training_run_execute_task` (Celery, eager): reading the stored
CSV, the seeded split, fitting, holdout metrics, feature importances, the skops and ONNX artifacts with
the ONNX check, the uploads to storage, MLflow logging and registration, and the database records.
The baseline is what a data scientist would type: the same preprocessing and estimator as a plain
Pipeline, `fit` on the same training rows, then the same holdout metrics. Both run in this process, with
native threads capped at one as the worker does, so the ratio compares like with like. The aim is an
overhead under 30% (ratio below 1.30) on 100,000 rows.

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


def _configure_django(data_dir: Path) -> None:
    # The embedded default in a throwaway folder: SQLite, local files, a local MLflow store.
    servers = ["DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "AWS_STORAGE_BUCKET_NAME"]
    servers.append("MLFLOW_TRACKING_URI")
    for name in servers:
        os.environ.pop(name, None)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": "benchmark-only-secret-key-0123456789abcdef",
            "DEBUG": "False",
            "CELERY_TASK_ALWAYS_EAGER": "True",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def _frame(rows: int, seed: int = 0):
    """A classification table shaped like real tabular data: numeric and categorical columns, gaps."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    features, target = make_classification(
        n_samples=rows, n_features=16, n_informative=8, n_redundant=4, random_state=seed
    )
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(features.shape[1])]).round(5)
    rng = np.random.default_rng(seed)
    frame["region"] = rng.choice(["north", "south", "east", "west"], rows)
    frame["plan"] = np.where(frame["x0"] > 0, "premium", rng.choice(["basic", "standard"], rows))
    frame.loc[rng.random(rows) < 0.02, "x1"] = np.nan
    frame["label"] = np.where(target == 1, "churn", "stay")
    return frame


def _timed(function, *args, **kwargs) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu


def _baseline(frame, *, algorithm: str, seed: int, test_size: float) -> None:
    """The same model written by hand: ColumnTransformer + estimator, fit, predict, holdout metrics."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from threadpoolctl import threadpool_limits

    numeric = [c for c in frame.columns if c.startswith("x")]
    categorical = ["region", "plan"]
    estimators = {
        "logistic_regression": (LogisticRegression(max_iter=1000), True),
        "random_forest": (RandomForestClassifier(n_estimators=100, random_state=seed), False),
        "hist_gradient_boosting": (HistGradientBoostingClassifier(random_state=seed), False),
    }
    estimator, scale = estimators[algorithm]
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
    X, y = frame.drop(columns="label"), frame["label"]
    with threadpool_limits(1):
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_size, random_state=seed, stratify=y
        )
        pipeline.fit(X_train, y_train)
        predicted = pipeline.predict(X_test)
        proba = pipeline.predict_proba(X_test)
        positive = list(pipeline.classes_).index("stay")
        scores = {
            "accuracy": accuracy_score(y_test, predicted),
            "balanced_accuracy": balanced_accuracy_score(y_test, predicted),
            "f1_macro": f1_score(y_test, predicted, average="macro"),
            "roc_auc": roc_auc_score(y_test == "stay", proba[:, positive]),
            "log_loss": log_loss(y_test, proba),
        }
    assert np.isfinite(list(scores.values())).all()


def _ours(dataset_version, *, algorithm: str, seed: int, test_size: float, user) -> None:
    from training import services as training_services
    from training.models import TrainingRun

    run = training_services.training_run_create(
        dataset_version=dataset_version,
        model_name=f"bench-{algorithm.replace('_', '-')}",
        algorithm=algorithm,
        params={"n_estimators": 100} if algorithm == "random_forest" else {},
        created_by=user,
        seed=seed,
        test_size=test_size,
    )
    run = TrainingRun.objects.get(pk=run.pk)
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise SystemExit(f"training run {run.pk} ended {run.status}: {run.error_message}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side; the median is reported")
    parser.add_argument("--algorithms", default="hist_gradient_boosting,logistic_regression")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "training.json")
    args = parser.parse_args()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        _configure_django(Path(tmp))
        from django.contrib.auth import get_user_model

        from datasets import services as dataset_services
        from tests.factories import make_csv_bytes

        user = get_user_model().objects.create_user("bench", is_staff=True)
        frame = _frame(args.rows)
        csv_path = Path(tmp) / "bench.csv"
        csv_path.write_bytes(make_csv_bytes(frame))
        with csv_path.open("rb") as handle:
            version, _ = dataset_services.dataset_version_create(
                name="bench-churn", file=handle, target_column="label", created_by=user
            )
        # One small run first: MLflow and skops pay one-off start-up costs on their first call.
        with (Path(tmp) / "warmup.csv").open("wb") as handle:
            handle.write(make_csv_bytes(_frame(500, seed=1)))
        with (Path(tmp) / "warmup.csv").open("rb") as handle:
            warmup, _ = dataset_services.dataset_version_create(
                name="bench-warmup", file=handle, target_column="label", created_by=user
            )
        _ours(warmup, algorithm="logistic_regression", seed=1, test_size=0.2, user=user)

        results = []
        for algorithm in args.algorithms.split(","):
            baseline_runs, our_runs = [], []
            for repeat in range(args.repeats):
                seed = 42 + repeat
                baseline_runs.append(_timed(_baseline, frame, algorithm=algorithm, seed=seed, test_size=0.2))
                our_runs.append(
                    _timed(_ours, version, algorithm=algorithm, seed=seed, test_size=0.2, user=user)
                )
            baseline = statistics.median(wall for wall, _ in baseline_runs)
            ours = statistics.median(wall for wall, _ in our_runs)
            baseline_cpu = statistics.median(cpu for _, cpu in baseline_runs)
            ours_cpu = statistics.median(cpu for _, cpu in our_runs)
            results.append(
                {
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
                }
            )
            print(
                f"{algorithm:24s} rows={args.rows:>8d}  plain fit+metrics {baseline:7.2f} s  "
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
    report = {"benchmark": "training", "repeats": args.repeats, "machine": machine, "results": results}
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
