"""API routes of the predictions app, mounted under /api/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from predictions import api

router = SimpleRouter(trailing_slash=True)
router.register("predictions", api.PredictionViewSet, basename="prediction")

urlpatterns = [
    path("models/<slug:name>/predict/", api.ModelPredictView.as_view(), name="api-model-predict"),
    *router.urls,
]
