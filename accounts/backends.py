"""The authentication backend every login path uses: Django's, behind the sign-in limits and audit."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest

from accounts import services


class LimitedModelBackend(ModelBackend):
    """ModelBackend whose password check runs only while the account and the client are not locked.

    The login page, the admin login and POST /api/auth/token/ all call authenticate(), so the limits sit
    here rather than in each view; the user_logged_in signal would miss the API, which logs no one in.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> AbstractBaseUser | None:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        return services.sign_in_attempt(
            request=request,
            username=str(username),
            check_password=lambda: super(LimitedModelBackend, self).authenticate(
                request, username=username, password=password, **kwargs
            ),
        )
