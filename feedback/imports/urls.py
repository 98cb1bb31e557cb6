"""Pages of feedback imports (files of true outcomes), staff only."""

from django.urls import path

from feedback.imports import views

urlpatterns = [
    path("feedback/imports/", views.import_list, name="import-list"),
    path("feedback/imports/new/", views.import_new, name="import-new"),
    path("feedback/imports/<uuid:import_uuid>/", views.import_detail, name="import-detail"),
    path("feedback/imports/<uuid:import_uuid>/status/", views.import_status, name="import-status"),
    path("feedback/imports/<uuid:import_uuid>/errors/", views.import_errors, name="import-errors"),
]
