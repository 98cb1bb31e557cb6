"""Retraining policies: their defaults, validation and storage, and reading a model's live metric."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from feedback import selectors as feedback_selectors
from models_registry.models import ModelVersion, RegisteredModel, Task
from monitoring import drift_selectors
from training.models import RetrainingPolicy, Window

#: Live metrics a policy may watch, and whether higher is better.
POLICY_METRICS: dict[str, dict[str, bool]] = {
    Task.CLASSIFICATION: {"accuracy": True, "f1_macro": True},
    Task.REGRESSION: {"mae": False, "rmse": False},
}
DEFAULT_METRIC = {Task.CLASSIFICATION: "accuracy", Task.REGRESSION: "mae"}
#: Fields a policy update may set, with (kind, lower bound, upper bound) checks.
_BOUNDS: dict[str, tuple[type, float, float]] = {
    "min_labels": (int, 1, 1_000_000),
    "last_n": (int, 1, feedback_selectors.LAST_N_MAX),
    "cooldown_minutes": (int, 0, 60 * 24 * 365),
    "margin": (float, 0.0, 0.99),
    "alpha": (float, 0.0001, 0.5),
    "max_per_day": (int, 1, 100),
    "recent_holdout_share": (float, 0.05, 0.9),
    "recent_weight": (float, 1.0, 100.0),
    "feedback_rows": (int, 10, 1_000_000),
    "shadow_min_labels": (int, 1, 1_000_000),
    "rollback_labels": (int, 1, 1_000_000),
}
FIELDS = ("enabled", "metric", "threshold", "window", "auto_promote", "trigger_on_drift", *_BOUNDS)


def higher_is_better(*, task: str, metric: str) -> bool:
    return POLICY_METRICS.get(task, {}).get(metric, True)


def _task(registered_model: RegisteredModel) -> str:
    return registered_model.task or Task.CLASSIFICATION


def retraining_policy_get(*, registered_model: RegisteredModel) -> RetrainingPolicy:
    """The model's policy, or an unsaved one with the defaults (off) when none was set."""
    found = RetrainingPolicy.objects.filter(registered_model=registered_model).first()
    if found is not None:
        return found
    task = _task(registered_model)
    metric = DEFAULT_METRIC[task]
    champion = registered_model.versions.filter(stage="production").only("metrics").first()
    holdout = (champion.metrics or {}).get(metric) if champion is not None else None
    if holdout is None:
        threshold = 0.8 if task == Task.CLASSIFICATION else 1.0
    elif higher_is_better(task=task, metric=metric):
        # Five points under the champion's holdout figure: retraining starts on a real drop, not on noise.
        threshold = round(max(0.0, holdout - 0.05), 4)
    else:
        threshold = round(holdout * 1.2, 6)
    return RetrainingPolicy(registered_model=registered_model, metric=metric, threshold=threshold)


def _number(name: str, value: Any, kind: type, low: float, high: float) -> tuple[Any, str | None]:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None, f"'{name}' must be a number."
    try:
        number = float(value)
    except ValueError:
        return None, f"'{name}' must be a number; got {str(value)[:40]!r}."
    if not math.isfinite(number):
        return None, f"'{name}' must be a finite number."
    if kind is int:
        if number != int(number):
            return None, f"'{name}' must be a whole number."
        number = int(number)
    if not low <= number <= high:
        return None, f"'{name}' must be from {low:g} to {high:g}; got {number:g}."
    return number, None


def _boolean(name: str, value: Any) -> tuple[bool | None, str | None]:
    if isinstance(value, bool):
        return value, None
    if value in ("true", "True", "on", "1"):
        return True, None
    if value in ("false", "False", "off", "0", ""):
        return False, None
    return None, f"'{name}' must be true or false."


def retraining_policy_set(
    *, registered_model: RegisteredModel, data: Mapping[str, Any], user: AbstractBaseUser | None
) -> RetrainingPolicy:
    """Change the fields given in `data` (the others keep their value) and save the policy.

    Raises ValidationError naming every bad field (see retraining_policy_check); nothing is saved then.
    """
    policy = retraining_policy_check(registered_model=registered_model, data=data)
    policy.updated_by = user if user is not None and user.is_authenticated else None
    with transaction.atomic():
        policy.save()
    return policy


