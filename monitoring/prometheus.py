"""Every counter and histogram of the app, declared once, and the one-line helpers services count with.

Metric names and labels are a contract with the Grafana dashboards and alert rules (deploy/): change them
together. Label values are bounded: model names come from the registry, never from what a client sent.

With PROMETHEUS_MULTIPROC_DIR set (before the process imports prometheus_client), prometheus_client writes
these values to per-process files that /metrics adds up; otherwise each process counts on its own. The
gauges computed from the database live in monitoring.collector, not here.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter, Histogram

T = TypeVar("T")

#: The model label of a refusal whose model name could not be trusted (no such model).
UNKNOWN_MODEL = ""

# Latency of one request: a single row takes about a millisecond; 1000 rows or a cold model file, seconds.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A training run takes seconds to hours.
_TRAINING_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)

predictions_total = Counter(
    "mlops_predictions_total",
    "Rows predicted, by model, the version that answered them and channel (api, page, batch).",
    ["model", "version", "channel"],
)
prediction_latency_seconds = Histogram(
    "mlops_prediction_latency_seconds",
    "Seconds one prediction request spent per phase: validation, model, storing and total.",
    ["model", "phase"],
    buckets=_LATENCY_BUCKETS,
)
prediction_rejections_total = Counter(
    "mlops_prediction_rejections_total",
    "Prediction requests refused, by model and reason (the error code answered).",
    ["model", "reason"],
)
feedback_total = Counter(
    "mlops_feedback_total",
    "Outcomes stored or changed, by model and verdict (correct, wrong, value).",
    ["model", "verdict"],
)
training_runs_total = Counter(
    "mlops_training_runs_total",
    "Training runs finished, by algorithm and outcome (succeeded, failed).",
    ["algorithm", "outcome"],
)
training_run_duration_seconds = Histogram(
    "mlops_training_run_duration_seconds",
    "Seconds from a training run's start to its end, by algorithm.",
    ["algorithm"],
    buckets=_TRAINING_BUCKETS,
)
retraining_decisions_total = Counter(
    "mlops_retraining_decisions_total",
    "Events of the closed loop's log, by model and decision (triggered, promoted, held_back, …).",
    ["model", "decision"],
)
batch_rows_total = Counter(
    "mlops_batch_rows_total",
    "Rows of batch jobs, by model and outcome (predicted, refused).",
    ["model", "outcome"],
)
task_failures_total = Counter(
    "mlops_task_failures_total",
    "Celery tasks that raised, by task name.",
    ["task"],
)
tasks_total = Counter(
    "mlops_tasks_total",
    "Celery tasks finished, by task name and state (success, failure, retry).",
    ["task", "state"],
)
triton_fallbacks_total = Counter(
    "mlops_triton_fallbacks_total",
    "Model calls of versions Triton serves that were answered in-process instead, by model and reason "
    "(unreachable, error: Triton's answer; paused: Triton not asked for a while after a failure).",
    ["model", "reason"],
)


def multiprocess_dir() -> str:
    """The folder of per-process metric files, or "" when each process counts on its own."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


# ------------------------------------------------------------------------------
# Predictions
# ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _predictions_child(model: str, version: int, channel: str) -> Any:
    # labels() checks and converts its values and takes a lock on every call; a single prediction counts
    # five series, so each child is looked up once per process (model names are bounded: the registry's).
    return predictions_total.labels(model, str(version), channel)


@functools.lru_cache(maxsize=4096)
def _latency_child(model: str, phase: str) -> Any:
    return prediction_latency_seconds.labels(model, phase)


def predictions_count(*, model: str, version: int, channel: str, rows: int) -> None:
    if rows:
        _predictions_child(model, version, channel).inc(rows)


def triton_fallback_count(*, model: str, reason: str) -> None:
    triton_fallbacks_total.labels(model, reason).inc()


def rejection_reason(exc: Any) -> str:
    """The code a refusal is answered with; for refused input whose problems share one code (too_many_rows,
    wrong_type…), that code, which says more than "invalid"."""
    codes = {item.get("code") for item in getattr(exc, "errors", None) or [] if isinstance(item, dict)}
    if len(codes) == 1 and (code := codes.pop()):
        return str(code)
    return str(getattr(exc, "code", "") or getattr(exc, "default_code", "") or type(exc).__name__)


def prediction_observed(
    *,
    model: str,
    channel: str,
    rows_by_version: dict[int, int],
    validation: float,
    model_call: float,
    storing: float,
    total: float,
) -> None:
    """One answered request: its rows per answering version and its seconds per phase."""
    for version, rows in rows_by_version.items():
        predictions_count(model=model, version=version, channel=channel, rows=rows)
    _latency_child(model, "validation").observe(validation)
    _latency_child(model, "model").observe(model_call)
    _latency_child(model, "storing").observe(storing)
    _latency_child(model, "total").observe(total)


#: Names of registered models seen in refusals; a name stays valid label material once it existed.
_known_models: set[str] = set()


