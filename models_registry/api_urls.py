"""Registry API routes, mounted under /api/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from models_registry import api, transfer_api, triton_views

router = SimpleRouter(trailing_slash=True)
router.register("models", api.RegisteredModelViewSet, basename="registered-model")
router.register(r"models/(?P<model_name>[^/.]+)/versions", api.ModelVersionViewSet, basename="model-version")

urlpatterns = [
    path("models/<slug:name>/challenger/", api.ChallengerView.as_view(), name="api-model-challenger"),
    path("models/<slug:name>/triton/", triton_views.TritonServingView.as_view(), name="api-model-triton"),
    path(
        "models/<slug:name>/versions/<int:version>/export/",
        transfer_api.ModelVersionExportView.as_view(),
        name="api-model-version-export",
    ),
    path(
        "models/<slug:name>/versions/<int:version>/triton/",
        triton_views.TritonRepositoryView.as_view(),
        name="api-model-version-triton",
    ),
    path(
        "models/<slug:name>/import/", transfer_api.ModelVersionImportView.as_view(), name="api-model-import"
    ),
    *router.urls,
]
