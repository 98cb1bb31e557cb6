"""Dataset pages, mounted under /datasets/."""

from django.urls import path

from models_registry import dataset_views

app_name = "datasets"
urlpatterns = [
    path("", dataset_views.dataset_list, name="list"),
    path("upload/", dataset_views.dataset_upload, name="upload"),
    path("<str:name>/", dataset_views.dataset_detail, name="detail"),
    path("<str:name>/versions/<int:version>/", dataset_views.dataset_version_detail, name="version-detail"),
    path(
        "<str:name>/versions/<int:version>/download",
        dataset_views.dataset_version_download,
        name="version-download",
    ),
]
