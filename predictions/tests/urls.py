"""The project's URLs plus this app's, until mlops_site/urls.py includes them."""

from django.urls import include, path

from mlops_site import urls as project_urls

urlpatterns = [
    path("", include("predictions.urls")),
    path("api/", include("predictions.api_urls")),
    *project_urls.urlpatterns,
]
