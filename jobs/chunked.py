"""What every job that works through a file in chunks shares: an attempt that times its steps (and one
that also checkpoints each chunk it stores in order), and a thread that stores one chunk while the main
thread prepares the next."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from django.db import connection
from django.db.models import F, Q

from jobs import engine

JobT = TypeVar("JobT", bound=Any)
ItemT = TypeVar("ItemT")


class StepSeconds:
    """Seconds summed per named step; threads may add to the same sums."""

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = dict(seconds or {})

    def timed(self, step: str, started: float) -> float:
        """Add the seconds since `started` (a perf_counter reading) to `step`; returns the reading now."""
        now = time.perf_counter()
        self.add({step: now - started})
        return now

    def add(self, seconds: dict[str, float]) -> None:
        with self._lock:
            for step, value in seconds.items():
                self.seconds[step] = self.seconds.get(step, 0.0) + value

    def rounded(self) -> dict[str, float]:
        with self._lock:
            return {k: round(v, 4) for k, v in self.seconds.items()}


class TimedAttempt(engine.Attempt[JobT]):
    """An attempt that sums the seconds it spends per step, starting from the job's own `timings`.

    Subclasses name their steps in TIMED_STEPS; the job (or unit) has a `timings` JSON field.
    """

    TIMED_STEPS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: engine.JobSpec[JobT], job: JobT) -> None:
        super().__init__(spec, job)
        self.steps = StepSeconds(dict.fromkeys(self.TIMED_STEPS, 0.0))
        self.steps.add({k: float(v) for k, v in (job.timings or {}).items()})

    def timed(self, step: str, started: float) -> float:
        return self.steps.timed(step, started)

    def seconds_add(self, seconds: dict[str, float]) -> None:
        """Count steps timed before this attempt began (work done ahead for it)."""
        self.steps.add(seconds)

    def timings_rounded(self) -> dict[str, float]:
        return self.steps.rounded()

    def released_fields(self, message: str) -> dict[str, Any]:
        return {"timings": self.timings_rounded()}

    def failed_fields(self) -> dict[str, Any]:
        return {"timings": self.timings_rounded()}


class ChunkedAttempt(TimedAttempt[JobT]):
    """A timed attempt that counts the chunks it stored in order (`chunks_done`, the checkpoint).

    Both threads add to the timings; the store thread saves them at each checkpoint.
    """

    def __init__(self, spec: engine.JobSpec[JobT], job: JobT) -> None:
        super().__init__(spec, job)
        self.chunks_done = job.chunks_done

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


class StoreThread(Generic[ItemT]):
    """Stores prepared chunks one at a time, in order, while the main thread prepares the next one.

    The database (the PostgreSQL server, or SQLite's C code, which releases the GIL) then works in
    parallel with reading and checking: a worker on two cores keeps both busy. At most one chunk is in
    flight, so memory holds two. Without a thread of its own (`threaded=False`, used when the caller holds
    a transaction that a second connection could not see into) it stores at once.
    """

    def __init__(
        self, attempt: ChunkedAttempt[Any], store: Callable[[ItemT], None], *, name: str, threaded: bool
    ) -> None:
        self.attempt = attempt
        self.store = store
        self.name = name
        self.threaded = threaded
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, item: ItemT) -> None:
        self.wait()
        if not self.threaded:
            self.store(item)
            return
        self._thread = threading.Thread(target=self._store, args=(item,), name=self.name, daemon=True)
        self._thread.start()

    def _store(self, item: ItemT) -> None:
        try:
            self.store(item)
        except BaseException as exc:  # handed to the main thread by wait()
            self._error = exc
        finally:
            connection.close()

    def wait(self) -> None:
        """Block until the chunk in flight is stored; raise what storing it raised."""
        if self._thread is not None:
            started = time.perf_counter()
            self._thread.join()
            self._thread = None
            self.attempt.timed("wait", started)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
