"""Stage transitions: the quality gate, promotion, archiving and rollback, each recorded and announced."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from models_registry import services, webhook_services
from models_registry.models import (
    HIGHER_IS_BETTER,
    ModelVersion,
    RegisteredModel,
    Stage,
    StageTransition,
    WebhookEvent,
    min_metrics_normalize,
)
from models_registry.triton import deployment as triton_deployment

logger = logging.getLogger(__name__)
REASON_MAX_LENGTH = 2000

# Which stages each target stage may be reached from through model_version_transition.
ALLOWED_SOURCES: dict[str, tuple[str, ...]] = {
    Stage.STAGING: (Stage.NONE, Stage.ARCHIVED),
    Stage.PRODUCTION: (Stage.NONE, Stage.STAGING, Stage.ARCHIVED),
    Stage.ARCHIVED: (Stage.NONE, Stage.STAGING, Stage.PRODUCTION),
}
PROMOTION_EVENTS = {
    Stage.STAGING: WebhookEvent.VERSION_PROMOTED,
    Stage.PRODUCTION: WebhookEvent.VERSION_PROMOTED,
    Stage.ARCHIVED: WebhookEvent.VERSION_ARCHIVED,
}


class QualityGateError(ValidationError):
    """Promotion to production refused because metrics miss the model's thresholds; `reasons` lists them."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(
            ["The version does not pass the quality gate: " + "; ".join(reasons) + "."], code="quality_gate"
        )


def quality_gate_check(*, model_version: ModelVersion) -> list[str]:
    """The reasons the version may not go to production; empty when it passes (or there are no thresholds)."""
    registered = model_version.registered_model
    try:
        thresholds = min_metrics_normalize(
            task=registered.task or model_version.task, value=registered.min_metrics
        )
    except ValidationError as exc:
        return [f"the model's thresholds are invalid ({' '.join(exc.messages)})"]
    reasons = []
    for metric, bound in sorted(thresholds.items()):
        value = (model_version.metrics or {}).get(metric)
        ((direction, limit),) = bound.items()
        word = "at least" if direction == HIGHER_IS_BETTER else "at most"
        if value is None:
            reasons.append(f"{metric} was not measured for this version (required: {word} {limit:g})")
        elif direction == HIGHER_IS_BETTER and value < limit:
            reasons.append(f"{metric} is {value:.4g}, below the minimum {limit:g}")
        elif direction != HIGHER_IS_BETTER and value > limit:
            reasons.append(f"{metric} is {value:.4g}, above the maximum {limit:g}")
    return reasons


def _locked(model_version: ModelVersion) -> tuple[RegisteredModel, ModelVersion]:
    # Every transition of one model locks its RegisteredModel row first, so they run one at a time;
    # the partial unique index on production stays the last line of defence.
    registered = RegisteredModel.objects.select_for_update().get(pk=model_version.registered_model_id)
    fresh = (
        ModelVersion.objects.select_for_update().select_related("registered_model").get(pk=model_version.pk)
    )
    return registered, fresh


def _record(
    *,
    version: ModelVersion,
    to_stage: str,
    action: str,
    user: AbstractBaseUser | None,
    reason: str,
    forced: bool = False,
) -> StageTransition:
    from_stage = version.stage
    version.stage = to_stage
    version.save(update_fields=["stage"])
    return StageTransition.objects.create(
        model_version=version,
        from_stage=from_stage,
        to_stage=to_stage,
        action=action,
        reason=reason,
        forced=forced,
        user=user if user is not None and user.is_authenticated else None,
    )


def _announce(
    *,
    registered: RegisteredModel,
    event: str,
    version: ModelVersion,
    transition: StageTransition,
    extra: dict,
) -> None:
    payload = {
        **services.model_version_payload(version),
        "transition": {
            "from_stage": transition.from_stage,
            "to_stage": transition.to_stage,
            "action": transition.action,
            "reason": transition.reason,
            "forced": transition.forced,
            "user": transition.user.get_username() if transition.user else None,
        },
        **extra,
    }
    webhook_services.webhook_event_emit(
        registered_model=registered,
        event=event,
        payload=payload,
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"mlops-stage-transition:{transition.pk}"),
    )


def _announce_archived(
    *,
    registered: RegisteredModel,
    archived: list[tuple[ModelVersion, StageTransition]],
    replaced_by: ModelVersion,
) -> None:
    """Announce each version a promotion or rollback moved out of production."""
    for previous, transition in archived:
        _announce(
            registered=registered,
            event=WebhookEvent.VERSION_ARCHIVED,
            version=previous,
            transition=transition,
            extra={"replaced_by": replaced_by.version},
        )


def _reason_clean(reason: Any) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise ValidationError("The reason must be text.")
    reason = reason.strip()
    if len(reason) > REASON_MAX_LENGTH:
        raise ValidationError(f"The reason is too long: at most {REASON_MAX_LENGTH} characters.")
    return reason


