"""Health and status endpoints, and /metrics for Prometheus."""

from django.urls import path

from monitoring import metrics_view, views

app_name = "monitoring"
urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("monitoring/", views.overview, name="overview"),
    path("monitoring/<slug:name>/", views.model_monitoring, name="model"),
    path("metrics", metrics_view.metrics, name="metrics"),
]
