"""The hourly rollups of page and API predictions: predictions, latency and feature bins per version.

With PREDICTION_ROLLUP_DELAY_SECONDS above 0 (1 by default), each process sums what its committed
predictions add and writes the sums in one transaction at most that many seconds after the first of them:
by the request that finds the sums due, by a background thread when requests stop coming, and when the
process exits. A request then runs 3 statements fewer, and concurrent requests no longer queue for the
lock on their hour's counter rows. A process killed without warning loses the sums it had not written
(at most the delay's worth of counts); the predictions themselves are stored either way. At 0 they are
added in the transaction that stores the prediction, so they count exactly the stored rows at every moment.

Batch jobs and shadow scoring add their rollups in their own transactions: they are batched already.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from mlops_site import latency_bins
from mlops_site import rollups as counters
from monitoring import drift_rollups
from predictions.models import LatencyHourly, PredictionHourly

logger = logging.getLogger(__name__)


def _rows_add(rows: dict[tuple[int, dt.datetime], int]) -> None:
    """Add rows predicted per (version id, start of the hour)."""
    counters.counters_add(
        PredictionHourly,
        keys=("model_version", "hour"),
        sums=("n",),
        deltas={key: (n,) for key, n in rows.items()},
    )


def _requests_add(requests: dict[tuple[int, dt.datetime, int], int]) -> None:
    """Add requests answered per (version id, start of the hour, latency bin)."""
    counters.counters_add(
        LatencyHourly,
        keys=("model_version", "hour", "bin"),
        sums=("n",),
        deltas={key: (n,) for key, n in requests.items()},
    )


def prediction_hours_add(*, model_version_id: int, hour: dt.datetime, rows: int) -> None:
    """Count `rows` predicted by a version in an hour; call inside the transaction that stores them."""
    _rows_add({(model_version_id, counters.hour_of(hour)): rows})


def latency_hours_add(*, model_version_id: int, hour: dt.datetime, latency_ms: float) -> None:
    """Count one request answered by a version in an hour; call inside the transaction that stores it."""
    _requests_add({(model_version_id, counters.hour_of(hour), latency_bins.latency_bin(latency_ms)): 1})


def delay_seconds() -> float:
    return float(settings.PREDICTION_ROLLUP_DELAY_SECONDS)


@dataclass(frozen=True)
class Answered:
    """One request's rows answered by one version: what its rollups count."""

    model_version: Any
    hour: dt.datetime
    latency_ms: float
    # The rows' model-ready arrays (predictions.validation.ValidatedRows.columns).
    columns: dict[str, np.ndarray]
    predictions: Sequence[Any]
    # The highest class probability per row, None where there is none.
    confidences: Sequence[float | None]


def answered_add(answered: Answered) -> None:
    """Add one request's rows answered by a version to its rollups; call inside the transaction that stores
    them. With a delay, the rows are summed in this process once that transaction commits."""
    if delay_seconds() <= 0:
        version, hour = answered.model_version, answered.hour
        prediction_hours_add(model_version_id=version.pk, hour=hour, rows=len(answered.predictions))
        latency_hours_add(model_version_id=version.pk, hour=hour, latency_ms=answered.latency_ms)
        drift_rollups.prediction_features_add(
            model_version=version,
            columns=answered.columns,
            predictions=answered.predictions,
            confidences=answered.confidences,
            hour=hour,
        )
        return
    # On commit only: a rolled-back prediction is counted nowhere.
    transaction.on_commit(lambda: pending.add(answered), robust=True)


@dataclass
class _Sums:
    """What one version's committed requests of one hour add, not yet written."""

    model_version: Any
    rows: int = 0
    latency: Counter[int] = field(default_factory=Counter)
    columns: dict[str, list[np.ndarray]] = field(default_factory=dict)
    predictions: list[Any] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)

    def merge(self, other: _Sums) -> None:
        self.rows += other.rows
        self.latency.update(other.latency)
        for name, parts in other.columns.items():
            self.columns.setdefault(name, []).extend(parts)
        self.predictions.extend(other.predictions)
        self.confidences.extend(other.confidences)


