"""Account pages beside the sign-in and password pages (accounts.auth_urls)."""

from django.urls import path

from accounts import views

app_name = "accounts"
urlpatterns = [
    path("token/", views.token, name="token"),
    path("token/regenerate/", views.token_change, {"action": "regenerate"}, name="token-regenerate"),
    path("token/revoke/", views.token_change, {"action": "revoke"}, name="token-revoke"),
]
