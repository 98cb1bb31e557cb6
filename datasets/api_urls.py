"""Dataset API routes, mounted under /api/."""

from rest_framework.routers import SimpleRouter

from datasets import api

router = SimpleRouter(trailing_slash=True)
router.register("datasets", api.DatasetViewSet, basename="dataset")
router.register(
    r"datasets/(?P<dataset_name>[^/.]+)/versions", api.DatasetVersionViewSet, basename="dataset-version"
)

urlpatterns = router.urls
