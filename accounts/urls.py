"""Account pages beside Django's login/logout views."""

from django.urls import path

from accounts import views

app_name = "accounts"
urlpatterns = [
    path("token/", views.token, name="token"),
]
