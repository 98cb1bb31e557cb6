"""API routes of this app, mounted under /api/."""

from rest_framework.routers import DefaultRouter

from models_registry import dataset_api

router = DefaultRouter(trailing_slash=True)
router.register("datasets", dataset_api.DatasetViewSet, basename="dataset")
router.register(
    r"datasets/(?P<dataset_name>[^/.]+)/versions",
    dataset_api.DatasetVersionViewSet,
    basename="dataset-version",
)

urlpatterns = router.urls

# ------------------------------------------------------------------------------
# The registry and training runs
# ------------------------------------------------------------------------------
from models_registry import registry_api  # noqa: E402

router.register("models", registry_api.RegisteredModelViewSet, basename="registered-model")
router.register(
    r"models/(?P<model_name>[^/.]+)/versions", registry_api.ModelVersionViewSet, basename="model-version"
)
router.register("training-runs", registry_api.TrainingRunViewSet, basename="training-run")

urlpatterns = router.urls
