"""Drift checks: the hourly reports from the rollups, and reference profiles for versions that lack one."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from datasets import selectors as dataset_selectors
from ml import drift, drift_bins, estimate
from ml import predictor as predictor_module
from ml.features import category_text, frame_prepare
from ml.train import seeded_holdout_rows
from mlops_site import rollups, storage
from models_registry.models import ChallengerMode, ModelVersion, Stage
from monitoring.models import DriftReport, FeatureHourly

logger = logging.getLogger(__name__)

Source = FeatureHourly.Source


def monitored_versions() -> list[ModelVersion]:
    """Every model's production version, and its staging versions while they take part in production
    traffic (shadow or canary); only those with a reference profile."""
    return list(
        ModelVersion.objects.select_related("registered_model")
        .filter(
            Q(stage=Stage.PRODUCTION)
            | Q(
                stage=Stage.STAGING,
                registered_model__challenger_mode__in=[ChallengerMode.SHADOW, ChallengerMode.CANARY],
            ),
            reference_profile__isnull=False,
        )
        .order_by("pk")
    )


def _window_histograms(
    versions: list[ModelVersion], *, start: dt.datetime, end: dt.datetime
) -> dict[int, dict[tuple[str, str], dict[int, tuple[int, float]]]]:
    """{version id: {(source, feature): {bin: (rows, value sum)}}} over [start, end), in one query."""
    found: dict[int, dict[tuple[str, str], dict[int, tuple[int, float]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    rows = (
        FeatureHourly.objects.filter(
            model_version_id__in=[v.pk for v in versions], hour__gte=start, hour__lt=end
        )
        .values_list("model_version_id", "source", "feature", "bin")
        .annotate(total=Sum("n"), value_sum=Sum("value_sum"))
        .order_by()
    )
    for version_id, source, feature, index, total, value_sum in rows:
        found[version_id][(source, feature)][index] = (int(total), float(value_sum or 0.0))
    return found


def _histogram(spec_counts: int, bins: dict[int, tuple[int, float]] | None) -> drift_bins.Histogram:
    counts = np.zeros(spec_counts, dtype="int64")
    sums = np.zeros(spec_counts, dtype="float64")
    missing = 0
    for index, (total, value_sum) in (bins or {}).items():
        if index == drift_bins.MISSING_BIN:
            missing += total
        elif 0 <= index < spec_counts:  # bins of another profile (never written once a profile exists)
            counts[index] += total
            sums[index] += value_sum
    return drift_bins.Histogram(counts, sums, missing)


def drift_report_compute(
    *,
    model_version: ModelVersion,
    bins: dict[tuple[str, str], dict[int, tuple[int, float]]],
    window_end: dt.datetime,
    window_hours: int,
    computed_at: dt.datetime,
) -> DriftReport:
    """Test the version's summed rollups against its reference and store the report on (version, window
    end): a second run for the same window overwrites it with the same figures."""
    profile = model_version.reference_profile or {}
    current = {
        spec["name"]: _histogram(len(spec["counts"]), bins.get((Source.INPUT, spec["name"])))
        for spec in profile.get("features", [])
    }
    verdict = drift.dataset_drift(profile, current, share_threshold=settings.DRIFT_SHARE)
    prediction_result = None
    rows = 0
    prediction_spec = profile.get("prediction")
    if prediction_spec:
        outputs = _histogram(len(prediction_spec["counts"]), bins.get((Source.PREDICTION, "")))
        rows = outputs.rows + outputs.missing
        prediction_result = drift.column_drift(prediction_spec, outputs)
    found = estimate.Estimate(estimate.METRIC, None, None, 0)
    calibration = profile.get("confidence")
    if calibration:
        confidences = _histogram(len(calibration["counts"]), bins.get((Source.CONFIDENCE, "")))
        found = estimate.accuracy_expected(
            calibration=calibration, counts=confidences.counts, sums=confidences.sums
        )
    report, _ = DriftReport.objects.update_or_create(
        model_version=model_version,
        window_end=window_end,
        defaults={
            "window_hours": window_hours,
            "computed_at": computed_at,
            "rows": rows,
            "features": verdict.features,
            "features_tested": verdict.tested,
            "features_drifted": verdict.drifted,
            "share_drifted": round(verdict.share, 6),
            "drifting": verdict.drifting,
            "prediction": prediction_result,
            "estimated_metric": found.metric if calibration else "",
            "estimated_score": found.value,
            "estimated_stderr": found.stderr,
            "estimated_rows": found.rows,
        },
    )
    return report


def drift_reports_compute(*, now: dt.datetime | None = None) -> list[DriftReport]:
    """One report per monitored version over the DRIFT_WINDOW_HOURS complete hours before `now`'s hour.

    The window ends at the start of the current hour, so a rerun within the hour sees the same rollups and
    writes the same report (keyed by version and window end).
    """
    now = now or timezone.now()
    window_hours = settings.DRIFT_WINDOW_HOURS
    end = rollups.hour_of(now)
    start = end - dt.timedelta(hours=window_hours)
    versions = monitored_versions()
    if not versions:
        return []
    histograms = _window_histograms(versions, start=start, end=end)
    reports = []
    for version in versions:
        reports.append(
            drift_report_compute(
                model_version=version,
                bins=histograms.get(version.pk, {}),
                window_end=end,
                window_hours=window_hours,
                computed_at=now,
            )
        )
    return reports


def _training_rows(version: ModelVersion) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """The version's training rows and holdout (features prepared, holdout target) from its dataset."""
    frame = dataset_selectors.dataset_version_frame(version=version.dataset_version).reset_index(drop=True)
    split = (version.training_summary or {}).get("split") or {}
    seed = int(split.get("seed", version.seed if version.seed is not None else 42))
    test_size = float(split.get("test_size", 0.2))
    target = version.target_column
    holdout = seeded_holdout_rows(
        frame, target_column=target, task=version.task, seed=seed, test_size=test_size
    )
    labelled = np.flatnonzero(frame[target].notna().to_numpy())
    training = np.setdiff1d(labelled, holdout)
    columns = [{"name": c["name"], "kind": c["kind"]} for c in version.feature_schema]
    return (
        frame_prepare(frame.iloc[training], columns),
        frame_prepare(frame.iloc[holdout], columns),
        frame[target].iloc[holdout],
    )


