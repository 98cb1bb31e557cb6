"""Reads of the accounts app: the user's API token, and how this site delivers e-mail."""

from __future__ import annotations

from enum import StrEnum

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from rest_framework.authtoken.models import Token

#: How many characters of a key the token page shows after the one-time reveal.
KEY_PREFIX_LENGTH = 6


def token_get(*, user: AbstractBaseUser) -> Token | None:
    return Token.objects.filter(user=user).first()


def token_key_masked(*, token: Token) -> str:
    return f"{token.key[:KEY_PREFIX_LENGTH]}…"


class EmailDelivery(StrEnum):
    """Where a mail the site sends ends up, as the account pages tell their users."""

    SENT = "sent"  # handed to a mail server (or, in tests, to a test outbox)
    CONSOLE = "console"  # written to the web process's output
    FILE = "file"  # written to a folder on the server
    OFF = "off"  # dropped: the site sends no e-mail


_DELIVERY_BY_BACKEND = {
    "django.core.mail.backends.console.EmailBackend": EmailDelivery.CONSOLE,
    "django.core.mail.backends.filebased.EmailBackend": EmailDelivery.FILE,
    "django.core.mail.backends.dummy.EmailBackend": EmailDelivery.OFF,
}


def email_delivery() -> EmailDelivery:
    return _DELIVERY_BY_BACKEND.get(settings.EMAIL_BACKEND, EmailDelivery.SENT)
