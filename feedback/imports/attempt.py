"""A feedback import's attempt: the chunk checkpoint, the stored-row counts and the seconds spent per step."""

from __future__ import annotations

from django.db.models import F

from feedback.models import FeedbackImport
from jobs.chunked import ChunkedAttempt

#: Seconds summed over the attempts in FeedbackImport.timings. On the main thread: scan is the first pass
#: (duplicates), read parses the chunks, check is feedback_check and the row checks around it, write the
#: errors parts, wait is waiting for the store thread, finish the errors file. On the store thread, beside
#: them: store is storing the outcomes with the checkpoint, and the commit.
TIMED_STEPS = ("scan", "read", "check", "write", "store", "wait", "finish")


class ImportRunError(Exception):
    """The import cannot finish for a reason no retry will change; the message says why."""


class ImportAttempt(ChunkedAttempt[FeedbackImport]):
    """An attempt at an import: counts the chunks it stored, what they stored, and times its steps."""

    TIMED_STEPS = TIMED_STEPS

    def stored(self, *, created: int, updated: int, unchanged: int) -> None:
        """Add what the chunk's store did, in the same transaction as its checkpoint."""
        counted = self.mine().update(
            rows_created=F("rows_created") + created,
            rows_updated=F("rows_updated") + updated,
            rows_unchanged=F("rows_unchanged") + unchanged,
        )
        if counted != 1:
            raise self.lease_lost()
