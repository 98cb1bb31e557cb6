"""Reads of the accounts app."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from rest_framework.authtoken.models import Token

#: How many characters of a key the token page shows after the one-time reveal.
KEY_PREFIX_LENGTH = 6


def token_get(*, user: AbstractBaseUser) -> Token | None:
    return Token.objects.filter(user=user).first()


def token_key_masked(*, token: Token) -> str:
    return f"{token.key[:KEY_PREFIX_LENGTH]}…"
