"""Dataset pages, mounted under /datasets/."""

from django.urls import path

from datasets import views

app_name = "datasets"
urlpatterns = [
    path("", views.dataset_list, name="list"),
    path("upload/", views.dataset_upload, name="upload"),
    path("<str:name>/", views.dataset_detail, name="detail"),
    path("<str:name>/delete/", views.dataset_delete, name="delete"),
    path("<str:name>/versions/<int:version>/", views.dataset_version_detail, name="version-detail"),
    path("<str:name>/versions/<int:version>/delete/", views.dataset_version_delete, name="version-delete"),
    path(
        "<str:name>/versions/<int:version>/download",
        views.dataset_version_download,
        name="version-download",
    ),
]
