"""The project's URLs, plus this app's pages and API while mlops_site/urls.py does not include them."""

from django.urls import NoReverseMatch, include, path, reverse

from mlops_site import urls as project_urls


def _included(url_name: str, **kwargs: str) -> bool:
    try:
        reverse(url_name, urlconf=project_urls, kwargs=kwargs or None)
    except NoReverseMatch:
        return False
    return True


urlpatterns = [
    *([] if _included("predictions:list") else [path("", include("predictions.urls"))]),
    *([] if _included("api-model-predict", name="m") else [path("api/", include("predictions.api_urls"))]),
    *project_urls.urlpatterns,
]
