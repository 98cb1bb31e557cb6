"""Forms of the accounts pages and of the admin login."""

from __future__ import annotations

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from accounts import services


class TokenActionForm(forms.Form):
    action = forms.ChoiceField(
        choices=[("create", "Create"), ("regenerate", "Regenerate"), ("revoke", "Revoke")],
        error_messages={
            "required": "The form did not say which token action to take (create, regenerate or revoke).",
            "invalid_choice": "Unknown token action %(value)s: use create, regenerate or revoke.",
        },
    )


class AdminLoginForm(AdminAuthenticationForm):
    """The admin login, saying so when the attempt was refused for too many failures."""

    def get_invalid_login_error(self) -> ValidationError:
        refusal = services.sign_in_refusal(request=self.request)
        if refusal is not None:
            return ValidationError(refusal.message, code="sign_in_locked")
        return super().get_invalid_login_error()
