"""A batch job's attempt: the chunk checkpoint and the seconds spent per step."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db.models import F, Q

from jobs import engine
from predictions.models import BatchPredictionJob

#: Seconds summed over the chunks in BatchPredictionJob.timings. read, validate, predict and encode run on
#: the main thread, store (insert, commit) beside them on the store thread; write is both (errors parts
#: on the main thread, result parts on the store thread); wait is the main thread waiting for the store.
TIMED_STEPS = ("load", "read", "validate", "predict", "encode", "write", "store", "wait", "finish")


class BatchRunError(Exception):
    """The job cannot finish for a reason no retry will change; the message says why."""


class BatchAttempt(engine.Attempt[BatchPredictionJob]):
    """An attempt at a batch job: counts the chunks it stored and times its steps."""

    def __init__(self, spec: engine.JobSpec[BatchPredictionJob], job: BatchPredictionJob) -> None:
        super().__init__(spec, job)
        self.chunks_done = job.chunks_done
        # Both threads add to these (see TIMED_STEPS), and the store thread saves them at each checkpoint.
        self._timings_lock = threading.Lock()
        self.timings: dict[str, float] = dict.fromkeys(TIMED_STEPS, 0.0)
        self.timings.update({k: float(v) for k, v in (job.timings or {}).items()})

    def timed(self, step: str, started: float) -> float:
        now = time.perf_counter()
        with self._timings_lock:
            self.timings[step] = self.timings.get(step, 0.0) + (now - started)
        return now

    def timings_rounded(self) -> dict[str, float]:
        with self._timings_lock:
            return {k: round(v, 4) for k, v in self.timings.items()}

    def checkpoint(self, *, index: int, rows: int, failed: int) -> None:
        """Count chunk `index` done, in the transaction that stores its rows (this UPDATE locks the job)."""
        self.write(
            only_if=Q(chunks_done=index),
            chunks_done=index + 1,
            rows_done=F("rows_done") + rows,
            rows_failed=F("rows_failed") + failed,
            timings=self.timings_rounded(),
        )
        self.chunks_done = index + 1

    def released_fields(self, message: str) -> dict[str, Any]:
        return {"timings": self.timings_rounded()}

    def failed_fields(self) -> dict[str, Any]:
        return {"timings": self.timings_rounded()}
