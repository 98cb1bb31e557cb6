"""The closed loop's job: trigger a retraining, derive its dataset, train the challenger, then hand it to
the holdout judgement (training.holdout_services). What happens after (shadow evidence, promotion,
rollback) is in training.decision_services."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from feedback import selectors as feedback_selectors
from jobs import engine
from ml.errors import ArtifactError, TrainingInputError
from models_registry.models import ModelVersion, RegisteredModel, Stage
from training import (
    decision_services,
    derive_services,
    event_services,
    holdout_services,
    policy_services,
    validation,
)
from training import services as training_services
from training.models import Retraining, RetrainingEvent, RetrainingPolicy, TrainingRun

logger = logging.getLogger(__name__)

Kind = RetrainingEvent.Kind
LEASE_SECONDS = 180
LEASE_RENEW_SECONDS = 30
MAX_ATTEMPTS = 3
STALE_QUEUED_MINUTES = 15
ACTIVE = (Retraining.Status.QUEUED, Retraining.Status.RUNNING)
UNDECIDED = (Retraining.Decision.SHADOWING, Retraining.Decision.AWAITING_APPROVAL)


class RetrainingRefused(ValidationError):
    """A guardrail refused to start a retraining; `reason` is its code (cooldown, daily_cap, running, …)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message, code=reason)


class TrainingBusy(Exception):
    """The challenger's training run is held by another worker (a re-sent run): try again later."""


def _enqueue(retraining_id: int) -> None:
    from training.tasks import retraining_run_task

    retraining_run_task.delay(retraining_id)


RETRAININGS = engine.JobSpec(
    model=Retraining,
    label="retraining",
    noun="retraining",
    enqueue=_enqueue,
    lease_seconds=LEASE_SECONDS,
    renew_seconds=LEASE_RENEW_SECONDS,
    max_attempts=MAX_ATTEMPTS,
    stale_queued_minutes=STALE_QUEUED_MINUTES,
    task_name="training.tasks.retraining_run_task",
    transient_errors=(*training_services.TRANSIENT_ERRORS, TrainingBusy),
    select_related=("registered_model", "champion__training_run", "champion__dataset_version__dataset"),
)


def _refuse(registered_model: RegisteredModel, trigger: str, reason: str, message: str) -> RetrainingRefused:
    # Alerts and staff see why nothing started; the minute-by-minute schedule would only repeat itself.
    if trigger in (Retraining.Trigger.ALERT, Retraining.Trigger.MANUAL):
        event_services.retraining_event_record(
            registered_model=registered_model,
            retraining=None,
            kind=Kind.REFUSED,
            message=message,
            figures={"trigger": trigger, "reason": reason},
        )
    return RetrainingRefused(reason, message)


