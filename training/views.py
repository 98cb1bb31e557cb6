"""Training pages for staff: the list of runs with the form to start one, and a run's live status and, once
it has finished, its results."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from mlops_site import pages
from mlops_site.pages import staff_required
from models_registry import charts, mlflow_gateway
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion
from training import demo_services, selectors, services
from training.forms import TrainingRunForm, training_form_initial
from training.models import TrainingRun

TRAINING_LIST_LIMIT = 100


#: Marks the "submitted" message, which the run page's script removes once the status it told has changed.
SUBMITTED_TAG = "run-submitted"


def _render_training_list(
    request: HttpRequest, form: TrainingRunForm, *, status: int = 200, ignored: list[str] | None = None
) -> HttpResponse:
    return render(
        request,
        "training/list.html",
        {
            "form": form,
            "prefill_ignored": ignored or [],
            "runs": list(selectors.training_run_list()[:TRAINING_LIST_LIMIT]),
            "model_names": list(registry_selectors.registered_model_list().values_list("name", flat=True)),
        },
        status=status,
    )


@require_GET
@staff_required
def training_list(request: HttpRequest) -> HttpResponse:
    """The runs and the form; ?dataset_version=<id> and ?model=<name> fill it in (training_form_initial)."""
    initial, ignored = training_form_initial(request.GET)
    return _render_training_list(request, TrainingRunForm(initial=initial), ignored=ignored)


@require_POST
@staff_required
def training_create(request: HttpRequest) -> HttpResponse:
    form = TrainingRunForm(request.POST)
    if not form.is_valid():
        return _render_training_list(request, form, status=400)
    data = form.cleaned_data
    task, algorithm = data["algorithm"]
    try:
        run = services.training_run_create(
            dataset_version=data["dataset_version"],
            model_name=data["model_name"],
            algorithm=algorithm,
            params=data["params"],
            created_by=request.user,
            target_column=data["target_column"] or None,
            task=task,
            seed=data["seed"],
            test_size=data["test_size"],
        )
    except Exception as exc:
        refusal = pages.refused(exc)
        for message in refusal.messages:
            form.add_error(None, message)
        return _render_training_list(request, form, status=refusal.status)
    messages.success(request, f"Training run {run.pk} was submitted.", extra_tags=SUBMITTED_TAG)
    return redirect("training:detail", run_id=run.pk)


@require_GET
@staff_required
def training_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run's inputs and live status; once it succeeded, the version it registered with its holdout
    metrics and charts, the same the version's page draws."""
    run = selectors.training_run_get(run_id=run_id)
    version = _run_version(run)
    return render(
        request,
        "training/detail.html",
        {
            "run": run,
            "state": _run_state(run),
            "params": sorted((run.params or {}).items()),
            "task": _task_text(run, version),
            "results": _results(run, version),
            "mlflow_run_url": mlflow_gateway.tracking_ui_url(run_id=run.mlflow_run_id)
            if run.mlflow_run_id
            else None,
            "again_url": reverse("training:list")
            + "?"
            + urlencode({"dataset_version": run.dataset_version_id, "model": run.model_name}),
        },
    )


@require_GET
@staff_required
def training_status(request: HttpRequest, run_id: int) -> JsonResponse:
    run = selectors.training_run_get(run_id=run_id)
    response = JsonResponse(_run_state(run))
    response["Cache-Control"] = "no-store"
    return response


def _run_state(run: TrainingRun) -> dict[str, Any]:
    version = _run_version(run)
    return {
        "id": run.pk,
        "status": run.status,
        "status_label": run.get_status_display(),
        "progress": run.progress,
        "progress_message": run.progress_message,
        "error_message": run.error_message,
        "is_terminal": run.is_terminal,
        "duration": _duration_text(run),
        "attempts": run.attempts,
        "version_url": reverse("registry:version-detail", args=[run.model_name, version.version])
        if version
        else None,
        "version_label": f"{run.model_name} v{version.version}" if version else None,
    }


def _task_text(run: TrainingRun, version: ModelVersion | None) -> str:
    if run.task:
        return run.get_task_display()
    if version is not None:
        return version.get_task_display()
    if run.is_terminal:
        return "Not recorded: the run failed before it registered a version"
    return "Inferred from the target column when the run starts"


def _results(run: TrainingRun, version: ModelVersion | None) -> dict[str, Any] | None:
    if version is None or run.status != TrainingRun.Status.SUCCEEDED:
        return None
    return {
        "version": version,
        "url": reverse("registry:version-detail", args=[run.model_name, version.version]),
        "metrics": [
            (charts.metric_label(name), version.metrics[name]) for name in charts.metric_names([version])
        ],
        "omitted_metrics": sorted((version.training_summary or {}).get("metrics_omitted", {}).items()),
        "figures": charts.version_figures(artifacts=version.artifacts),
    }


def _run_version(run: TrainingRun) -> ModelVersion | None:
    try:
        return run.model_version
    except ModelVersion.DoesNotExist:
        return None


def _duration_text(run: TrainingRun) -> str:
    duration = run.duration
    if duration is None:
        return ""
    seconds = duration.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds} s"


@staff_required
def demo_remove(request: HttpRequest) -> HttpResponse:
    """Staff remove the demo model: GET asks for confirmation, saying what goes with it; POST removes."""
    if request.method not in ("GET", "POST"):
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    demo = selectors.demo_model_current()
    if demo is None:
        messages.info(request, "There is no demo model to remove.")
        return redirect("registry:model-list")
    if request.method == "POST":
        name = demo_services.demo_model_remove(user=request.user)
        if name:
            messages.success(request, f"The demo model {name} was removed with everything made with it.")
        return redirect("registry:model-list")
    return render(
        request, "training/demo_remove.html", {"demo": demo, **selectors.demo_model_footprint(demo)}
    )
