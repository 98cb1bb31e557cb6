"""Pages of the feedback app: giving an outcome, the label queue, and file imports."""

from django.urls import include, path

from feedback import views

app_name = "feedback"

urlpatterns = [
    path("predictions/<int:prediction_id>/feedback/", views.feedback_give, name="give"),
    path("models/<str:name>/label-queue/", views.label_queue, name="label-queue"),
    path("", include("feedback.imports.urls")),
]
