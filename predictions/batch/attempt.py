"""Attempts at a batch job and at one of its chunks: the seconds each spends per step."""

from __future__ import annotations

from jobs.chunked import TimedAttempt
from predictions.models import BatchPredictionChunk, BatchPredictionJob

#: Seconds summed over the chunks and attempts in BatchPredictionJob.timings. load, read (cutting the file)
#: and finish (assembling the files) are the job's own; validate, predict, encode and store (insert,
#: commit) are summed from its chunks; write is both (input parts when cutting, result and errors parts).
TIMED_STEPS = ("load", "read", "validate", "predict", "encode", "write", "store", "finish")
#: The steps of one chunk, in BatchPredictionChunk.timings (read: its input part).
CHUNK_STEPS = ("load", "read", "validate", "predict", "encode", "write", "store")


class BatchRunError(Exception):
    """The job cannot finish for a reason no retry will change; the message says why."""


class BatchAttempt(TimedAttempt[BatchPredictionJob]):
    """An attempt at a batch job: cuts the file into chunks, works on chunks no other worker took, and
    finishes the job once every chunk is stored."""

    TIMED_STEPS = TIMED_STEPS


class ChunkAttempt(TimedAttempt[BatchPredictionChunk]):
    """An attempt at one chunk of a batch job (`chunk.job`, read with the claim)."""

    TIMED_STEPS = CHUNK_STEPS
