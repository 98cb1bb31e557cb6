"""Prometheus metric families of drift, read from the latest drift reports (for monitoring.collector)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from monitoring import drift_selectors


def drift_metric_families(now: dt.datetime | None = None) -> Iterator[GaugeMetricFamily]:
    """Gauges from each production or staging version's newest drift report: one query.

    `now` is unused (the reports carry their own window); it is there so the function fits
    monitoring.collector's sources, which are called with the scrape's time.
    """
    score = GaugeMetricFamily(
        "mlops_drift_score",
        "Drift score of a feature in the latest drift report, as Evidently reports it: the p-value of the KS "
        "or chi-square test on small samples (drift below 0.05), else the Wasserstein or Jensen-Shannon "
        "distance (drift from 0.1)",
        labels=["model", "version", "feature"],
    )
    detected = GaugeMetricFamily(
        "mlops_drift_detected",
        "1 when the feature drifted in the latest drift report",
        labels=["model", "version", "feature"],
    )
    drifting = GaugeMetricFamily(
        "mlops_model_drifting",
        "1 when at least DRIFT_SHARE of the version's tested features drifted",
        labels=["model", "version"],
    )
    share = GaugeMetricFamily(
        "mlops_drift_share",
        "Share of the version's tested features that drifted",
        labels=["model", "version"],
    )
    estimated = GaugeMetricFamily(
        "mlops_model_estimated_score",
        "Score expected of the window's unlabelled predictions from their confidences (CBPE-style)",
        labels=["model", "version", "metric"],
    )
    for report in drift_selectors.drift_reports_latest():
        model = report.model_version.registered_model.name
        version = str(report.model_version.version)
        for feature in report.features:
            if feature.get("test") is None:
                continue
            value = feature["p_value"] if feature.get("p_value") is not None else feature["statistic"]
            score.add_metric([model, version, feature["feature"]], float(value))
            detected.add_metric([model, version, feature["feature"]], 1.0 if feature["drifted"] else 0.0)
        drifting.add_metric([model, version], 1.0 if report.drifting else 0.0)
        share.add_metric([model, version], report.share_drifted)
        if report.estimated_score is not None:
            estimated.add_metric([model, version, report.estimated_metric], report.estimated_score)
    yield from (score, detected, drifting, share, estimated)
