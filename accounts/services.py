"""Writes of the accounts app: creating, regenerating and revoking a user's API token."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token


def token_create(*, user: AbstractBaseUser) -> Token:
    """Give the user a token; refuses when one exists, because the old key would silently keep working."""
    if Token.objects.filter(user=user).exists():
        raise ValidationError(
            "You already have an API token. Regenerate it to get a new key, or revoke it first.",
            code="token_exists",
        )
    try:
        with transaction.atomic():
            return Token.objects.create(user=user)
    except IntegrityError:
        # A concurrent request created it between our check and our insert.
        raise ValidationError("You already have an API token.", code="token_exists") from None


def token_regenerate(*, user: AbstractBaseUser) -> Token:
    """Replace the user's token (or create the first one); the old key stops working at once."""
    try:
        with transaction.atomic():
            Token.objects.filter(user=user).delete()
            return Token.objects.create(user=user)
    except IntegrityError:
        # Two regenerations raced and the other one won; its key is the valid one now.
        raise ValidationError(
            "Your token was changed by another request at the same time. Please try again.",
            code="token_conflict",
        ) from None


def token_revoke(*, user: AbstractBaseUser) -> bool:
    """Delete the user's token; returns whether there was one. Revoking twice is harmless."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return deleted > 0


def token_obtain(*, user: AbstractBaseUser) -> Token:
    """The user's token, created on first use: what a program gets from POST /api/auth/token/."""
    try:
        with transaction.atomic():
            token, _ = Token.objects.get_or_create(user=user)
    except IntegrityError:
        token = Token.objects.get(user=user)
    return token