def _force_check(*, force: bool, user: AbstractBaseUser | None, reason: str, what: str) -> None:
    """Forcing past the quality gate is for staff, with a written reason; the same rule for every action."""
    if not force:
        return
    if user is None or not getattr(user, "is_staff", False):
        raise ValidationError(f"Only staff members may force {what} past the quality gate.")
    if not reason:
        raise ValidationError(f"Forcing {what} past the quality gate needs a written reason.")


def _gate_noted(reason: str, failing: list[str]) -> str:
    return f"{reason}\n\nForced past the quality gate ({'; '.join(failing)})."


def transition_check(*, model_version: ModelVersion, to_stage: str) -> None:
    """Raise ValidationError when the version cannot move to `to_stage` from its stage (gate aside)."""
    if to_stage not in ALLOWED_SOURCES:
        raise ValidationError(
            f"Unknown target stage {to_stage!r}. Choose one of: {', '.join(ALLOWED_SOURCES)}."
        )
    if model_version.stage == to_stage:
        raise ValidationError(f"{model_version} is already in {model_version.get_stage_display().lower()}.")
    if model_version.stage not in ALLOWED_SOURCES[to_stage]:
        raise ValidationError(
            f"{model_version} is in {model_version.get_stage_display().lower()} and cannot move to "
            f"{Stage(to_stage).label.lower()}: promote another version to production or roll back."
        )


def transition_changes_production(*, model_version: ModelVersion, to_stage: str) -> bool:
    """Whether the move changes what serves production: a promotion to it, or archiving its version."""
    return to_stage == Stage.PRODUCTION or (
        to_stage == Stage.ARCHIVED and model_version.stage == Stage.PRODUCTION
    )


@dataclass(frozen=True)
class ProductionChange:
    """What an action that changes production would do, for the page that asks to confirm it.

    `current` serves production now and `new` afterwards (None when archiving leaves none);
    `gate_failures` are the reasons `new` misses the quality gate, empty when it passes.
    """

    registered_model: RegisteredModel
    current: ModelVersion | None
    new: ModelVersion | None
    gate_failures: list[str]
    label: str


def transition_preview(*, model_version: ModelVersion, to_stage: str) -> ProductionChange:
    """The change a move to `to_stage` would make; ValidationError when the move is not possible."""
    transition_check(model_version=model_version, to_stage=to_stage)
    registered = model_version.registered_model
    current = registered.versions.filter(stage=Stage.PRODUCTION).first()
    if to_stage == Stage.PRODUCTION:
        return ProductionChange(
            registered_model=registered,
            current=current,
            new=model_version,
            gate_failures=quality_gate_check(model_version=model_version),
            label=f"Promote v{model_version.version} to production",
        )
    stage_label = "Archive" if to_stage == Stage.ARCHIVED else "Promote"
    target = "" if to_stage == Stage.ARCHIVED else f" to {Stage(to_stage).label.lower()}"
    return ProductionChange(
        registered_model=registered,
        current=current,
        new=None if model_version.stage == Stage.PRODUCTION else current,
        gate_failures=[],
        label=f"{stage_label} v{model_version.version}{target}",
    )


def rollback_preview(*, registered_model: RegisteredModel) -> ProductionChange:
    """The change a rollback would make; ValidationError when there is no earlier production version."""
    target = rollback_target(registered_model=registered_model)
    if target is None:
        raise _nothing_to_roll_back(registered_model)
    current = registered_model.versions.filter(stage=Stage.PRODUCTION).first()
    return ProductionChange(
        registered_model=registered_model,
        current=current,
        new=target,
        gate_failures=quality_gate_check(model_version=target),
        label=rollback_label(target=target, current=current),
    )


def model_version_transition(
    *,
    model_version: ModelVersion,
    to_stage: str,
    user: AbstractBaseUser | None,
    reason: str = "",
    force: bool = False,
) -> ModelVersion:
    """Move a version to staging, production or archived, and record who, when, from, to and why.

    Promotion to production archives the previous production version in the same transaction and must
    pass the quality gate: otherwise QualityGateError (with `reasons`), unless a staff user forces it
    with a written reason, which is recorded with forced=True. Other refusals raise ValidationError.
    After commit, MLflow's aliases are synced and webhooks are sent.
    """
    reason = _reason_clean(reason)
    _force_check(force=force, user=user, reason=reason, what="a promotion")

    with transaction.atomic():
        registered, version = _locked(model_version)
        transition_check(model_version=version, to_stage=to_stage)
        failing: list[str] = []
        displaced: list[tuple[ModelVersion, StageTransition]] = []
        if to_stage == Stage.PRODUCTION:
            failing = quality_gate_check(model_version=version)
            if failing and not force:
                raise QualityGateError(failing)
            current = ModelVersion.objects.select_for_update().filter(
                registered_model=registered, stage=Stage.PRODUCTION
            )
            for previous in current:
                displaced.append(
                    (
                        previous,
                        _record(
                            version=previous,
                            to_stage=Stage.ARCHIVED,
                            action=StageTransition.Action.ARCHIVE,
                            user=user,
                            reason=f"Replaced in production by version {version.version}.",
                        ),
                    )
                )
        action = (
            StageTransition.Action.ARCHIVE if to_stage == Stage.ARCHIVED else StageTransition.Action.PROMOTE
        )
        transition = _record(
            version=version,
            to_stage=to_stage,
            action=action,
            user=user,
            reason=_gate_noted(reason, failing) if failing else reason,
            forced=bool(failing),
        )
        _announce_archived(registered=registered, archived=displaced, replaced_by=version)
        _announce(
            registered=registered,
            event=PROMOTION_EVENTS[to_stage],
            version=version,
            transition=transition,
            extra={"previous_production": [p.version for p, _ in displaced]}
            if to_stage == Stage.PRODUCTION
            else {},
        )
        services.model_aliases_sync_on_commit(registered_model_id=registered.pk)
        triton_deployment.triton_sync_on_commit(registered_model_id=registered.pk)
    return version


