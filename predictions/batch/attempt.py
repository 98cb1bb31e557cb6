"""A batch job's attempt: the chunk checkpoint and the seconds spent per step."""

from __future__ import annotations

from jobs.chunked import ChunkedAttempt
from predictions.models import BatchPredictionJob

#: Seconds summed over the chunks in BatchPredictionJob.timings. read, validate, predict and encode run on
#: the main thread, store (insert, commit) beside them on the store thread; write is both (errors parts
#: on the main thread, result parts on the store thread); wait is the main thread waiting for the store.
TIMED_STEPS = ("load", "read", "validate", "predict", "encode", "write", "store", "wait", "finish")


class BatchRunError(Exception):
    """The job cannot finish for a reason no retry will change; the message says why."""


class BatchAttempt(ChunkedAttempt[BatchPredictionJob]):
    """An attempt at a batch job: counts the chunks it stored and times its steps."""

    TIMED_STEPS = TIMED_STEPS
