"""Shadow scoring: the sweep that cuts production predictions into batches for the challenger, and the
leased job that scores one batch on a worker. Nothing here runs while a client waits for its answer.

Only page and API predictions are shadowed: batch rows store no inputs (`{}`: theirs stay in the job's
file), so there is nothing to give the challenger. Rows are taken by id after the challenger's previous
batch, from when it started (models_registry.selectors.challenger_start), and only once they are
SETTLE_SECONDS old: a request's transaction may still be open, and a batch must not end past rows that
are not yet visible.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

import numpy as np
from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from jobs import engine
from ml.errors import PredictionInputError
from mlops_site import rollups, storage
from models_registry import selectors as registry_selectors
from models_registry.models import ChallengerMode, RegisteredModel
from monitoring import drift_rollups
from predictions import model_cache, routing, services
from predictions.models import Channel, Prediction, ShadowBatch, ShadowPrediction
from predictions.validation import not_finite_rows

logger = logging.getLogger(__name__)

# A batch is scored in seconds; a lease this long survives a slow first load of the challenger's model.
LEASE_SECONDS = 120
MAX_ATTEMPTS = 3
STALE_QUEUED_MINUTES = 15
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (storage.StorageError, OperationalError, InterfaceError)
SHADOWED_CHANNELS = (Channel.PAGE, Channel.API)
SETTLE_SECONDS = 5
# Batches one sweep may cut per model: a backlog (a busy model, a worker that was down) drains quickly.
MAX_BATCHES_PER_SWEEP = 20


def _enqueue(batch_id: int) -> None:
    from predictions.tasks import shadow_batch_run_task

    shadow_batch_run_task.delay(batch_id)


SHADOWS = engine.JobSpec(
    model=ShadowBatch,
    label="shadow batch",
    noun="batch",
    # Looked up when called, so tests can send the batches elsewhere by replacing _enqueue.
    enqueue=lambda batch_id: _enqueue(batch_id),
    lease_seconds=LEASE_SECONDS,
    max_attempts=MAX_ATTEMPTS,
    stale_queued_minutes=STALE_QUEUED_MINUTES,
    task_name="predictions.tasks.shadow_batch_run_task",
    transient_errors=TRANSIENT_ERRORS,
    select_related=("challenger__registered_model", "champion"),
)


def batch_rows() -> int:
    return settings.SHADOW_BATCH_ROWS


def shadow_batches_create(*, now: dt.datetime | None = None) -> list[ShadowBatch]:
    """For every model in shadow mode with a champion and a challenger, cut the champion's new page and
    API predictions into batches of at most SHADOW_BATCH_ROWS and send each to a worker on commit.

    Idempotent: a batch starts after the challenger's previous one, and (challenger, first_id) is unique,
    so a sweep run twice, or two at once, never covers a row twice. Returns the batches created.
    """
    now = now or timezone.now()
    created: list[ShadowBatch] = []
    for registered in RegisteredModel.objects.filter(challenger_mode=ChallengerMode.SHADOW).order_by("pk"):
        created.extend(_batches_cut(registered, now=now))
    return created


def _batches_cut(registered: RegisteredModel, *, now: dt.datetime) -> list[ShadowBatch]:
    champion = registry_selectors.champion_of(registered)
    challenger = registry_selectors.challenger_of(registered)
    if champion is None or challenger is None:
        return []
    start = registry_selectors.challenger_start(registered_model=registered, challenger=challenger)
    pending = Prediction.objects.filter(
        model_version=champion,
        channel__in=SHADOWED_CHANNELS,
        created_at__gte=start,
        created_at__lt=now - dt.timedelta(seconds=SETTLE_SECONDS),
    ).order_by("pk")
    # Batches never overlap, so the one that starts last ends last: read through the unique index.
    after = (
        ShadowBatch.objects.filter(challenger=challenger)
        .order_by("-first_id")
        .values_list("last_id", flat=True)
        .first()
    ) or 0
    limit = batch_rows()
    batches: list[ShadowBatch] = []
    for _ in range(MAX_BATCHES_PER_SWEEP):
        ids = list(pending.filter(pk__gt=after).values_list("pk", flat=True)[:limit])
        if not ids:
            break
        try:
            with transaction.atomic():
                batch = ShadowBatch.objects.create(
                    registered_model=registered,
                    champion=champion,
                    challenger=challenger,
                    first_id=ids[0],
                    last_id=ids[-1],
                )
                # robust: a broker outage must not undo the batch; the stale sweep sends it later.
                transaction.on_commit(lambda batch_id=batch.pk: _enqueue(batch_id), robust=True)
        except IntegrityError:
            # A sweep running at the same time cut this batch; the next sweep goes on after it.
            break
        batches.append(batch)
        after = ids[-1]
        if len(ids) < limit:
            break
    return batches


def shadow_batch_run(*, batch_id: int) -> engine.JobOutcome:
    """Claim the batch and score its rows with the challenger, storing a ShadowPrediction for each.

    Idempotent: the claim is a conditional UPDATE (see jobs.engine) and the rows are inserted ignoring
    those already there (unique per prediction and version), so a retry after a crash scores nothing
    twice. Rows the challenger's own schema refuses or it gives no finite output for get no shadow.
    Transient errors hand the batch back for the task to retry; a model that cannot be loaded fails it.
    """
    return engine.job_run(SHADOWS, job_id=batch_id, work=_score, reason=_failure_reason)


def _failure_reason(exc: Exception) -> str | None:
    if isinstance(exc, model_cache.ModelUnavailable | PredictionInputError):
        return str(exc)
    return None


def _score(attempt: engine.Attempt[ShadowBatch]) -> None:
    batch = attempt.job
    challenger = batch.challenger
    predictor = model_cache.predictors.get(model_cache.ModelArtifacts.of_version(challenger))
    attempt.renew(force=True)
    rows = [
        (pk, inputs, made_at)
        for pk, inputs, made_at in Prediction.objects.filter(
            pk__gte=batch.first_id,
            pk__lte=batch.last_id,
            model_version_id=batch.champion_id,
            channel__in=SHADOWED_CHANNELS,
        )
        .order_by("pk")
        .values_list("pk", "inputs", "created_at")
        if inputs
    ]
    validated, kept = routing.rows_validate_for(version=challenger, rows=[inputs for _, inputs, _ in rows])
    shadows: list[ShadowPrediction] = []
    # Positions among the validated rows of each hour's shadows, for the challenger's drift rollups.
    hours: dict[dt.datetime, list[int]] = defaultdict(list)
    confidences: dict[int, float | None] = {}
    if validated is not None:
        labels, probabilities = predictor.predict_columns(validated.columns)
        unscorable = {int(i) for i in not_finite_rows(labels, probabilities)}
        classes = challenger.classes or predictor.classes
        for index, position in enumerate(kept):
            if index in unscorable:
                continue
            pk, _, made_at = rows[position]
            hours[rollups.hour_of(made_at)].append(index)
            row_probabilities = services.probabilities_of(
                classes, probabilities[index] if probabilities else None
            )
            confidences[index] = max(row_probabilities.values()) if row_probabilities else None
            shadows.append(
                ShadowPrediction(
                    prediction_id=pk,
                    model_version=challenger,
                    champion_id=batch.champion_id,
                    prediction_value=labels[index],
                    probabilities=row_probabilities,
                    confidence=confidences[index],
                    prediction_created_at=made_at,
                )
            )
    if len(shadows) < len(rows):
        logger.info(
            "%s: the challenger scored %s of %s rows (its schema refused the rest, or no finite output)",
            SHADOWS.name(batch.pk),
            len(shadows),
            len(rows),
        )
    with transaction.atomic():
        ShadowPrediction.objects.bulk_create(shadows, ignore_conflicts=True, batch_size=1000)
        for hour, indexes in hours.items():
            taken = np.asarray(indexes, dtype=int)
            drift_rollups.prediction_features_add(
                model_version=challenger,
                columns={name: values[taken] for name, values in validated.columns.items()},
                predictions=[labels[i] for i in indexes],
                confidences=[confidences[i] for i in indexes],
                hour=hour,
            )
        attempt.succeed(rows_scored=len(shadows))


def shadow_batch_fail(*, batch_id: int, message: str) -> bool:
    """Mark a batch that is not finished and not held by a live attempt FAILED (the task gave up).

    Returns whether the batch was marked.
    """
    return engine.job_fail(SHADOWS, job_id=batch_id, message=message)


def shadow_batches_stale_requeue(*, now: dt.datetime | None = None) -> list[int]:
    """Send again batches whose message was lost: QUEUED for long, or RUNNING with an expired lease.

    A batch whose worker died MAX_ATTEMPTS times is failed instead. Safe to run at any time: the worker's
    conditional claim ignores batches another attempt holds.
    """
    return engine.jobs_stale_requeue(SHADOWS, now=now)
