"""Registry and training pages, mounted at the site root: /models/… and /training/…."""

from django.urls import path

from models_registry import registry_views

app_name = "registry"
urlpatterns = [
    path("models/", registry_views.model_list, name="model-list"),
    # Before models/<str:name>/, which would otherwise take "upload" for a model name.
    path("models/upload/", registry_views.version_upload, name="version-upload"),
    path("models/<str:name>/", registry_views.model_detail, name="model-detail"),
    path("models/<str:name>/rollback", registry_views.model_rollback, name="model-rollback"),
    path("models/<str:name>/versions/<int:version>/", registry_views.version_detail, name="version-detail"),
    path(
        "models/<str:name>/versions/<int:version>/transition",
        registry_views.version_transition,
        name="version-transition",
    ),
    path(
        "models/<str:name>/versions/<int:version>/files/<str:kind>",
        registry_views.version_download,
        name="version-download",
    ),
    path("training/", registry_views.training_list, name="training-list"),
    path("training/new", registry_views.training_create, name="training-create"),
    path("training/<int:run_id>/", registry_views.training_detail, name="training-detail"),
    path("training/<int:run_id>/status", registry_views.training_status, name="training-status"),
]
