"""Reads of drift: the latest report per version, and a feature's reference and current distributions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery, Sum

from ml import drift, drift_bins
from models_registry.models import ModelVersion, Stage
from monitoring.models import DriftReport, FeatureHourly

Source = FeatureHourly.Source


def drift_report_latest(*, model_version: ModelVersion) -> DriftReport | None:
    return DriftReport.objects.filter(model_version=model_version).order_by("-window_end").first()


def drift_reports_latest(*, model_version_ids: list[int] | None = None) -> QuerySet[DriftReport]:
    """The newest report of each version in production or staging (or of the given versions), in one
    query, with the version and its model joined."""
    newest = (
        DriftReport.objects.filter(model_version=OuterRef("model_version"))
        .order_by("-window_end")
        .values("window_end")[:1]
    )
    reports = DriftReport.objects.select_related("model_version__registered_model").filter(
        window_end=Subquery(newest)
    )
    if model_version_ids is None:
        reports = reports.filter(model_version__stage__in=[Stage.PRODUCTION, Stage.STAGING])
    else:
        reports = reports.filter(model_version_id__in=model_version_ids)
    return reports.order_by("model_version_id")


def _spec_of(profile: dict[str, Any], *, source: str, feature: str) -> dict[str, Any] | None:
    if source == Source.PREDICTION:
        return profile.get("prediction")
    return next((spec for spec in profile.get("features", []) if spec["name"] == feature), None)


def feature_distribution(
    *,
    model_version: ModelVersion,
    feature: str,
    window_end: dt.datetime,
    window_hours: int,
    source: str = Source.INPUT,
) -> dict[str, Any] | None:
    """A feature's (or, with source="prediction", the output's) shares per reference bin, in the reference
    and over the window's hours before `window_end`, for drawing one over the other; None when the version
    has no profile or no such feature. One query."""
    profile = model_version.reference_profile or {}
    spec = _spec_of(profile, source=source, feature=feature)
    if spec is None:
        return None
    start = window_end - dt.timedelta(hours=window_hours)
    rows = (
        FeatureHourly.objects.filter(
            model_version=model_version,
            hour__gte=start,
            hour__lt=window_end,
            source=source,
            feature="" if source == Source.PREDICTION else feature,
        )
        .values_list("bin")
        .annotate(total=Sum("n"))
        .order_by()
    )
    current = [0] * len(spec["counts"])
    missing = 0
    for index, total in rows:
        if index == drift_bins.MISSING_BIN:
            missing += int(total)
        elif 0 <= index < len(current):
            current[index] += int(total)
    reference_rows, current_rows = sum(spec["counts"]), sum(current)
    return {
        "feature": feature,
        "kind": spec["kind"],
        "bins": drift.bin_labels(spec),
        "reference": [c / reference_rows if reference_rows else 0.0 for c in spec["counts"]],
        "current": [c / current_rows if current_rows else 0.0 for c in current],
        "reference_rows": reference_rows,
        "current_rows": current_rows,
        "reference_missing": spec.get("missing", 0),
        "current_missing": missing,
    }


def versions_without_profile(*, model_name: str | None = None) -> QuerySet[ModelVersion]:
    """Versions trained from a dataset that have no reference profile yet (trained before drift checks)."""
    versions = ModelVersion.objects.select_related("registered_model", "dataset_version").filter(
        reference_profile__isnull=True, dataset_version__isnull=False
    )
    if model_name is not None:
        versions = versions.filter(registered_model__name=model_name)
    return versions.order_by("pk")
