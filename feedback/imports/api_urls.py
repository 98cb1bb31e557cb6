"""API routes of feedback imports, mounted under /api/."""

from rest_framework.routers import SimpleRouter

from feedback.imports import api

router = SimpleRouter(trailing_slash=True)
router.register("feedback-imports", api.FeedbackImportViewSet, basename="api-feedback-import")

urlpatterns = router.urls
