"""Forms of the accounts pages and of the admin login."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import forms as auth_forms
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.http import HttpRequest
from django.template import loader

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


class PasswordResetForm(auth_forms.PasswordResetForm):
    """Django's form, except that a mail that could not be sent raises services.EmailNotSent, and a request
    over the reset limits raises services.PasswordResetLimited and sends nothing.

    Django's own logs the failure and carries on, so its page would claim the mail was on its way.
    Addresses without an account still send nothing and fail nothing: the answer does not tell them apart.
    """

    def save(self, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        # Counted before Django looks the address up, so addresses with and without an account count alike.
        services.password_reset_admit(request=request, email=self.cleaned_data["email"])
        super().save(*args, request=request, **kwargs)

    def send_mail(
        self,
        subject_template_name: str,
        email_template_name: str,
        context: dict[str, Any],
        from_email: str | None,
        to_email: str,
        html_email_template_name: str | None = None,
    ) -> None:
        # A header cannot hold a line break, whatever the subject template renders.
        subject = " ".join(loader.render_to_string(subject_template_name, context).split())
        body = loader.render_to_string(email_template_name, context)
        message = EmailMultiAlternatives(subject, body, from_email, [to_email])
        if html_email_template_name is not None:
            message.attach_alternative(
                loader.render_to_string(html_email_template_name, context), "text/html"
            )
        services.email_send(message=message, purpose="password reset", user_id=context["user"].pk)
