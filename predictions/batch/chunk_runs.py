"""Running the chunks of a batch job: one chunk claimed by its task, then the walks that claim and store
the job's free chunks one by one while the next are computed on threads."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from django.utils import timezone

from jobs import engine
from predictions.batch import chunks as batch_chunks
from predictions.batch import finish as batch_finish
from predictions.batch import job_specs
from predictions.batch.attempt import BatchRunError, ChunkAttempt
from predictions.models import BatchPredictionChunk, BatchPredictionJob

logger = logging.getLogger(__name__)


def batch_chunk_run(*, chunk_id: int) -> engine.JobOutcome:
    """Claim one chunk of a batch job and predict it, then the free chunks after it (_chunks_after); the
    worker storing the job's last chunk finishes the job.

    Idempotent: a chunk already stored is skipped, one held by a live attempt is "busy" (the task checks
    again when that lease runs out). A chunk whose worker died is claimed again and redone whole: nothing
    of the dead attempt was committed. A chunk that cannot be predicted fails, and its job with it.
    """
    outcome = _chunk_run(job_specs.CHUNKS, chunk_id=chunk_id, model=None)
    if outcome.status == "succeeded":
        _chunks_after(chunk_id)
    return outcome


def _chunks_after(chunk_id: int) -> None:
    """Go on with the job's chunks after this one that no attempt holds, as their own tasks would.

    A worker that took one chunk then keeps predicting the next while it stores the one before, like the
    job's own attempt does from the other end; alone, each chunk task had first predicted and then
    stored, one core idle at each step. The tasks of the chunks taken here find them stored.
    """
    chunk = (
        BatchPredictionChunk.objects.select_related("job__model_version__registered_model")
        .filter(pk=chunk_id)
        .first()
    )
    if chunk is None or chunk.job.is_terminal:
        return
    model = batch_chunks.model_load(chunk.job.model_version)
    chunks_walk(
        job_specs.CHUNKS,
        job=chunk.job,
        model=model,
        after=chunk.index,
        descending=False,
        renew=lambda: None,
        walked_from=chunk_id,
    )


def _chunk_claimable_next(job_id: int, *, after: int | None, descending: bool) -> tuple[int, int] | None:
    """(id, index) of the job's next chunk past `after`, walking down or up, that no live attempt holds."""
    chunks = BatchPredictionChunk.objects.filter(engine.claimable(timezone.now()), job_id=job_id)
    if after is not None:
        chunks = chunks.filter(index__lt=after) if descending else chunks.filter(index__gt=after)
    return chunks.order_by("-index" if descending else "index").values_list("pk", "index").first()


#: A chunk claimed by a walk, and its rows being computed.
_Reserved = tuple[ChunkAttempt, Future[tuple[batch_chunks.Computed, dict[str, float]]]]


def chunks_walk(
    spec: engine.JobSpec[BatchPredictionChunk],
    *,
    job: BatchPredictionJob,
    model: batch_chunks.Model,
    after: int | None,
    descending: bool,
    renew: Callable[[], None],
    walked_from: int | None = None,
) -> engine.JobOutcome | None:
    """Claim and store the job's free chunks one by one, past `after`, down or up; returns the outcome of
    a chunk that failed (the walk stops there), else None once no free chunk is left. A chunk task's walk
    marks the chunks it claims `walked_from` its own, so they are freed at once if its process dies.

    The next chunks are claimed and computed on threads while the one before them is stored: onnxruntime,
    Arrow, numpy and the database's statement all run without the GIL. Claiming them first means two
    walks that meet never compute the same chunk: each steps past the chunks the other holds or stored.
    """
    depth = _chunks_ahead(job)
    pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="batch-ahead")
    ahead: deque[_Reserved] = deque()
    past = after

    def reserve() -> None:
        """Claim free chunks past the last one claimed, and start computing them, until `depth` are."""
        nonlocal past
        while len(ahead) < depth:
            found = _chunk_claimable_next(job.pk, after=past, descending=descending)
            if found is None:
                return
            past = found[1]
            claimed = engine.job_claim(spec, job_id=found[0], fields={"walked_from": walked_from})
            if isinstance(claimed, ChunkAttempt):  # else taken meanwhile: look past it
                computing = pool.submit(batch_chunks.chunk_compute_ahead, model, job=job, index=found[1])
                ahead.append((claimed, computing))

    try:
        reserve()
        while ahead:
            attempt, computing = ahead.popleft()
            reserve()
            outcome = _chunk_run(spec, chunk_id=attempt.job.pk, model=model, ahead=computing, claimed=attempt)
            if outcome.status == "failed":
                return outcome
            renew()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # The walk stopped with chunks claimed: hand them back for their own tasks to take.
        for attempt, _ in ahead:
            attempt.release("Handed back: the worker that claimed it stopped first")
    return None


def _chunks_ahead(job: BatchPredictionJob) -> int:
    """Chunks a walk computes while it stores one. With every row stored, storing is the slower step and
    one chunk ahead keeps it busy; with the result file only, computing is, and two threads share it."""
    return 1 if job.store_predictions else 2


def _chunk_run(
    spec: engine.JobSpec[BatchPredictionChunk],
    *,
    chunk_id: int,
    model: batch_chunks.Model | None,
    ahead: Future[tuple[batch_chunks.Computed, dict[str, float]]] | None = None,
    claimed: ChunkAttempt | None = None,
) -> engine.JobOutcome:
    """Run one chunk: claimed here, or already (`claimed`), and computed here, or ahead (`ahead`)."""
    outcome = engine.job_run(
        spec,
        job_id=chunk_id,
        work=lambda attempt: _chunk_work(attempt, model, ahead),
        reason=job_specs.failure_reason,
        claim=(lambda: claimed) if claimed is not None else None,
    )
    if outcome.status == "failed":
        chunk = BatchPredictionChunk.objects.filter(pk=chunk_id).first()
        if chunk is not None:
            job_specs.job_fail_for_chunk(chunk)
    elif outcome.status == "succeeded":
        logger.info("batch chunk %s stored", chunk_id)
    if outcome.status == "succeeded" and spec is job_specs.CHUNKS:
        job_id = BatchPredictionChunk.objects.filter(pk=chunk_id).values_list("job_id", flat=True).first()
        if job_id is not None and batch_finish.finish_due(job_id):
            batch_finish.batch_prediction_finish(job_id=job_id)
    return outcome


def _chunk_work(
    attempt: ChunkAttempt,
    model: batch_chunks.Model | None,
    ahead: Future[tuple[batch_chunks.Computed, dict[str, float]]] | None = None,
) -> None:
    """Predict and store one claimed chunk, or store it as computed ahead (`ahead`, whose errors are
    raised here, as the chunk's own)."""
    unit = attempt.job
    job = unit.job
    if job.is_terminal:
        raise BatchRunError(f"{job} is {job.status}; chunk {unit.index} is not predicted.")
    started = time.perf_counter()
    if model is None:
        model = batch_chunks.model_load(job.model_version)
    started = attempt.timed("load", started)
    with batch_chunks.collector_paused():
        if ahead is not None:
            computed, seconds = ahead.result()
            attempt.seconds_add(seconds)
        else:
            chunk = batch_chunks.chunk_read(job, unit.index)
            attempt.timed("read", started)
            computed = batch_chunks.chunk_compute(attempt, model, job=job, chunk=chunk)
        attempt.check()
        batch_chunks.chunk_store(attempt, model, job=job, computed=computed)