def retraining_policy_check(
    *, registered_model: RegisteredModel, data: Mapping[str, Any]
) -> RetrainingPolicy:
    """The policy with `data` applied, unsaved; raises ValidationError naming every bad field: unknown
    fields, a metric not of the model's task, a threshold outside what the metric can take, numbers out of
    range, enabling a model without a task."""
    policy = retraining_policy_get(registered_model=registered_model)
    task = _task(registered_model)
    problems: dict[str, list[str]] = {}
    if not isinstance(data, Mapping):
        raise ValidationError({"non_field_errors": ["Send the policy as a JSON object."]})
    for name in data:
        if name not in FIELDS:
            problems.setdefault(name, []).append(f"Unknown field; the policy has: {', '.join(FIELDS)}.")
    for name in ("enabled", "auto_promote", "trigger_on_drift"):
        if name in data:
            value, problem = _boolean(name, data[name])
            if problem:
                problems.setdefault(name, []).append(problem)
            else:
                setattr(policy, name, value)
    if "metric" in data:
        metrics = POLICY_METRICS[task]
        if data["metric"] not in metrics:
            problems.setdefault("metric", []).append(f"Choose a live metric of {task}: {', '.join(metrics)}.")
        else:
            policy.metric = data["metric"]
    if "window" in data:
        if data["window"] not in Window.values:
            problems.setdefault("window", []).append(f"Choose one of: {', '.join(Window.values)}.")
        else:
            policy.window = data["window"]
    for name, (kind, low, high) in _BOUNDS.items():
        if name in data:
            value, problem = _number(name, data[name], kind, low, high)
            if problem:
                problems.setdefault(name, []).append(problem)
            else:
                setattr(policy, name, value)
    if "threshold" in data:
        high = 1.0 if higher_is_better(task=task, metric=policy.metric) else 1e12
        value, problem = _number("threshold", data["threshold"], float, 0.0, high)
        if problem:
            problems.setdefault("threshold", []).append(problem)
        else:
            policy.threshold = value
    if policy.enabled and not registered_model.task:
        problems.setdefault("enabled", []).append("The model has no version yet, so nothing to retrain.")
    if problems:
        raise ValidationError(problems)
    return policy


@dataclass(frozen=True)
class LiveReading:
    """The policy's metric for a version over the policy's window, and how many outcomes it rests on."""

    metric: str
    value: float | None
    n: int
    window: str
    higher_is_better: bool

    def below(self, threshold: float) -> bool:
        if self.value is None:
            return False
        return self.value < threshold if self.higher_is_better else self.value > threshold

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "n": self.n, "window": self.window}


def live_reading(*, policy: RetrainingPolicy, version: ModelVersion) -> LiveReading:
    if policy.window == Window.LAST:
        # Its answers in shadow count too: a champion fresh from shadow is judged at once, not after
        # `last_n` new outcomes (see feedback.selectors.version_answers_quality).
        live = feedback_selectors.version_answers_quality(version=version, last_n=policy.last_n)
    else:
        live = feedback_selectors.version_quality(version=version, window=policy.window)["live"]
    return LiveReading(
        metric=policy.metric,
        value=live.get(policy.metric),
        n=int(live.get("n") or 0),
        window=policy.window if policy.window != Window.LAST else f"last {policy.last_n}",
        higher_is_better=higher_is_better(task=version.task, metric=policy.metric),
    )


@dataclass(frozen=True)
class DriftReading:
    """The champion's latest drift report, as the policy's drift trigger reads it."""

    drifting: bool
    share: float
    drifted: list[str]
    rows: int
    window_end: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "drifting": self.drifting,
            "share": self.share,
            "drifted": self.drifted,
            "rows": self.rows,
            "window_end": self.window_end,
        }

    @property
    def reason(self) -> str:
        return (
            f"{len(self.drifted)} feature(s) drifted ({', '.join(self.drifted[:5])}) in the drift report "
            f"ending {self.window_end} ({self.rows} predictions, share {self.share:.0%})"
        )


def drift_reading(*, policy: RetrainingPolicy, version: ModelVersion) -> DriftReading | None:
    """The version's latest drift report when the policy retrains on drift and the report finds the version
    drifting; None otherwise (trigger off, no report yet, or no drift)."""
    if not policy.trigger_on_drift:
        return None
    report = drift_selectors.drift_report_latest(model_version=version)
    if report is None or not report.drifting:
        return None
    return DriftReading(
        drifting=True,
        share=report.share_drifted,
        drifted=[f["feature"] for f in report.features if f.get("drifted")],
        rows=report.rows,
        window_end=report.window_end.isoformat(),
    )
