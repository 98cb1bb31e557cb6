"""Registry API routes, mounted under /api/."""

from rest_framework.routers import SimpleRouter

from models_registry import api

router = SimpleRouter(trailing_slash=True)
router.register("models", api.RegisteredModelViewSet, basename="registered-model")
router.register(r"models/(?P<model_name>[^/.]+)/versions", api.ModelVersionViewSet, basename="model-version")

urlpatterns = router.urls