def retraining_start(
    *,
    registered_model: RegisteredModel,
    trigger: str,
    reason: str,
    user: AbstractBaseUser | None = None,
    params: dict[str, Any] | None = None,
    figures: dict[str, Any] | None = None,
) -> Retraining:
    """Queue a retraining of the model's production version, unless a guardrail refuses.

    Guardrails, in order: automatic triggers need the policy enabled; a production version trained here
    (the loop needs its training data); no retraining queued or running (also a partial unique index, so
    two triggers at once start one); no challenger still being judged; the cooldown since the last one
    (staff may start one inside it); the daily cap; the policy's minimum number of outcomes. Raises
    RetrainingRefused naming the guardrail. `params` replaces the champion's hyperparameters (staff).
    """
    policy = policy_services.retraining_policy_get(registered_model=registered_model)
    name = registered_model.name
    if trigger != Retraining.Trigger.MANUAL and not policy.enabled:
        raise _refuse(
            registered_model, trigger, "disabled", f"Automatic retraining is off for model '{name}'."
        )
    champion = (
        ModelVersion.objects.select_related("training_run", "dataset_version")
        .filter(registered_model=registered_model, stage=Stage.PRODUCTION)
        .first()
    )
    if champion is None:
        raise _refuse(registered_model, trigger, "no_champion", f"Model '{name}' has no production version.")
    if champion.training_run is None or champion.dataset_version is None:
        raise _refuse(
            registered_model,
            trigger,
            "not_trained_here",
            f"{champion} was uploaded, not trained here: the loop has no training data to extend.",
        )
    if params is not None:
        problems = validation.run_inputs_problems(
            params=params,
            algorithm=champion.algorithm,
            task=champion.task,
            seed=champion.training_run.seed,
            test_size=champion.training_run.test_size,
            target_column=champion.target_column,
        )
        if problems:
            raise ValidationError(problems)
    now = timezone.now()
    retrainings = Retraining.objects.filter(registered_model=registered_model)
    active = retrainings.filter(status__in=ACTIVE).first()
    if active is not None:
        raise _refuse(
            registered_model, trigger, "running", f"Retraining {active.pk} of '{name}' is under way."
        )
    undecided = retrainings.filter(decision__in=UNDECIDED).first()
    if undecided is not None:
        raise _refuse(
            registered_model,
            trigger,
            "undecided",
            f"The challenger of retraining {undecided.pk} is still being judged "
            f"({undecided.get_decision_display().lower()}).",
        )
    last = retrainings.order_by("-created_at").first()
    cooldown_ends = last.created_at + timedelta(minutes=policy.cooldown_minutes) if last else None
    if trigger != Retraining.Trigger.MANUAL and cooldown_ends is not None and cooldown_ends > now:
        raise _refuse(
            registered_model,
            trigger,
            "cooldown",
            f"Model '{name}' retrained at {last.created_at:%Y-%m-%d %H:%M} UTC; the cooldown of "
            f"{policy.cooldown_minutes} minutes ends at {cooldown_ends:%H:%M} UTC.",
        )
    today = retrainings.filter(created_at__gte=now - timedelta(days=1)).count()
    if today >= policy.max_per_day:
        raise _refuse(
            registered_model,
            trigger,
            "daily_cap",
            f"Model '{name}' retrained {today} times in the last 24 hours (the cap is {policy.max_per_day}).",
        )
    labelled = feedback_selectors.labelled_count(registered_model=registered_model)
    if labelled < policy.min_labels:
        raise _refuse(
            registered_model,
            trigger,
            "min_labels",
            f"Model '{name}' has {labelled} labelled predictions; the policy needs {policy.min_labels}.",
        )
    try:
        with transaction.atomic():
            retraining = Retraining.objects.create(
                registered_model=registered_model,
                trigger=trigger,
                reason=reason[:2000],
                requested_by=user if user is not None and user.is_authenticated else None,
                champion=champion,
                figures=event_services.plain(
                    {**(figures or {}), "params": params} if params else (figures or {})
                ),
            )
            event_services.retraining_event_record(
                registered_model=registered_model,
                retraining=retraining,
                kind=Kind.TRIGGERED,
                message=f"{retraining.get_trigger_display()}: {reason}",
                figures={"trigger": trigger, "champion": champion.version, **(figures or {})},
            )
            retraining_id = retraining.pk
            transaction.on_commit(lambda: _enqueue(retraining_id), robust=True)
    except IntegrityError:
        raise _refuse(
            registered_model, trigger, "running", f"A retraining of '{name}' is under way."
        ) from None
    return retraining


def retraining_run(*, retraining_id: int) -> engine.JobOutcome:
    """Claim the retraining and take it as far as the holdout decision; idempotent and resumable.

    Each step is recorded on the job as it completes (dataset, run, challenger), so a retry after a
    crash resumes at the first step not done. The challenger's training run executes inline on this
    worker; if another worker holds it (the run's message was re-sent), the retraining waits for it.
    """
    outcome = engine.job_run(RETRAININGS, job_id=retraining_id, work=_work, reason=_failure_reason)
    if outcome.status == "failed":
        _failed_event(retraining_id, outcome.message)
    return outcome


def retraining_fail(*, retraining_id: int, message: str) -> bool:
    """Mark a retraining FAILED that no live attempt holds (its task gave up)."""
    marked = engine.job_fail(RETRAININGS, job_id=retraining_id, message=message)
    if marked:
        _failed_event(retraining_id, message)
    return marked


def retrainings_stale_requeue() -> list[int]:
    return engine.jobs_stale_requeue(RETRAININGS)


def _failed_event(retraining_id: int, message: str) -> None:
    retraining = Retraining.objects.select_related("registered_model").get(pk=retraining_id)
    event_services.retraining_event_record(
        registered_model=retraining.registered_model,
        retraining=retraining,
        kind=Kind.FAILED,
        message=f"Retraining {retraining_id} failed: {message}",
    )


def _failure_reason(exc: Exception) -> str | None:
    if isinstance(exc, TrainingInputError | ArtifactError | ValidationError):
        return "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"The stored file {exc} is missing from object storage."
    return None


def _work(attempt: engine.Attempt[Retraining]) -> None:
    with attempt.heartbeat():
        retraining = attempt.job
        if retraining.dataset_version_id is None:
            _derive(attempt)
        if retraining.training_run_id is None:
            _run_create(attempt)
        if retraining.challenger_id is None:
            _challenger_train(attempt)
        holdout_services.retraining_holdout_judge(attempt=attempt)


