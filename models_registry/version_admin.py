"""The admin of model versions: their list and page, stage transitions as actions, forcing past the quality
gate, rollback, and the upload of an externally trained model file."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from mlops_site.admin import ReadOnlyAdmin, ReadOnlyInline
from models_registry import selectors, transition_services, upload_views
from models_registry.forms import ModelUploadForm
from models_registry.models import ModelVersion, RegisteredModel, Stage, StageTransition
from models_registry.transition_admin import (
    FORCE_ACTION_LABEL,
    ForceReasonForm,
    RollbackReasonForm,
    preview_row,
    production_confirmation,
    transition_action,
)


def metric_summary(metrics: dict | None) -> str:
    """A version's holdout metrics on one line, for the version lists of both admins."""
    return ", ".join(f"{name} {value:.4g}" for name, value in sorted((metrics or {}).items())) or "—"


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
        return metric_summary(obj.metrics)

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
            version, errors, status = upload_views.model_upload_submit(form=form, user=request.user)
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
                initial=upload_views.model_upload_initial(request.GET.get("model_name", "").strip())
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