def rollback_target(*, registered_model: RegisteredModel) -> ModelVersion | None:
    """The version that was in production before the current one, from the transition history.

    After a rollback that is the version rolled back from, so the target may be newer than the current
    production version: rollback_label names which way it goes.
    """
    current = registered_model.versions.filter(stage=Stage.PRODUCTION).first()
    history = (
        StageTransition.objects.filter(
            model_version__registered_model=registered_model, to_stage=Stage.PRODUCTION
        )
        .select_related("model_version")
        .order_by("-created_at", "-id")
    )
    for transition in history:
        if current is None or transition.model_version_id != current.pk:
            return transition.model_version
    return None


def _nothing_to_roll_back(registered: RegisteredModel) -> ValidationError:
    return ValidationError(f"Model {registered.name!r} has no earlier production version to roll back to.")


def rollback_goes_back(*, target: ModelVersion, current: ModelVersion | None) -> bool:
    """Whether the rollback returns to an older version than the one in production."""
    return current is not None and target.version < current.version


def rollback_label(*, target: ModelVersion, current: ModelVersion | None) -> str:
    """The rollback named for what it does: back to an older version, or an earlier one returned."""
    if rollback_goes_back(target=target, current=current):
        return f"Roll back to v{target.version}"
    return f"Return v{target.version} to production"


def model_version_rollback(
    *,
    registered_model: RegisteredModel,
    user: AbstractBaseUser | None,
    reason: str = "",
    force: bool = False,
) -> ModelVersion:
    """Put the previous production version back in production and archive the current one.

    The target must pass the quality gate as a promotion must (thresholds may have changed since it
    served): otherwise QualityGateError, unless a staff user forces it with a written reason, recorded
    with forced=True. Raises ValidationError when the model has no earlier production version.
    """
    reason = _reason_clean(reason)
    _force_check(force=force, user=user, reason=reason, what="a rollback")
    with transaction.atomic():
        registered = RegisteredModel.objects.select_for_update().get(pk=registered_model.pk)
        target = rollback_target(registered_model=registered)
        if target is None:
            raise _nothing_to_roll_back(registered)
        target = ModelVersion.objects.select_for_update().select_related("registered_model").get(pk=target.pk)
        failing = quality_gate_check(model_version=target)
        if failing and not force:
            raise QualityGateError(failing)
        current = list(
            ModelVersion.objects.select_for_update().filter(
                registered_model=registered, stage=Stage.PRODUCTION
            )
        )
        goes_back = rollback_goes_back(target=target, current=current[0] if current else None)
        demoted = []
        for previous in current:
            note = (
                f"Rolled back to version {target.version}."
                if goes_back
                else f"Replaced in production by version {target.version}, returned by a rollback."
            )
            demoted.append(
                (
                    previous,
                    _record(
                        version=previous,
                        to_stage=Stage.ARCHIVED,
                        action=StageTransition.Action.ROLLBACK,
                        user=user,
                        reason=note + (f" {reason}" if reason else ""),
                    ),
                )
            )
        transition = _record(
            version=target,
            to_stage=Stage.PRODUCTION,
            action=StageTransition.Action.ROLLBACK,
            user=user,
            reason=_gate_noted(reason, failing) if failing else reason,
            forced=bool(failing),
        )
        _announce_archived(registered=registered, archived=demoted, replaced_by=target)
        _announce(
            registered=registered,
            event=WebhookEvent.VERSION_ROLLED_BACK,
            version=target,
            transition=transition,
            extra={"rolled_back_from": [p.version for p, _ in demoted]},
        )
        services.model_aliases_sync_on_commit(registered_model_id=registered.pk)
        triton_deployment.triton_sync_on_commit(registered_model_id=registered.pk)
    return target
