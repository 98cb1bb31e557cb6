"""API routes of the predictions app, mounted under /api/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from predictions import api
from predictions.batch import api as batch_api

router = SimpleRouter(trailing_slash=True)
router.register("predictions", api.PredictionViewSet, basename="prediction")
router.register("batch-jobs", batch_api.BatchJobViewSet, basename="api-batch-job")

urlpatterns = [
    path("models/<slug:name>/predict/", api.ModelPredictView.as_view(), name="api-model-predict"),
    path("models/<slug:name>/batch/", batch_api.ModelBatchView.as_view(), name="api-model-batch"),
    *router.urls,
]