def _predictor(version: ModelVersion) -> Any:
    if version.skops_key:
        return predictor_module.predictor_from_artifacts(
            feature_schema=version.feature_schema,
            skops_bytes=storage.read_bytes(version.skops_key),
            skops_sha256=version.skops_sha256,
        )
    return predictor_module.predictor_from_artifacts(
        feature_schema=version.feature_schema,
        onnx_bytes=storage.read_bytes(version.onnx_key),
        onnx_sha256=version.onnx_sha256,
        classes=version.classes,
    )


def reference_profile_rebuild(*, model_version: ModelVersion) -> bool:
    """Build the reference profile of a version that has none, from its dataset version and its seeded split
    (ml.train.seeded_holdout_rows); returns whether one was stored.

    A retraining's version was trained on a holdout plan rather than the seeded split: its profile is then
    built on the seeded split of its derived dataset, close to but not exactly its training rows. Versions
    without a dataset (uploaded models) are skipped. The write is conditional, so a profile written at
    training meanwhile is kept.
    """
    if model_version.reference_profile or model_version.dataset_version_id is None:
        return False
    X_train, X_holdout, y_holdout = _training_rows(model_version)
    predictor = _predictor(model_version)
    columns = {
        c["name"]: X_holdout[c["name"]].to_numpy(dtype="float64" if c["kind"] == "numeric" else object)
        for c in model_version.feature_schema
    }
    labels, probabilities = predictor.predict_columns(columns) if len(X_holdout) else ([], None)
    classes = model_version.classes
    if classes is not None:
        # The texts training gave the labels (1.0 read from a CSV column with gaps is class "1").
        y_holdout = pd.Series([category_text(v) for v in y_holdout], index=y_holdout.index)
    profile = drift.reference_profile_build(
        X_train=X_train,
        feature_schema=model_version.feature_schema,
        task=model_version.task,
        classes=classes,
        holdout_predictions=np.asarray(labels, dtype=object if classes is not None else "float64"),
        holdout_probabilities=np.asarray(probabilities, dtype="float64") if probabilities else None,
        y_holdout=y_holdout,
    )
    profile["source"] = "rebuilt"
    return bool(
        ModelVersion.objects.filter(pk=model_version.pk, reference_profile__isnull=True).update(
            reference_profile=profile
        )
    )