def _derive(attempt: engine.Attempt[Retraining]) -> None:
    retraining = attempt.job
    derived = derive_services.retraining_dataset_derive(retraining=retraining)
    version, lineage = derived.version, derived.lineage
    figures = {**retraining.figures, "plan": derived.plan.as_dict(), "lineage": lineage}
    attempt.write(dataset_version=version, step=Retraining.Step.TRAIN, figures=figures)
    retraining.dataset_version, retraining.figures = version, figures
    feedback = lineage["feedback"]
    event_services.retraining_event_record(
        registered_model=retraining.registered_model,
        retraining=retraining,
        kind=Kind.DATASET_DERIVED,
        message=(
            f"Dataset {version}: the {lineage['parent_rows']} original rows of "
            f"{retraining.champion.dataset_version} "
            f"and {feedback['rows']} labelled predictions (outcome ids {feedback['first_id']} to "
            f"{feedback['last_id']}, predicted {feedback['predicted_from'][:16]} to "
            f"{feedback['predicted_to'][:16]}; {feedback['duplicates_dropped']} repeats dropped). "
            f"{derived.held_out} of the newest are held out."
        ),
        figures={"dataset_version": version.version, "lineage": lineage},
    )


def _run_create(attempt: engine.Attempt[Retraining]) -> None:
    retraining = attempt.job
    champion = retraining.champion
    params = retraining.figures.get("params") or champion.training_run.params
    with transaction.atomic():
        run = training_services.training_run_create(
            dataset_version=retraining.dataset_version,
            model_name=retraining.registered_model.name,
            algorithm=champion.algorithm,
            params=params,
            created_by=None,
            target_column=champion.target_column,
            task=champion.task,
            seed=int(champion.seed if champion.seed is not None else champion.training_run.seed),
            test_size=float(champion.training_run.test_size),
            holdout=retraining.figures["plan"],
            enqueue=False,
        )
        # Fenced: should another attempt hold the retraining, the run is not recorded (nor kept).
        attempt.write(training_run=run)
    retraining.training_run = run


def _challenger_train(attempt: engine.Attempt[Retraining]) -> None:
    retraining = attempt.job
    run_id = retraining.training_run_id
    outcome = training_services.training_run_execute(run_id=run_id)
    if outcome.status in ("busy", "lost"):
        raise TrainingBusy(f"Training run {run_id} is held by another worker.")
    run = TrainingRun.objects.get(pk=run_id)
    if run.status == TrainingRun.Status.FAILED:
        raise TrainingInputError(f"The challenger's training run {run_id} failed: {run.error_message}")
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise TrainingBusy(f"Training run {run_id} is {run.status}.")
    challenger = ModelVersion.objects.select_related("registered_model").get(training_run_id=run_id)
    attempt.write(challenger=challenger, step=Retraining.Step.EVALUATE)
    retraining.challenger = challenger
    event_services.retraining_event_record(
        registered_model=retraining.registered_model,
        retraining=retraining,
        kind=Kind.TRAINED,
        message=f"Trained {challenger} ({challenger.algorithm}) in training run {run_id}.",
        figures={"version": challenger.version, "metrics": challenger.metrics},
    )


def retraining_policies_check() -> list[int]:
    """Start a retraining for each enabled policy whose live metric crossed its threshold, or, with
    trigger_on_drift, whose champion's latest drift report finds it drifting; returns their ids.

    Guardrails refuse quietly here (the check runs every minute); their refusals of alerts and staff
    clicks are logged.
    """
    started = []
    policies = RetrainingPolicy.objects.filter(enabled=True).select_related("registered_model")
    for policy in policies:
        registered_model = policy.registered_model
        champion = registered_model.versions.filter(stage=Stage.PRODUCTION).first()
        if champion is None:
            continue
        reading = policy_services.live_reading(policy=policy, version=champion)
        trigger = Retraining.Trigger.SCHEDULE
        figures: dict[str, Any] = {"live": reading.as_dict(), "threshold": policy.threshold}
        if reading.n >= policy.min_labels and reading.below(policy.threshold):
            reason = (
                f"live {policy.metric} {reading.value:.4g} over {reading.window} ({reading.n} outcomes) of "
                f"{champion} is {'below' if reading.higher_is_better else 'above'} the threshold "
                f"{policy.threshold:g}"
            )
        else:
            # Labels may come too late for the live metric; the drift report sees the inputs move now.
            drifted = policy_services.drift_reading(policy=policy, version=champion)
            if drifted is None:
                continue
            trigger = Retraining.Trigger.DRIFT
            reason = f"{champion} is drifting: {drifted.reason}"
            figures["drift"] = drifted.as_dict()
        try:
            retraining = retraining_start(
                registered_model=registered_model, trigger=trigger, reason=reason, figures=figures
            )
        except RetrainingRefused:
            continue
        started.append(retraining.pk)
    return started


def retraining_loop_check() -> dict[str, list[int]]:
    """The beat's pass over every model: triggers, shadow decisions, and the new champions' watch."""
    return {
        "started": retraining_policies_check(),
        "decided": decision_services.retrainings_decide(),
        "rolled_back": decision_services.champions_watch(),
    }
