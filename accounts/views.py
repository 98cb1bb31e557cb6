"""Account pages: logging out, resetting a forgotten password, and the user's own API token."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts import selectors, services
from accounts.forms import PasswordResetForm, TokenActionForm

LOGGED_OUT = "You have been logged out."
EMAIL_NOT_SENT = (
    "The e-mail with your reset link could not be sent: the site's mail server refused it or could not "
    "be reached. "
    "Please try again later, or ask an administrator to set a new password for you."
)
#: The token actions that take a working key away, each confirmed on its own page first.
CONFIRMED_TOKEN_ACTIONS = ("regenerate", "revoke")


class LogoutView(auth_views.LogoutView):
    """Django's logout (POST only), saying on the page it leads to that it happened."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        was_logged_in = request.user.is_authenticated
        response = super().post(request, *args, **kwargs)
        if was_logged_in:
            # The session is gone by now; the messages framework falls back to its cookie.
            messages.success(request, LOGGED_OUT)
        return response


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset request, telling the truth when the mail could not be sent or e-mail is off, and
    answering 429 with Retry-After when the request is over the reset limits."""

    form_class = PasswordResetForm

    @property
    def extra_email_context(self) -> dict[str, object]:
        # Django would name the site after the request's host.
        return {
            "site_name": settings.SITE_NAME,
            "link_valid_hours": settings.PASSWORD_RESET_TIMEOUT // 3600,
        }

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "email_delivery": selectors.email_delivery()}

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if selectors.email_delivery() == selectors.EmailDelivery.OFF:
            return self.render_to_response(self.get_context_data(), status=503)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: PasswordResetForm) -> HttpResponse:
        try:
            return super().form_valid(form)
        except services.EmailNotSent:
            form.add_error(None, EMAIL_NOT_SENT)
            return self.render_to_response(self.get_context_data(form=form), status=503)
        except services.PasswordResetLimited as exc:
            form.add_error(None, exc.refusal.message)
            response = self.render_to_response(self.get_context_data(form=form), status=429)
            response["Retry-After"] = str(exc.refusal.retry_after)
            return response


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "email_delivery": selectors.email_delivery()}


def _render_token_page(request: HttpRequest, *, new_key: str = "") -> HttpResponse:
    token = selectors.token_get(user=request.user)
    context = {
        "token": token,
        "masked_key": selectors.token_key_masked(token=token) if token else "",
        "new_key": new_key,
    }
    return render(request, "accounts/token.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token(request: HttpRequest) -> HttpResponse:
    """Show the user's API token, or create their first one.

    A new key is rendered straight into the POST response and stored nowhere else, so it is shown once:
    never_cache keeps it out of the browser cache, and the next GET shows only its prefix. Regenerating
    and revoking take a working key away, so a form posting them here (one rendered before they needed a
    confirmation) is sent to their confirmation page instead of acting.
    """
    if request.method == "GET":
        return _render_token_page(request)
    form = TokenActionForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(
            " ".join(form.errors["action"]), content_type="text/plain; charset=utf-8"
        )
    action = form.cleaned_data["action"]
    if action in CONFIRMED_TOKEN_ACTIONS:
        return redirect(f"accounts:token-{action}")
    try:
        new_token = services.token_create(user=request.user)
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
        return redirect("accounts:token")
    return _render_token_page(request, new_key=new_token.key)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_change(request: HttpRequest, *, action: str) -> HttpResponse:
    """Regenerate or revoke the user's token: a GET only asks for confirmation, the POST from it acts.

    Revoking and every failure redirect (Post/Redirect/Get); a regenerated key is shown once, as on the
    token page.
    """
    if request.method == "GET":
        token = selectors.token_get(user=request.user)
        if token is None:
            messages.info(request, "You have no API token.")
            return redirect("accounts:token")
        context = {"action": action, "token": token, "masked_key": selectors.token_key_masked(token=token)}
        return render(request, "accounts/token_confirm.html", context)
    if action == "revoke":
        if services.token_revoke(user=request.user):
            messages.success(request, "Your API token was revoked. Programs using it are now refused.")
        else:
            messages.info(request, "You had no API token to revoke.")
        return redirect("accounts:token")
    try:
        new_token = services.token_regenerate(user=request.user)
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
        return redirect("accounts:token")
    return _render_token_page(request, new_key=new_token.key)
