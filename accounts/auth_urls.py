"""Sign-in and password pages under /accounts/: Django's views and URL names, ours where they say more.

Not namespaced: Django's views and the reset mail reverse these names (`password_reset_confirm`, ...).
"""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

urlpatterns = [
    # Django's LoginView would name the site after the request's host.
    path(
        "login/",
        auth_views.LoginView.as_view(extra_context={"site_name": settings.SITE_NAME}),
        name="login",
    ),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("password_reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("password_reset/done/", views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
]
