"""Tests of the hourly latency histogram kept with each page or API request, and its reconciliation."""

from __future__ import annotations

from collections import Counter

import pytest

from feedback import reconcile
from mlops_site import latency_bins
from predictions.errors import InputInvalid
from predictions.models import Channel, LatencyHourly, PredictionRequest
from predictions.tests.helpers import trained_model
from predictions.tests.test_prediction_make import predict

CANCER_ROW = trained_model("cancer").sample_rows[0]


def test_each_page_or_api_request_counts_once_in_its_versions_hour_and_bin(alice, cancer_v1):
    for _ in range(3):
        predict([CANCER_ROW, CANCER_ROW], alice)

    requests = list(PredictionRequest.objects.filter(channel=Channel.API))
    rows = list(LatencyHourly.objects.all())
    assert sum(r.n for r in rows) == len(requests) == 3
    assert Counter({(r.model_version_id, r.bin): r.n for r in rows}) == Counter(
        (q.model_version_id, latency_bins.latency_bin(q.latency_ms)) for q in requests
    )
    assert reconcile.quality_reconcile().differences == []


def test_a_refused_request_counts_no_latency(alice, cancer_v1):
    with pytest.raises(InputInvalid):
        predict([{"nope": 1}], alice)

    assert LatencyHourly.objects.count() == 0


def test_the_reconciliation_rebuilds_a_damaged_latency_histogram(alice, cancer_v1):
    predict([CANCER_ROW], alice)
    LatencyHourly.objects.update(n=9)

    report = reconcile.quality_reconcile(fix=True)

    assert [d.table for d in report.differences] == ["latency"]
    assert LatencyHourly.objects.get().n == 1
    assert reconcile.quality_reconcile().differences == []