def _model_label(name: Any, exc: Any) -> str:
    """`name` when it names a registered model, else UNKNOWN_MODEL: a client's typo must not become a
    time series of its own. Costs one indexed query per new name, on refusals only."""
    from mlops_site.errors import NotFound
    from models_registry.models import RegisteredModel

    if not isinstance(name, str) or isinstance(exc, NotFound):
        return UNKNOWN_MODEL
    if name not in _known_models:
        if not RegisteredModel.objects.filter(name=name).exists():
            return UNKNOWN_MODEL
        if len(_known_models) > 10_000:
            _known_models.clear()
        _known_models.add(name)
    return name


def prediction_rejected(*, model_name: Any, exc: Any) -> None:
    prediction_rejections_total.labels(_model_label(model_name, exc), rejection_reason(exc)).inc()


def prediction_rejections_counted(service: Callable[..., T]) -> Callable[..., T]:
    """Count every refusal (a DomainError) of a prediction service called with registered_model_name=."""
    from mlops_site.errors import DomainError

    @functools.wraps(service)
    def counted(*args: Any, **kwargs: Any) -> T:
        try:
            return service(*args, **kwargs)
        except DomainError as exc:
            prediction_rejected(model_name=kwargs.get("registered_model_name"), exc=exc)
            exc.rejection_counted = True  # type: ignore[attr-defined]  # see prediction_refusal_counted
            raise

    return counted


def prediction_refusal_counted(*, model_name: Any, exc: Exception) -> None:
    """Count a refusal a predict endpoint answers before or around the service (throttled, an unreadable or
    oversized body, the serializer's checks); one the service counted already is not counted again."""
    from rest_framework.exceptions import APIException

    from mlops_site.errors import DomainError

    if isinstance(exc, APIException | DomainError) and not getattr(exc, "rejection_counted", False):
        prediction_rejected(model_name=model_name, exc=exc)


# ------------------------------------------------------------------------------
# Feedback
# ------------------------------------------------------------------------------
#: Model names by version id: a version never moves to another model, so one query per new version.
_model_names: dict[int, str] = {}


def model_names_of(version_ids: Iterable[int]) -> dict[int, str]:
    """The registered model's name of every version id, read once per process and version."""
    from models_registry.models import ModelVersion

    wanted = set(version_ids)
    missing = wanted - set(_model_names)
    if missing:
        if len(_model_names) > 10_000:
            _model_names.clear()
        _model_names.update(
            ModelVersion.objects.filter(pk__in=missing).values_list("pk", "registered_model__name")
        )
    return {pk: _model_names[pk] for pk in wanted if pk in _model_names}


def verdict_of(correct: bool | None) -> str:
    if correct is None:
        return "value"
    return "correct" if correct else "wrong"


def feedback_count(checked: Iterable[Any], stored: Iterable[Any]) -> None:
    """Count outcomes that are new or changed (feedback.checks.Checked beside feedback.store.Stored) when
    their transaction commits; the same outcome sent again is not counted twice."""
    moved = {s.prediction_id for s in stored if s.status != "unchanged" and s.outcome_changed}
    changed = [c for c in checked if c.target.prediction_id in moved]
    if not changed:
        return
    names = model_names_of(c.target.model_version_id for c in changed)
    counts: dict[tuple[str, str], int] = {}
    for item in changed:
        name = names.get(item.target.model_version_id)
        if name is not None:
            key = (name, verdict_of(item.outcome.correct))
            counts[key] = counts.get(key, 0) + 1

    def add() -> None:
        for (name, verdict), count in counts.items():
            feedback_total.labels(name, verdict).inc(count)

    transaction.on_commit(add)


# ------------------------------------------------------------------------------
# Training, the closed loop and batch jobs
# ------------------------------------------------------------------------------
def training_run_finished(*, algorithm: str, outcome: str, started_at: dt.datetime | None) -> None:
    training_runs_total.labels(algorithm, outcome).inc()
    if started_at is not None:
        seconds = (timezone.now() - started_at).total_seconds()
        training_run_duration_seconds.labels(algorithm).observe(max(seconds, 0.0))


def retraining_decision_count(*, model: str, decision: str) -> None:
    """Counted when the event's transaction commits: a rolled-back decision was never made."""
    transaction.on_commit(lambda: retraining_decisions_total.labels(model, decision).inc())


def batch_rows_count(*, model: str, version: int, predicted: int, refused: int) -> None:
    if predicted:
        batch_rows_total.labels(model, "predicted").inc(predicted)
        predictions_count(model=model, version=version, channel="batch", rows=predicted)
    if refused:
        batch_rows_total.labels(model, "refused").inc(refused)


# ------------------------------------------------------------------------------
# Celery
# ------------------------------------------------------------------------------
def task_finished(*, task: str, state: str) -> None:
    tasks_total.labels(task, state).inc()
    if state == "failure":
        task_failures_total.labels(task).inc()
