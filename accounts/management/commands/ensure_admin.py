"""Create the admin superuser on the first start; later starts leave the account alone."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

DEFAULT_USERNAME = "admin"


class Command(BaseCommand):
    help = (
        "Create a superuser named DJANGO_ADMIN_USERNAME (default 'admin') with DJANGO_ADMIN_PASSWORD, or a "
        "generated password printed once. Does nothing when the account exists."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        # Read here, not through mlops_site.env: these configure this command, not the settings.
        username = os.environ.get("DJANGO_ADMIN_USERNAME", "").strip() or DEFAULT_USERNAME
        email = os.environ.get("DJANGO_ADMIN_EMAIL", "").strip()
        given_password = os.environ.get("DJANGO_ADMIN_PASSWORD", "")
        user_model = get_user_model()

        existing = user_model.objects.filter(username=username).first()
        if existing is not None:
            self._report_existing(existing)
            return

        candidate = user_model(username=username, email=email)
        if given_password:
            try:
                password_validation.validate_password(given_password, candidate)
            except ValidationError as exc:
                raise CommandError(
                    "DJANGO_ADMIN_PASSWORD is not accepted: " + " ".join(exc.messages)
                ) from None
            password = given_password
        else:
            password = secrets.token_urlsafe(18)

        try:
            with transaction.atomic():
                user_model.objects.create_superuser(username=username, email=email, password=password)
        except IntegrityError:
            # Another process (a second replica starting) created it between our lookup and insert.
            self._report_existing(user_model.objects.get(username=username))
            return

        if given_password:
            self.stdout.write(f"Admin login: {username} with the password from DJANGO_ADMIN_PASSWORD.")
        else:
            self.stdout.write(f"Admin login: {username} / {password}")
            self.stdout.write(
                "This generated password is shown only this once: note it now, or change it later with "
                f"`manage.py changepassword {username}`."
            )

    def _report_existing(self, user: Any) -> None:
        if not user.is_superuser:
            self.stderr.write(
                f"The account {user.username!r} exists but is not a superuser; it was left unchanged."
            )
            return
        self.stdout.write(
            f"Admin login: {user.username} (the account exists; its password is the one shown at the first "
            f"start or set since; `manage.py changepassword {user.username}` resets it)."
        )
