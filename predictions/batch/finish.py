"""The end of a batch job: claiming a job whose chunks are all stored (exactly one worker does), then
assembling its result and errors files from the chunks' parts and marking it SUCCEEDED."""

from __future__ import annotations

import time
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from jobs import engine
from mlops_site import storage
from predictions.batch import chunks as batch_chunks
from predictions.batch import files as batch_files
from predictions.batch import job_specs
from predictions.batch import outputs as batch_outputs
from predictions.batch.attempt import BatchAttempt
from predictions.models import BatchPredictionChunk, BatchPredictionJob, PredictionRequest


def finish_due(job_id: int) -> bool:
    return BatchPredictionJob.objects.filter(
        pk=job_id,
        status=BatchPredictionJob.Status.RUNNING,
        waiting_for_chunks=True,
        chunks_done=F("chunks_total"),
    ).exists()


def finish_claim(spec: engine.JobSpec[BatchPredictionJob], job_id: int) -> BatchAttempt | engine.JobOutcome:
    """Claim a job that waits for its chunks once all of them are stored: one conditional UPDATE, so of two
    workers storing its last chunks (or a worker and the stale sweep) exactly one finishes the job."""
    now = timezone.now()
    claimed = BatchPredictionJob.objects.filter(
        pk=job_id,
        status=BatchPredictionJob.Status.RUNNING,
        waiting_for_chunks=True,
        chunks_total__isnull=False,
        chunks_done=F("chunks_total"),
    ).update(
        waiting_for_chunks=False,
        attempts=F("attempts") + 1,
        lease_expires_at=now + timedelta(seconds=spec.lease_seconds),
    )
    if claimed != 1:
        return engine.JobOutcome("skipped", message="Another worker finishes the job.")
    return BatchAttempt(spec, spec.jobs().get(pk=job_id))


def job_finish(attempt: BatchAttempt, model: batch_chunks.Model) -> None:
    job = attempt.job
    started = time.perf_counter()
    with storage.open_read(job.input_key) as handle:
        header, _ = batch_files.records_head(handle)
    parts = batch_outputs.files_assemble(attempt, header=header or [], classes=model.classes)
    attempt.timed("finish", started)
    timings = _timings_total(attempt)
    with transaction.atomic():
        attempt.succeed(
            result_key=batch_outputs.result_key(job),
            errors_key=batch_outputs.errors_key(job),
            rows_total=F("rows_done"),
            timings=timings,
        )
        model_seconds = timings.get("validate", 0.0) + timings.get("predict", 0.0)
        PredictionRequest.objects.filter(pk=job.prediction_request_id).update(latency_ms=model_seconds * 1000)
    inputs = [batch_outputs.input_part_key(job, index) for index in range(job.chunks_total or 0)]
    batch_outputs.parts_delete(job, parts + inputs)


def _timings_total(attempt: BatchAttempt) -> dict[str, float]:
    """The job's own seconds per step plus those of its chunks (validate, predict, encode, write, store)."""
    totals = attempt.timings_rounded()
    for timings in BatchPredictionChunk.objects.filter(job_id=attempt.job.pk).values_list(
        "timings", flat=True
    ):
        for step in ("validate", "predict", "encode", "write", "store"):
            totals[step] = round(totals.get(step, 0.0) + float((timings or {}).get(step, 0.0)), 4)
    return totals


def batch_prediction_finish(*, job_id: int) -> engine.JobOutcome:
    """Finish a job whose chunks are all stored: assemble its result and errors files and mark it
    SUCCEEDED, exactly once (see finish_claim). A crash while finishing leaves the job to the stale
    sweep, whose attempt finishes it."""

    def work(attempt: BatchAttempt) -> None:
        with batch_chunks.collector_paused():
            started = time.perf_counter()
            model = batch_chunks.model_load(attempt.job.model_version)
            attempt.timed("load", started)
            job_finish(attempt, model)

    return engine.job_run(
        job_specs.JOBS,
        job_id=job_id,
        work=work,
        reason=job_specs.failure_reason,
        claim=lambda: finish_claim(job_specs.JOBS, job_id),
    )
