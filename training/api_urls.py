"""Training-run and closed-loop API routes, mounted under /api/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from training import api, loop_api

router = SimpleRouter(trailing_slash=True)
router.register("training-runs", api.TrainingRunViewSet, basename="training-run")

urlpatterns = [
    *router.urls,
    path(
        "models/<str:model_name>/retraining-policy/",
        loop_api.RetrainingPolicyView.as_view(),
        name="retraining-policy",
    ),
    path("models/<str:model_name>/retrain/", loop_api.RetrainView.as_view(), name="retrain"),
    path(
        "models/<str:model_name>/retrainings/", loop_api.RetrainingListView.as_view(), name="retraining-list"
    ),
    path(
        "models/<str:model_name>/retraining-events/",
        loop_api.RetrainingEventListView.as_view(),
        name="retraining-event-list",
    ),
    path(
        "retrainings/<int:retraining_id>/approve/",
        loop_api.RetrainingApproveView.as_view(),
        name="retraining-approve",
    ),
    path("alerts/alertmanager/", loop_api.AlertmanagerView.as_view(), name="alertmanager-receiver"),
]
