"""The admin's actions that change production: their reason forms, the confirmation page they show
before applying, and the stage moves as admin actions (used by models_registry.version_admin)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from mlops_site.admin import preview_row, production_confirmation
from models_registry import transition_services
from models_registry.models import ModelVersion

FORCE_ACTION_LABEL = "Force to production (with a written reason)"


class ForceReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=transition_services.REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        error_messages={"required": "Write why these versions go to production despite the quality gate."},
        help_text="Required. Recorded on each transition with your name, together with the failing metrics.",
    )


class RollbackReasonForm(forms.Form):
    reason = forms.CharField(
        required=False,
        max_length=transition_services.REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Recorded on each transition with your name. Required to force.",
    )
    force = forms.BooleanField(
        required=False,
        label="Force past the quality gate",
        help_text="Only where a version misses its model's gate; the failing metrics are recorded too.",
    )


def transition_action(to_stage: str, label: str) -> object:
    def action(
        modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[ModelVersion]
    ) -> HttpResponse | None:
        versions = list(
            queryset.select_related("registered_model").order_by("registered_model__name", "version")
        )
        changing = [
            v
            for v in versions
            if transition_services.transition_changes_production(model_version=v, to_stage=to_stage)
        ]
        if changing and "apply" not in request.POST:
            return production_confirmation(
                modeladmin,
                request,
                title=f"{label}: confirm",
                intro="These changes alter what serves production. Versions that miss the quality gate are "
                f"refused; use \u201c{FORCE_ACTION_LABEL}\u201d for them.",
                rows=[
                    preview_row(
                        lambda v=v: transition_services.transition_preview(model_version=v, to_stage=to_stage)
                    )
                    for v in versions
                ],
                ids=[v.pk for v in versions],
                action_name=f"transition_to_{to_stage}",
                submit=f"Yes, {label.lower()}",
            )
        for version in versions:
            try:
                transition_services.model_version_transition(
                    model_version=version, to_stage=to_stage, user=request.user
                )
            except transition_services.QualityGateError as exc:
                modeladmin.message_user(
                    request,
                    f"{version}: refused by the quality gate ({'; '.join(exc.reasons)}). "
                    "A staff member can force it with a written reason: use the action "
                    f"\u201c{FORCE_ACTION_LABEL}\u201d or the version's page.",
                    messages.ERROR,
                )
            except ValidationError as exc:
                modeladmin.message_user(request, f"{version}: {' '.join(exc.messages)}", messages.ERROR)
            else:
                modeladmin.message_user(request, f"{version}: {label.lower()}.", messages.SUCCESS)
        return None

    action.__name__ = f"transition_to_{to_stage}"
    return admin.action(description=f"{label}")(action)
