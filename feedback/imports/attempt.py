"""A feedback import's attempt: the chunk checkpoint, the stored-row counts and the seconds spent per step."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db.models import F, Q

from feedback.models import FeedbackImport
from jobs import engine

#: Seconds summed over the attempts in FeedbackImport.timings. On the main thread: scan is the first pass
#: (duplicates), read parses the chunks, check is feedback_check and the row checks around it, write the
#: errors parts, wait is waiting for the store thread, finish the errors file. On the store thread, beside
#: them: store is storing the outcomes with the checkpoint, and the commit.
TIMED_STEPS = ("scan", "read", "check", "write", "store", "wait", "finish")


class ImportRunError(Exception):
    """The import cannot finish for a reason no retry will change; the message says why."""


class ImportAttempt(engine.Attempt[FeedbackImport]):
    """An attempt at an import: counts the chunks it stored and times its steps."""

    def __init__(self, spec: engine.JobSpec[FeedbackImport], job: FeedbackImport) -> None:
        super().__init__(spec, job)
        self.chunks_done = job.chunks_done
        # The main thread and the store thread add to these (chunks.Writer).
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
        """Count chunk `index` done, first in the transaction that stores its rows: this UPDATE locks the
        job's row, so no other attempt can store the same chunk until the transaction ends."""
        self.write(
            only_if=Q(chunks_done=index),
            chunks_done=index + 1,
            rows_done=F("rows_done") + rows,
            rows_failed=F("rows_failed") + failed,
            timings=self.timings_rounded(),
        )
        self.chunks_done = index + 1

    def stored(self, *, created: int, updated: int, unchanged: int) -> None:
        """Add what the chunk's store did, in the same transaction as its checkpoint."""
        counted = self.mine().update(
            rows_created=F("rows_created") + created,
            rows_updated=F("rows_updated") + updated,
            rows_unchanged=F("rows_unchanged") + unchanged,
        )
        if counted != 1:
            raise self.lease_lost()

    def released_fields(self, message: str) -> dict[str, Any]:
        return {"timings": self.timings_rounded()}

    def failed_fields(self) -> dict[str, Any]:
        return {"timings": self.timings_rounded()}
