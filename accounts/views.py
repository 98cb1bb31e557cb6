"""Account pages: the user's own API token."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts import selectors, services
from accounts.forms import TokenActionForm


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
    """Show, create, regenerate or revoke the user's API token.

    A new key is rendered straight into the POST response and stored nowhere else, so it is shown once:
    never_cache keeps it out of the browser cache, and the next GET shows only its prefix. Revoking and
    every failure redirect (Post/Redirect/Get), since they have nothing secret to show.
    """
    if request.method == "GET":
        return _render_token_page(request)
    form = TokenActionForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(
            " ".join(form.errors["action"]), content_type="text/plain; charset=utf-8"
        )
    action = form.cleaned_data["action"]
    if action == "revoke":
        if services.token_revoke(user=request.user):
            messages.success(request, "Your API token was revoked. Programs using it are now refused.")
        else:
            messages.info(request, "You had no API token to revoke.")
        return redirect("accounts:token")
    try:
        if action == "create":
            new_token = services.token_create(user=request.user)
        else:
            new_token = services.token_regenerate(user=request.user)
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
        return redirect("accounts:token")
    return _render_token_page(request, new_key=new_token.key)
