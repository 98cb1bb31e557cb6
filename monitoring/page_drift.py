"""Drift on the monitoring pages: each version's newest report in brief, and one feature's distributions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops_site.errors import Invalid, problem
from models_registry.models import ModelVersion
from monitoring import drift_selectors


def drift_and_estimates(
    *, versions: list[ModelVersion]
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """From each version's newest drift report, in one query without its per-feature results:

    - its drift status {"drifting", "share", "features", "tested", "rows", "at"};
    - the estimated score of its recent predictions before their outcomes {"metric", "value", "stderr",
      "n"}, absent when there is none (regression, no rows).

    A version the drift job has not reported on is in neither ("not measured yet").
    """
    if not versions:
        return {}, {}
    rows = (
        drift_selectors.drift_reports_latest(model_version_ids=[v.pk for v in versions])
        .order_by()
        .values(
            "model_version_id",
            "window_end",
            "drifting",
            "share_drifted",
            "features_drifted",
            "features_tested",
            "rows",
            "estimated_metric",
            "estimated_score",
            "estimated_stderr",
            "estimated_rows",
        )
    )
    drift: dict[int, dict[str, Any]] = {}
    estimates: dict[int, dict[str, Any]] = {}
    for row in rows:
        drift[row["model_version_id"]] = {
            "drifting": row["drifting"],
            "share": row["share_drifted"],
            "features": row["features_drifted"],
            "tested": row["features_tested"],
            "rows": row["rows"],
            "at": row["window_end"],
        }
        if row["estimated_score"] is not None:
            estimates[row["model_version_id"]] = {
                "metric": row["estimated_metric"],
                "value": row["estimated_score"],
                "stderr": row["estimated_stderr"],
                "n": row["estimated_rows"],
            }
    return drift, estimates


@dataclass(frozen=True)
class FeatureDrift:
    """The production version's newest drift report per feature, and one feature's distributions."""

    report: Any  # monitoring.models.DriftReport
    features: list[dict[str, Any]]
    feature: str
    distribution: dict[str, Any] | None


def feature_drift(*, production: ModelVersion | None, feature: Any) -> FeatureDrift | None:
    """The production version's newest drift report with each feature's test, and the reference and
    current distributions of `feature` (by default the most drifted one); None before any report.

    Raises Invalid (a 400 page) naming `feature` when the report has no such feature. Two queries.
    """
    if production is None:
        return None
    report = drift_selectors.drift_report_latest(model_version=production)
    if report is None:
        return None
    results = sorted(
        report.features,
        key=lambda r: (not r.get("drifted"), -(r.get("psi") or 0.0), r.get("feature", "")),
    )
    names = [r["feature"] for r in results]
    if feature in (None, ""):
        chosen = names[0] if names else ""
    elif feature in names:
        chosen = str(feature)
    else:
        raise Invalid(
            f"Unknown feature {str(feature)[:40]!r}.",
            errors=[
                problem(
                    f"'feature' must be one of: {', '.join(names)}.", field="feature", code="invalid_option"
                )
            ],
        )
    distribution = (
        drift_selectors.feature_distribution(
            model_version=production,
            feature=chosen,
            window_end=report.window_end,
            window_hours=report.window_hours,
        )
        if chosen
        else None
    )
    return FeatureDrift(report=report, features=results, feature=chosen, distribution=distribution)
