"""Health and status endpoints."""

from django.urls import path

from monitoring import views

app_name = "monitoring"
urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
]
