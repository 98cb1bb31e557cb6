"""Training-run API routes, mounted under /api/."""

from rest_framework.routers import SimpleRouter

from training import api

router = SimpleRouter(trailing_slash=True)
router.register("training-runs", api.TrainingRunViewSet, basename="training-run")

urlpatterns = router.urls
