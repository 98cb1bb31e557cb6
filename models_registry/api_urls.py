"""Registry API routes, mounted under /api/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from models_registry import api

router = SimpleRouter(trailing_slash=True)
router.register("models", api.RegisteredModelViewSet, basename="registered-model")
router.register(r"models/(?P<model_name>[^/.]+)/versions", api.ModelVersionViewSet, basename="model-version")

urlpatterns = [
    path("models/<slug:name>/challenger/", api.ChallengerView.as_view(), name="api-model-challenger"),
    *router.urls,
]
