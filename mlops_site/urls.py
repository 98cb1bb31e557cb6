"""Top-level URL map: pages, the API under /api/, admin, health and metrics."""

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from mlops_site import views

# Predictions first: URL resolution tries patterns in order, and they are the busiest requests by far.
api_patterns = [
    path("", include("predictions.api_urls")),
    path("", include("accounts.api_urls")),
    path("", include("datasets.api_urls")),
    path("", include("models_registry.api_urls")),
    path("", include("training.api_urls")),
    path("", include("feedback.api_urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", RedirectView.as_view(pattern_name="swagger-ui"), name="api-root"),
]

urlpatterns = [
    # First for the same reason; no page's address starts with api/.
    path("api/", include(api_patterns)),
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico where a page names no icon (JSON answers, files); base.html names it.
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("favicon.svg"))),
    path("accounts/", include("accounts.auth_urls")),
    path("accounts/", include("accounts.urls")),
    path("datasets/", include("datasets.urls")),
    path("training/", include("training.urls")),
    path("", include("models_registry.urls")),
    path("", include("predictions.urls")),
    path("", include("feedback.urls")),
    # /healthz, /readyz and /metrics (restricted: monitoring.metrics_view).
    path("", include("monitoring.urls")),
]

handler400 = "mlops_site.views.bad_request"
handler404 = "mlops_site.views.not_found"
handler500 = "mlops_site.views.server_error"

admin.site.site_header = "MLOps administration"
admin.site.site_title = "MLOps admin"
