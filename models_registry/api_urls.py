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
