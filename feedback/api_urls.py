"""API routes of the feedback app, mounted under /api/."""

from django.urls import include, path, re_path

from feedback import api

urlpatterns = [
    # Digits only (at most 18, within a bigint): anything else is a 404 from the resolver, not a 500.
    re_path(
        r"^predictions/(?P<prediction_id>[0-9]{1,18})/feedback/$",
        api.PredictionFeedbackView.as_view(),
        name="api-prediction-feedback",
    ),
    path("feedback/", api.BulkFeedbackView.as_view(), name="api-feedback-bulk"),
    path("models/<slug:name>/quality/", api.ModelQualityView.as_view(), name="api-model-quality"),
    re_path(
        r"^models/(?P<name>[-a-zA-Z0-9_]+)/versions/(?P<version>[0-9]{1,9})/quality/$",
        api.VersionQualityView.as_view(),
        name="api-version-quality",
    ),
    path("", include("feedback.imports.api_urls")),
]
