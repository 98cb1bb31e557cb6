"""Database tables of the accounts app: the audit trail of sign-in attempts."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SignInEvent(models.Model):
    """One attempt to sign in on any login path, written whatever its outcome; never edited."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        LOCKED_OUT = "locked_out", "Locked out"

    created_at = models.DateTimeField(auto_now_add=True)
    # As typed, so attempts on accounts that do not exist are audited too.
    username = models.CharField(max_length=150)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    client_address = models.GenericIPAddressField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    path = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at"], name="signin_created_idx"),
            models.Index(fields=["username", "-created_at"], name="signin_username_idx"),
            models.Index(fields=["client_address", "-created_at"], name="signin_address_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.username} {self.outcome} from {self.client_address or 'unknown'}"
