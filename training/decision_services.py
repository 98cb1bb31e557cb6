"""The closed loop's decisions after the holdout: shadow evidence, promotion (automatic or a staff click),
holding back, and rolling a new champion back when its first outcomes fall short."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from feedback import selectors as feedback_selectors
from ml import compare
from models_registry import challenger_services, transition_services
from models_registry import selectors as registry_selectors
from models_registry.models import ChallengerMode, RegisteredModel, Stage
from training import event_services, policy_services
from training.models import Retraining, RetrainingEvent

logger = logging.getLogger(__name__)
Kind = RetrainingEvent.Kind
Decision = Retraining.Decision


def shadow_start(*, registered_model: RegisteredModel) -> None:
    """Score production traffic with the staging version from now on (the challenger's shadow)."""
    challenger_services.challenger_mode_set(
        registered_model=RegisteredModel.objects.get(pk=registered_model.pk),
        mode=ChallengerMode.SHADOW,
        canary_percent=0,
        user=None,
    )


def shadow_stop(*, registered_model: RegisteredModel) -> None:
    registered_model = RegisteredModel.objects.get(pk=registered_model.pk)
    if registered_model.challenger_mode != ChallengerMode.OFF:
        challenger_services.challenger_mode_set(
            registered_model=registered_model, mode=ChallengerMode.OFF, canary_percent=0, user=None
        )


def describe(result: compare.PairedComparison) -> str:
    """One line of figures: both scores, the rows, the test and its p-value."""
    if result.n == 0 or result.p_value is None:
        return "no shared rows"
    word = "accuracy" if result.higher_is_better else "MAE"
    return (
        f"{word} {result.champion_score:.4g} → {result.challenger_score:.4g} on {result.n} rows, "
        f"{result.test} p = {result.p_value:.3g}"
    )


def holdout_problems(
    *, results: dict[str, compare.PairedComparison], margin: float, alpha: float, gate: list[str]
) -> list[str]:
    """Why the challenger may not go on: worse on the original holdout, not better enough, the gate."""
    problems = []
    original = results["original"]
    if original.worse_by_more_than(margin):
        problems.append(
            f"worse than the champion on the original holdout by more than the margin {margin:g} "
            f"({describe(original)})"
        )
    combined = results["combined"]
    if not combined.beats(margin=margin, alpha=alpha):
        problems.append(
            f"not better than the champion on the holdout by the margin {margin:g} at significance "
            f"{alpha:g} ({describe(combined)})"
        )
    problems.extend(f"quality gate: {reason}" for reason in gate)
    return problems


def _shadow_comparison(retraining: Retraining) -> compare.PairedComparison:
    return registry_selectors.challenger_comparison(
        registered_model=retraining.registered_model,
        champion=retraining.champion,
        challenger=retraining.challenger,
        since=retraining.finished_at,
    ).paired


def _claim(
    retraining: Retraining, *, from_decisions: tuple[str, ...], to: str, figures: dict[str, Any]
) -> bool:
    """Move the decision on with a conditional UPDATE: of two sweeps at once, one acts."""
    return (
        Retraining.objects.filter(pk=retraining.pk, decision__in=from_decisions).update(
            decision=to, figures=event_services.plain(figures), decided_at=timezone.now()
        )
        == 1
    )


def _hold_back(
    retraining: Retraining, *, from_decisions: tuple[str, ...], why: str, figures: dict[str, Any]
) -> None:
    with transaction.atomic():
        if not _claim(retraining, from_decisions=from_decisions, to=Decision.HELD_BACK, figures=figures):
            return
        shadow_stop(registered_model=retraining.registered_model)
        event_services.retraining_event_record(
            registered_model=retraining.registered_model,
            retraining=retraining,
            kind=Kind.HELD_BACK,
            message=f"{retraining.challenger} held back in staging: {why}.",
            figures=figures,
        )


def _promote(
    retraining: Retraining,
    *,
    from_decisions: tuple[str, ...],
    user: AbstractBaseUser | None,
    figures: dict[str, Any],
) -> bool:
    """Put the challenger in production; False when the gate refuses it now (it is then held back)."""
    policy = policy_services.retraining_policy_get(registered_model=retraining.registered_model)
    champion = retraining.champion
    predecessor = policy_services.live_reading(policy=policy, version=champion)
    figures = {**figures, "predecessor_live": predecessor.as_dict()}
    who = "a staff member" if user is not None else "the retraining policy"
    try:
        with transaction.atomic():
            if not _claim(retraining, from_decisions=from_decisions, to=Decision.PROMOTED, figures=figures):
                return False
            transition_services.model_version_transition(
                model_version=retraining.challenger,
                to_stage=Stage.PRODUCTION,
                user=user,
                reason=f"Retraining {retraining.pk}: promoted by {who}.",
            )
            shadow_stop(registered_model=retraining.registered_model)
            event_services.retraining_event_record(
                registered_model=retraining.registered_model,
                retraining=retraining,
                kind=Kind.PROMOTED,
                message=(
                    f"{retraining.challenger} replaces {champion} in production, promoted by {who} "
                    f"(shadow: {describe(_comparison_of(figures))})."
                ),
                figures=figures,
            )
    except transition_services.QualityGateError as exc:
        _hold_back(retraining, from_decisions=from_decisions, why="; ".join(exc.reasons), figures=figures)
        return False
    return True


def _comparison_of(figures: dict[str, Any]) -> compare.PairedComparison:
    shadow = dict(figures.get("shadow") or {})
    shadow.pop("improvement", None)
    if not shadow:
        return compare.PairedComparison("mcnemar", 0, None, None, True, None)
    return compare.PairedComparison(**shadow)


def retrainings_decide() -> list[int]:
    """Decide every shadowing challenger whose shadow predictions have enough outcomes; returns their ids.

    Promoted (or awaiting a staff click) when it beats the champion on the shadow rows by the margin,
    significantly; held back otherwise, or when the champion is no longer in production.
    """
    decided = []
    shadowing = Retraining.objects.filter(decision=Decision.SHADOWING).select_related(
        "registered_model", "champion", "challenger"
    )
    for retraining in shadowing:
        policy = policy_services.retraining_policy_get(registered_model=retraining.registered_model)
        figures = dict(retraining.figures)
        if retraining.champion.stage != Stage.PRODUCTION or retraining.challenger.stage != Stage.STAGING:
            _hold_back(
                retraining,
                from_decisions=(Decision.SHADOWING,),
                why="the champion or the challenger changed stage while the shadow ran",
                figures=figures,
            )
            decided.append(retraining.pk)
            continue
        shadow = _shadow_comparison(retraining)
        if shadow.n < policy.shadow_min_labels:
            continue
        figures["shadow"] = shadow.as_dict()
        decided.append(retraining.pk)
        if not shadow.beats(margin=policy.margin, alpha=policy.alpha):
            _hold_back(
                retraining,
                from_decisions=(Decision.SHADOWING,),
                why=(
                    f"not better than the champion on its shadow predictions by the margin {policy.margin:g} "
                    f"at significance {policy.alpha:g} ({describe(shadow)})"
                ),
                figures=figures,
            )
        elif policy.auto_promote:
            _promote(retraining, from_decisions=(Decision.SHADOWING,), user=None, figures=figures)
        else:
            with transaction.atomic():
                if _claim(
                    retraining,
                    from_decisions=(Decision.SHADOWING,),
                    to=Decision.AWAITING_APPROVAL,
                    figures=figures,
                ):
                    event_services.retraining_event_record(
                        registered_model=retraining.registered_model,
                        retraining=retraining,
                        kind=Kind.AWAITING_APPROVAL,
                        message=(
                            f"{retraining.challenger} beats {retraining.champion} on its shadow predictions "
                            f"({describe(shadow)}); waiting for a staff member to promote it."
                        ),
                        figures=figures,
                    )
    return decided


def retraining_approve(*, retraining: Retraining, user: AbstractBaseUser) -> Retraining:
    """A staff click promotes a challenger awaiting approval (the gate still applies)."""
    if not getattr(user, "is_staff", False):
        raise ValidationError("Only staff members may promote a challenger.")
    if retraining.decision != Decision.AWAITING_APPROVAL:
        raise ValidationError(
            f"Retraining {retraining.pk} is not awaiting approval "
            f"({retraining.get_decision_display().lower()})."
        )
    if not _promote(
        retraining, from_decisions=(Decision.AWAITING_APPROVAL,), user=user, figures=retraining.figures
    ):
        retraining.refresh_from_db()
        if retraining.decision == Decision.HELD_BACK:
            raise ValidationError(
                f"Retraining {retraining.pk}'s challenger failed the quality gate; it was held back."
            )
    retraining.refresh_from_db()
    return retraining


def champions_watch() -> list[int]:
    """Roll back a loop-promoted champion whose first outcomes score below its predecessor's by the margin.

    Watches each PROMOTED retraining whose challenger is still in production until the challenger has
    `rollback_labels` outcomes; then either rolls back (to the predecessor) or records that the watch passed.
    Returns the ids rolled back.
    """
    rolled = []
    promoted = Retraining.objects.filter(
        decision=Decision.PROMOTED, challenger__stage=Stage.PRODUCTION
    ).select_related("registered_model", "champion", "challenger")
    for retraining in promoted:
        figures = dict(retraining.figures)
        if "watch" in figures:
            continue
        policy = policy_services.retraining_policy_get(registered_model=retraining.registered_model)
        first = feedback_selectors.version_first_quality(
            version=retraining.challenger, first_n=policy.rollback_labels
        )
        if first["n"] < policy.rollback_labels:
            continue
        value = first.get(policy.metric)
        before = (figures.get("predecessor_live") or {}).get("value")
        higher = policy_services.higher_is_better(task=retraining.challenger.task, metric=policy.metric)
        worse = (
            value is not None
            and before is not None
            and (value < before - policy.margin if higher else value > before + policy.margin)
        )
        figures["watch"] = {"metric": policy.metric, "value": value, "n": first["n"], "predecessor": before}
        if not worse:
            Retraining.objects.filter(pk=retraining.pk).update(figures=event_services.plain(figures))
            continue
        why = (
            f"live {policy.metric} {value:.4g} over its first {first['n']} outcomes against "
            f"{before:.4g} for {retraining.champion} before it, worse by more than the margin "
            f"{policy.margin:g}"
        )
        try:
            with transaction.atomic():
                if not _claim(
                    retraining, from_decisions=(Decision.PROMOTED,), to=Decision.ROLLED_BACK, figures=figures
                ):
                    continue
                transition_services.model_version_rollback(
                    registered_model=retraining.registered_model,
                    user=None,
                    reason=f"Automatic rollback by the retraining policy: {why}.",
                )
                event_services.retraining_event_record(
                    registered_model=retraining.registered_model,
                    retraining=retraining,
                    kind=Kind.ROLLED_BACK,
                    message=f"{retraining.challenger} rolled back to {retraining.champion}: {why}.",
                    figures=figures,
                )
        except transition_services.QualityGateError as exc:
            _rollback_refused(retraining, figures=figures, why=why, reasons=exc.reasons)
            continue
        rolled.append(retraining.pk)
    return rolled


def _rollback_refused(
    retraining: Retraining, *, figures: dict[str, Any], why: str, reasons: list[str]
) -> None:
    """The predecessor misses the quality gate now (its thresholds rose since it served): a rollback is
    forced only by staff, with a reason, so the watch records the refusal and leaves the champion."""
    figures["watch"]["rollback_refused"] = reasons
    Retraining.objects.filter(pk=retraining.pk).update(figures=event_services.plain(figures))
    event_services.retraining_event_record(
        registered_model=retraining.registered_model,
        retraining=retraining,
        kind=Kind.REFUSED,
        message=f"{retraining.challenger} was not rolled back to {retraining.champion} ({why}): "
        f"{retraining.champion} misses the quality gate ({'; '.join(reasons)}). Staff can roll back with a "
        "forced reason from the model page.",
        figures=figures,
    )
