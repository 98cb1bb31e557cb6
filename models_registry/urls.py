"""Registry pages, mounted at the site root: /models/…."""

from django.urls import path

from models_registry import transition_views, triton_views, upload_views, views

app_name = "registry"
urlpatterns = [
    path("models/", views.model_list, name="model-list"),
    # Before models/<str:name>/, which would otherwise take "upload" for a model name.
    path("models/upload/", upload_views.version_upload, name="version-upload"),
    path("models/<str:name>/", views.model_detail, name="model-detail"),
    path("models/<str:name>/rollback", transition_views.model_rollback, name="model-rollback"),
    path("models/<str:name>/delete", views.model_delete, name="model-delete"),
    path("models/<str:name>/challenger", views.model_challenger, name="model-challenger"),
    path("models/<str:name>/triton", triton_views.model_triton, name="model-triton"),
    path("models/<str:name>/versions/<int:version>/", views.version_detail, name="version-detail"),
    path(
        "models/<str:name>/versions/<int:version>/transition",
        transition_views.version_transition,
        name="version-transition",
    ),
    path(
        "models/<str:name>/versions/<int:version>/files/<str:kind>",
        views.version_download,
        name="version-download",
    ),
    path(
        "models/<str:name>/versions/<int:version>/triton",
        triton_views.version_triton_download,
        name="version-triton",
    ),
]
