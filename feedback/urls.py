"""Pages of the feedback app: giving an outcome, the label queue, and file imports."""

from django.urls import include, path

app_name = "feedback"

urlpatterns = [
    path("", include("feedback.imports.urls")),
]
