"""django-prometheus's request metrics, the same families and labels, with each labelled child looked up once
and the request's headers read from the WSGI environment.

Its middleware calls `metric.labels(**values)` a dozen times per request; every call sorts and checks the
label names, converts the values and takes the metric's lock, about 6 µs each. The children are the same
objects on every call, so they are kept here per process, keyed by metric and label values: the label values
are bounded (view names, methods, status codes, charsets, exception types), and the table is emptied if it
ever grows past _CHILDREN_MAX.
"""

from __future__ import annotations

from typing import Any

from django_prometheus import middleware
from django_prometheus.utils import Time

_CHILDREN_MAX = 10_000


class PrometheusAfterMiddleware(middleware.PrometheusAfterMiddleware):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[Any, ...], Any] = {}

    def label_metric(self, metric: Any, request: Any, response: Any = None, **labels: Any) -> Any:
        if not labels:
            return metric
        key = (id(metric), *labels.items())
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= _CHILDREN_MAX:
                self._children.clear()
            child = self._children[key] = metric.labels(**labels)
        return child

    def process_request(self, request: Any) -> None:
        # What django-prometheus counts here, with the two headers read from META: its request.headers
        # builds the request's whole header table (about 30 µs), which nothing else on the API path needs.
        # A Content-Length that is not a number (refused before this by ChunkedBodyMiddleware) counts 0.
        metrics = self.metrics
        self.label_metric(metrics.requests_by_method, request, method=self._method(request)).inc()
        self.label_metric(metrics.requests_by_transport, request, transport=self._transport(request)).inc()
        if request.META.get("HTTP_X_REQUESTED_WITH") == "XMLHttpRequest":
            self.label_metric(metrics.requests_ajax, request).inc()
        length = str(request.META.get("CONTENT_LENGTH") or "0")
        size = int(length) if length.isascii() and length.isdigit() else 0
        self.label_metric(metrics.requests_body_bytes, request).observe(size)
        request.prometheus_after_middleware_event = Time()
