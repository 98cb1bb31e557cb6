"""The request metrics keep django-prometheus's families and labels while the labelled children are reused."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from mlops_site import metrics_middleware

BY_STATUS = "django_http_responses_total_by_status_view_method_total"
BY_VIEW = "django_http_requests_total_by_view_transport_method_total"
LATENCY = "django_http_requests_latency_seconds_by_view_method_count"


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db
@pytest.mark.parametrize("children_max", [10_000, 2])
def test_each_request_is_counted_once_per_family_with_its_labels(client, monkeypatch, children_max):
    # 2: the table of children is emptied again and again, and nothing is lost.
    monkeypatch.setattr(metrics_middleware, "_CHILDREN_MAX", children_max)
    ok = {"status": "200", "view": "monitoring:healthz", "method": "GET"}
    missing = {"status": "404", "view": "<unnamed view>", "method": "GET"}
    before = (
        sample(BY_STATUS, ok),
        sample(BY_STATUS, missing),
        sample(BY_VIEW, {"view": "monitoring:healthz", "transport": "http", "method": "GET"}),
        sample(LATENCY, {"view": "monitoring:healthz", "method": "GET"}),
    )

    for _ in range(3):
        assert client.get("/healthz").status_code == 200
        assert client.get("/no-such-page/").status_code == 404

    after = (
        sample(BY_STATUS, ok),
        sample(BY_STATUS, missing),
        sample(BY_VIEW, {"view": "monitoring:healthz", "transport": "http", "method": "GET"}),
        sample(LATENCY, {"view": "monitoring:healthz", "method": "GET"}),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3, 3, 3]


def test_the_middleware_in_use_is_the_one_reusing_children(settings):
    assert "mlops_site.metrics_middleware.PrometheusAfterMiddleware" in settings.MIDDLEWARE
    assert "django_prometheus.middleware.PrometheusAfterMiddleware" not in settings.MIDDLEWARE


BODY_BYTES_SUM = "django_http_requests_body_total_bytes_sum"
BODY_BYTES_COUNT = "django_http_requests_body_total_bytes_count"
AJAX = "django_http_ajax_requests_total"
BY_METHOD = "django_http_requests_total_by_method_total"


@pytest.mark.django_db
def test_body_sizes_methods_and_ajax_requests_are_counted_from_the_request(client):
    before = (
        sample(BODY_BYTES_SUM, {}),
        sample(BODY_BYTES_COUNT, {}),
        sample(AJAX, {}),
        sample(BY_METHOD, {"method": "POST"}),
    )

    client.post("/healthz", data=b"x" * 300, content_type="application/octet-stream")
    client.get("/healthz", HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    # A length that is no number is counted as 0 bytes, never a server error here.
    client.get("/healthz", CONTENT_LENGTH="²")

    after = (
        sample(BODY_BYTES_SUM, {}),
        sample(BODY_BYTES_COUNT, {}),
        sample(AJAX, {}),
        sample(BY_METHOD, {"method": "POST"}),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [300, 3, 1, 1]
