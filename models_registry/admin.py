"""Django admin for registered models, versions, transitions and webhooks; changes go through services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from mlops_site import errors
from mlops_site.admin import ReadOnlyAdmin, ReadOnlyInline
from models_registry import challenger_services, selectors, services, transition_services, views
from models_registry.forms import ModelUploadForm
from models_registry.models import (
    HIGHER_IS_BETTER,
    TASK_METRICS,
    ModelVersion,
    RegisteredModel,
    Stage,
    StageTransition,
    min_metrics_plain,
)
from models_registry.transition_admin import (
    FORCE_ACTION_LABEL,
    ForceReasonForm,
    RollbackReasonForm,
    preview_row,
    production_confirmation,
    transition_action,
)
from models_registry.webhook_admin import WebhookInline, WebhookSecretsAdminMixin


class ModelVersionInline(ReadOnlyInline):
    model = ModelVersion
    fk_name = "registered_model"
    fields = [
        "version",
        "stage",
        "source",
        "algorithm",
        "metric_summary",
        "onnx_status",
        "created_by",
        "created_at",
    ]
    readonly_fields = fields
    show_change_link = True
    ordering = ["-version"]

    @admin.display(description="Metrics")
    def metric_summary(self, obj: ModelVersion) -> str:
        return _metric_summary(obj.metrics)


def _metric_summary(metrics: dict | None) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in sorted((metrics or {}).items())) or "—"


CHALLENGER_FIELDS = ["challenger_mode", "canary_percent"]


def _gate_help() -> str:
    """What the thresholds field takes, written from the metric table so it cannot drift from it."""
    tasks = "; ".join(
        f"{task}: "
        + ", ".join(
            f"{metric} ({'minimum' if direction == HIGHER_IS_BETTER else 'maximum'})"
            for metric, direction in metrics.items()
        )
        for task, metrics in TASK_METRICS.items()
    )
    return (
        "Quality gate for production: a JSON object of metric and threshold, for example "
        '{"accuracy": 0.8, "log_loss": 0.5} for classification or {"rmse": 3.0, "r2": 0.7} for regression. '
        "A score must reach its threshold (a minimum); an error metric must stay at or below it (a maximum). "
        f'Metrics: {tasks}. The API\'s form {{"accuracy": {{"min": 0.8}}}} is accepted too. '
        "Empty ({}) means no gate."
    )


class RegisteredModelAdminForm(forms.ModelForm):
    class Meta:
        model = RegisteredModel
        fields = ["name", "description", "task", "target_column", "min_metrics", *CHALLENGER_FIELDS]
        help_texts = {
            "min_metrics": _gate_help(),
            "challenger_mode": "How the newest staging version (the challenger) meets production traffic: "
            "shadow scores every production prediction on a worker, never answering; canary answers the "
            "share below, sticky by the client's key (or user).",
            "canary_percent": "Share of production traffic (0 to 100) the canary answers; 0 rolls it back.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Left out of a post (a script that edits the description), they keep their values.
        for name in CHALLENGER_FIELDS:
            if name in self.fields:
                self.fields[name].required = False
        # Shown as the help describes it, plain numbers; stored with each metric's direction.
        if self.instance.pk and "min_metrics" in self.fields:
            self.initial["min_metrics"] = min_metrics_plain(self.instance.min_metrics)

    def clean_challenger_mode(self) -> str:
        return self.cleaned_data.get("challenger_mode") or self.instance.challenger_mode

    def clean_canary_percent(self) -> int:
        percent = self.cleaned_data.get("canary_percent")
        return self.instance.canary_percent if percent is None else percent

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.instance.pk is None or not set(CHALLENGER_FIELDS) & set(self.changed_data):
            return cleaned
        try:
            challenger_services.challenger_mode_check(
                registered_model=self.instance,
                mode=cleaned.get("challenger_mode"),
                canary_percent=cleaned.get("canary_percent"),
            )
        except ValidationError as exc:
            for name, messages_of in exc.message_dict.items():
                self.add_error("challenger_mode" if name == "mode" else name, messages_of)
        except challenger_services.ChallengerUnavailable as exc:
            self.add_error("challenger_mode", exc.detail)
        return cleaned


@admin.register(RegisteredModel)
class RegisteredModelAdmin(WebhookSecretsAdminMixin, admin.ModelAdmin):
    form = RegisteredModelAdminForm
    list_display = [
        "name",
        "task",
        "target_column",
        "version_count",
        "production",
        "challenger_mode",
        "created_by",
        "created_at",
    ]
    list_select_related = ["created_by"]
    search_fields = ["name", "description"]
    inlines = [ModelVersionInline, WebhookInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RegisteredModel]:
        production = ModelVersion.objects.filter(registered_model=OuterRef("pk"), stage=Stage.PRODUCTION)
        return (
            super()
            .get_queryset(request)
            .annotate(
                version_total=Count("versions"), production_version=Subquery(production.values("version")[:1])
            )
        )

    actions = ["delete_without_versions"]

    def has_delete_permission(self, request: HttpRequest, obj: RegisteredModel | None = None) -> bool:
        # Only a model without versions: they are the record of what was trained and served.
        if not super().has_delete_permission(request, obj):
            return False
        return obj is None or not obj.versions.exists()

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Django's own bulk delete would refuse a model with versions as a missing permission.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def get_readonly_fields(self, request: HttpRequest, obj: RegisteredModel | None = None) -> list[str]:
        # The name is MLflow's registered model name; task and target are fixed by the first version.
        return (
            ["name", "task", "target_column", "challenger_since", "created_by", "created_at", "deletion"]
            if obj
            else []
        )

    def get_fields(self, request: HttpRequest, obj: RegisteredModel | None = None) -> list[str]:
        fields = ["name", "description", "task", "target_column", "min_metrics"]
        # A new model has no versions yet, so no challenger either.
        return (
            [*fields, *CHALLENGER_FIELDS, "challenger_since", "created_by", "created_at", "deletion"]
            if obj
            else fields
        )

    @admin.display(description="Deletion")
    def deletion(self, obj: RegisteredModel) -> str:
        try:
            services.registered_model_delete_check(registered_model=obj)
        except errors.Conflict as exc:
            return exc.detail
        return "It has no versions, so it can be deleted (with its webhooks and retraining settings)."

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Our confirmation page, which says why a model cannot be deleted, and then the service."""
        if not super().has_delete_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return self._delete_confirmation(request, [obj], action_name=None)

    @admin.action(description="Delete selected models that have no versions", permissions=["delete"])
    def delete_without_versions(
        self, request: HttpRequest, queryset: QuerySet[RegisteredModel]
    ) -> HttpResponse | None:
        return self._delete_confirmation(
            request, list(queryset.order_by("name")), action_name="delete_without_versions"
        )

    def _delete_confirmation(
        self, request: HttpRequest, models: list[RegisteredModel], *, action_name: str | None
    ) -> HttpResponse | None:
        if request.method == "POST" and "apply" in request.POST:
            for registered in models:
                try:
                    services.registered_model_delete(registered_model=registered, user=request.user)
                except errors.Conflict as exc:
                    self.message_user(request, exc.detail, messages.ERROR)
                else:
                    self.log_deletions(request, [registered])
                    self.message_user(request, f"Model {registered.name} deleted.", messages.SUCCESS)
            return (
                redirect("admin:models_registry_registeredmodel_changelist") if action_name is None else None
            )
        rows = []
        for registered in models:
            try:
                services.registered_model_delete_check(registered_model=registered)
            except errors.Conflict as exc:
                rows.append({"model": registered, "refusal": exc.detail})
            else:
                rows.append({"model": registered, "refusal": "", "webhooks": registered.webhooks.count()})
        deletable = [row for row in rows if not row["refusal"]]
        return TemplateResponse(
            request,
            "admin/models_registry/registeredmodel/delete.html",
            {
                **self.admin_site.each_context(request),
                "title": "Delete registered models" if action_name else f"Delete {models[0].name}",
                "opts": self.model._meta,
                "rows": rows,
                "deletable": deletable,
                "action_name": action_name,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
            status=200 if deletable else 409,
        )

    def save_model(
        self, request: HttpRequest, obj: RegisteredModel, form: forms.ModelForm, change: bool
    ) -> None:
        if not change:
            created = services.registered_model_create(
                name=obj.name,
                created_by=request.user,
                task=obj.task,
                target_column=obj.target_column,
                description=obj.description,
                min_metrics=obj.min_metrics,
            )
            # The admin goes on with `obj` (inlines, log entry): make it the row the service created.
            obj.pk, obj.created_at, obj.created_by = created.pk, created.created_at, created.created_by
            obj._state.adding = False
            obj._state.db = created._state.db
            return
        services.registered_model_thresholds_set(registered_model=obj, min_metrics=obj.min_metrics)
        if "description" in form.changed_data:
            obj.save(update_fields=["description"])
        if set(CHALLENGER_FIELDS) & set(form.changed_data):
            challenger_services.challenger_mode_set(
                registered_model=obj,
                mode=obj.challenger_mode,
                canary_percent=obj.canary_percent,
                user=request.user,
            )

    @admin.display(description="Versions", ordering="version_total")
    def version_count(self, obj: RegisteredModel) -> int:
        return obj.version_total

    @admin.display(description="Production", ordering="production_version")
    def production(self, obj: RegisteredModel) -> str:
        return f"v{obj.production_version}" if obj.production_version else "—"


class StageTransitionInline(ReadOnlyInline):
    model = StageTransition
    fields = ["created_at", "from_stage", "to_stage", "action", "forced", "user", "reason"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = [
        "__str__",
        "registered_model",
        "version",
        "stage",
        "source",
        "algorithm",
        "metric_summary",
        "onnx_status",
        "created_by",
        "created_at",
    ]
    list_select_related = ["registered_model", "created_by"]
    list_filter = ["stage", "source", "registered_model"]
    search_fields = ["registered_model__name", "algorithm", "mlflow_run_id"]
    ordering = ["registered_model__name", "-version"]
    fields = [
        "registered_model",
        "version",
        "stage",
        "source",
        "task",
        "algorithm",
        "params",
        "seed",
        "target_column",
        "classes",
        "metrics",
        "dataset_version",
        "training_run",
        "mlflow_run_id",
        "mlflow_version",
        "skops_key",
        "skops_sha256",
        "onnx_status",
        "onnx_reason",
        "onnx_key",
        "onnx_sha256",
        "created_by",
        "created_at",
        "page_link",
    ]
    readonly_fields = fields
    inlines = [StageTransitionInline]
    actions = [
        transition_action(Stage.STAGING, "Promote to staging"),
        transition_action(Stage.PRODUCTION, "Promote to production"),
        transition_action(Stage.ARCHIVED, "Archive"),
        "force_to_production",
        "roll_back",
    ]

    @admin.display(description="Metrics")
    def metric_summary(self, obj: ModelVersion) -> str:
        return _metric_summary(obj.metrics)

    @admin.display(description="Page")
    def page_link(self, obj: ModelVersion) -> SafeString:
        url = reverse("registry:version-detail", args=[obj.registered_model.name, obj.version])
        return format_html('<a href="{}">Open the version page</a>', url)

    def get_urls(self) -> list[URLPattern]:
        # Before the default URLs, whose "<path:object_id>/" would take "upload/" for a version's id.
        upload = path(
            "upload/",
            self.admin_site.admin_view(self.upload_view),
            name="models_registry_modelversion_upload",
        )
        return [upload, *super().get_urls()]

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        """Register an externally trained skops or ONNX file, through the same service as the page and API."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        errors: list[str] = []
        status = 200
        if request.method == "POST":
            form = ModelUploadForm(request.POST, request.FILES)
            version, errors, status = views.model_upload_submit(form=form, user=request.user)
            if version is not None:
                page = reverse(
                    "registry:version-detail", args=[version.registered_model.name, version.version]
                )
                self.message_user(
                    request,
                    format_html('Registered {} (<a href="{}">its page</a>).', version, page),
                    messages.SUCCESS,
                )
                return redirect("admin:models_registry_modelversion_change", version.pk)
        else:
            form = ModelUploadForm(
                initial=views.model_upload_initial(request.GET.get("model_name", "").strip())
            )
        return TemplateResponse(
            request,
            "admin/models_registry/modelversion/upload.html",
            {
                **self.admin_site.each_context(request),
                "title": "Upload a model file",
                "opts": self.model._meta,
                "form": form,
                "errors": errors,
                "model_names": list(selectors.registered_model_list().values_list("name", flat=True)),
            },
            status=status,
        )

    @admin.action(description=FORCE_ACTION_LABEL)
    def force_to_production(
        self, request: HttpRequest, queryset: QuerySet[ModelVersion]
    ) -> HttpResponse | None:
        """First a confirmation page shows the gate's objections and asks for the reason; then the service."""
        versions = list(
            queryset.select_related("registered_model").order_by("registered_model__name", "version")
        )
        names = [version.registered_model.name for version in versions]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            # Each would replace the one before it in production: almost certainly a mistake.
            self.message_user(
                request,
                f"Select at most one version per model to force to production ({', '.join(doubled)} "
                "had several); nothing was changed.",
                messages.ERROR,
            )
            return None
        applying = "apply" in request.POST
        form = ForceReasonForm(request.POST if applying else None)
        if applying and form.is_valid():
            for version in versions:
                self._force_one(request, version, reason=form.cleaned_data["reason"])
            return None
        rows = [
            {
                "version": version,
                "failures": transition_services.quality_gate_check(model_version=version),
                "replaces": version.registered_model.versions.filter(stage=Stage.PRODUCTION)
                .exclude(pk=version.pk)
                .first(),
            }
            for version in versions
        ]
        return TemplateResponse(
            request,
            "admin/models_registry/modelversion/force_production.html",
            {
                **self.admin_site.each_context(request),
                "title": "Force versions to production",
                "opts": self.model._meta,
                "form": form,
                "rows": rows,
                "action_name": "force_to_production",
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
            status=400 if applying else 200,
        )

    def _force_one(self, request: HttpRequest, version: ModelVersion, *, reason: str) -> None:
        try:
            transition_services.model_version_transition(
                model_version=version, to_stage=Stage.PRODUCTION, user=request.user, reason=reason, force=True
            )
        except ValidationError as exc:
            self.message_user(request, f"{version}: {' '.join(exc.messages)}", messages.ERROR)
            return
        recorded = version.transitions.order_by("-id").first()
        if recorded is not None and recorded.forced:
            self.message_user(
                request, f"{version}: forced to production past the quality gate.", messages.SUCCESS
            )
        else:
            self.message_user(
                request,
                f"{version}: promoted to production; it passes the quality gate, so nothing was forced.",
                messages.SUCCESS,
            )

    @admin.action(description="Roll back their models to the previous production version")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        """First a confirmation page shows each model's change and gate, with a reason and a force box."""
        models = list(
            RegisteredModel.objects.filter(pk__in=queryset.values("registered_model")).order_by("name")
        )
        applying = "apply" in request.POST
        form = RollbackReasonForm(request.POST if applying else None)
        if applying and form.is_valid():
            for registered in models:
                try:
                    restored = transition_services.model_version_rollback(
                        registered_model=registered,
                        user=request.user,
                        reason=form.cleaned_data["reason"],
                        force=form.cleaned_data["force"],
                    )
                except transition_services.QualityGateError as exc:
                    self.message_user(
                        request,
                        f"{registered.name}: refused by the quality gate ({'; '.join(exc.reasons)}). "
                        "Tick \u201cForce past the quality gate\u201d and write a reason to go ahead.",
                        messages.ERROR,
                    )
                except ValidationError as exc:
                    self.message_user(request, f"{registered.name}: {' '.join(exc.messages)}", messages.ERROR)
                else:
                    self.message_user(request, f"{restored} is in production again.", messages.SUCCESS)
            return None
        return production_confirmation(
            self,
            request,
            title="Roll back: confirm",
            intro="Each model's previous production version returns to production and the current one is "
            "archived. The returning version must pass the quality gate, unless forced with a reason.",
            rows=[
                preview_row(lambda r=r: transition_services.rollback_preview(registered_model=r))
                for r in models
            ],
            ids=list(queryset.values_list("pk", flat=True)),
            action_name="roll_back",
            submit="Yes, roll back",
            form=form,
            status=400 if applying else 200,
        )
