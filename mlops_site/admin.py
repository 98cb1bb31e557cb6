"""Admin building blocks every app shares: read-only admins and inlines for rows only services write, and
the confirmation page of actions that change what serves production."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.template.response import TemplateResponse


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only the services write: the admin shows them and runs actions, never edits them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def preview_row(preview: Any) -> dict[str, Any]:
    """A row of a production-change confirmation: the change, or why it will be refused."""
    try:
        return {"change": preview(), "refusal": ""}
    except ValidationError as exc:
        return {"change": None, "refusal": " ".join(exc.messages)}


def production_confirmation(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    title: str,
    intro: str,
    rows: list[dict[str, Any]],
    ids: list[int],
    action_name: str,
    submit: str,
    form: forms.Form | None = None,
    status: int = 200,
) -> TemplateResponse:
    """The confirmation page of an admin action that changes production; the action applies on "apply"."""
    return TemplateResponse(
        request,
        "admin/mlops/confirm_production.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": title,
            "intro": intro,
            "opts": modeladmin.model._meta,
            "rows": rows,
            "ids": ids,
            "form": form,
            "submit": submit,
            "action_name": action_name,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        },
        status=status,
    )