class PendingRollups:
    """This process's sums not yet written, per (version id, hour), shared by its threads."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[tuple[int, dt.datetime], _Sums] = {}
        self._first_added: float | None = None
        # One writer at a time: the order of two writes never matters, but one at a time keeps them short.
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def forget_after_fork(self) -> None:
        """In a forked child: the sums copied from the parent are the parent's to write (counting them here
        too would count them twice), its locks may have been copied held, and its thread did not follow."""
        self._reset()

    def add(self, answered: Answered) -> None:
        key = (answered.model_version.pk, counters.hour_of(answered.hour))
        with self._lock:
            sums = self._sums.get(key)
            if sums is None:
                sums = self._sums[key] = _Sums(model_version=answered.model_version)
            sums.rows += len(answered.predictions)
            sums.latency[latency_bins.latency_bin(answered.latency_ms)] += 1
            for name, values in answered.columns.items():
                sums.columns.setdefault(name, []).append(values)
            sums.predictions.extend(answered.predictions)
            sums.confidences.extend(answered.confidences)
            if self._first_added is None:
                self._first_added = time.monotonic()
            due = time.monotonic() - self._first_added >= delay_seconds()
        self._writer_start()
        if due:
            self.write()

    def due_in(self) -> float | None:
        """Seconds until the oldest sums are due (0 or less: due now), or None when nothing waits."""
        with self._lock:
            if self._first_added is None:
                return None
            return self._first_added + delay_seconds() - time.monotonic()

    @property
    def rows(self) -> int:
        with self._lock:
            return sum(sums.rows for sums in self._sums.values())

    def write(self) -> int:
        """Write every sum in one transaction; returns the rows counted. On a database error the sums are
        kept for the next write and the error is logged, never raised: the predictions are stored already.
        """
        with self._write_lock:
            with self._lock:
                taken, self._sums = self._sums, {}
                first_added, self._first_added = self._first_added, None
            if not taken:
                return 0
            try:
                _sums_write(taken)
            except DatabaseError:
                logger.warning(
                    "The prediction rollups of %d rows could not be written; they are kept for the next try",
                    sum(sums.rows for sums in taken.values()),
                    exc_info=True,
                )
                with self._lock:
                    for key, sums in self._sums.items():
                        taken.setdefault(key, _Sums(model_version=sums.model_version)).merge(sums)
                    self._sums = taken
                    self._first_added = first_added
                return 0
            return sum(sums.rows for sums in taken.values())

    def _writer_start(self) -> None:
        """The thread that writes the sums when no request comes to find them due; one per process (a
        forked child starts its own: threads do not survive a fork)."""
        pid = os.getpid()
        if self._pid == pid and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid == pid and self._thread is not None and self._thread.is_alive():
                return
            if self._pid != pid:
                atexit.register(self.write)
            self._pid = pid
            self._thread = threading.Thread(
                target=self._write_when_due, name="prediction-rollups", daemon=True
            )
            self._thread.start()

    def _write_when_due(self) -> None:
        while True:
            wait = self.due_in()
            if wait is None or wait > 0:
                time.sleep(min(max(wait or delay_seconds(), 0.05), 5.0))
                continue
            try:
                self.write()
            except Exception:
                # Not a database error (those are kept and logged by write): keep the thread alive.
                logger.exception("Writing the prediction rollups failed")
            finally:
                # This thread's own connection, opened for this write: not held while the thread sleeps.
                connection.close()


def _sums_write(taken: dict[tuple[int, dt.datetime], _Sums]) -> None:
    ordered = sorted(taken.items(), key=lambda item: (item[0][0], item[0][1]))
    with transaction.atomic():
        _rows_add({key: sums.rows for key, sums in ordered})
        _requests_add(
            {
                (version_id, hour, index): n
                for (version_id, hour), sums in ordered
                for index, n in sums.latency.items()
            }
        )
        for (_version_id, hour), sums in ordered:
            drift_rollups.prediction_features_add(
                model_version=sums.model_version,
                columns={name: np.concatenate(parts) for name, parts in sums.columns.items()},
                predictions=sums.predictions,
                confidences=sums.confidences,
                hour=hour,
            )


#: This process's sums (PREDICTION_ROLLUP_DELAY_SECONDS above 0).
pending = PendingRollups()
os.register_at_fork(after_in_child=pending.forget_after_fork)
