"""The site's URLs plus the registry pages, for tests run before mlops_site/urls.py includes them."""

from django.urls import include, path

from mlops_site.urls import urlpatterns as site_urlpatterns

urlpatterns = [path("", include("models_registry.registry_urls")), *site_urlpatterns]
