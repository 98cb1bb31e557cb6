"""A feedback import's chunks: each checked by feedback_check, its errors part written, then stored with
the checkpoint in one transaction, on a thread of its own while the next chunk is checked."""

from __future__ import annotations

import contextlib
import gc
import io
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from django.db import transaction

from feedback import services as feedback_services
from feedback.imports import files as import_files
from feedback.imports.attempt import ImportAttempt
from feedback.models import FeedbackImport, Source
from jobs.chunked import StoreThread
from mlops_site import storage
from mlops_site.errors import problem
from models_registry.models import ModelVersion


def part_key(job: FeedbackImport, index: int) -> str:
    return f"feedback-imports/{job.uuid}/parts/errors-{index:06d}.csv"


def object_replace(key: str, content: IO[bytes]) -> None:
    """Store content under exactly `key`, replacing what an earlier attempt stored there."""
    if storage.exists(key):
        storage.delete(key)
    storage.put(key, content)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while chunks are processed.

    A chunk allocates hundreds of thousands of small objects (rows, items, checked outcomes); each
    allocation burst set off collections that walk every object of the worker. Nothing here builds
    reference cycles, so reference counting frees everything anyway.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class Checked:
    """A chunk checked, its errors part written, waiting to be stored."""

    index: int
    rows: int
    failed: int
    valid: list[feedback_services.Checked]


def _other_models(
    others: list[feedback_services.Checked], *, layout: import_files.Layout, row_of: Any
) -> list[dict[str, Any]]:
    names = dict(
        ModelVersion.objects.filter(pk__in={c.target.model_version_id for c in others}).values_list(
            "pk", "registered_model__name"
        )
    )
    return [
        problem(
            f"Prediction {c.target.prediction_id} was made by model "
            f"{names.get(c.target.model_version_id)!r}, not {layout.model_name!r} that the file is for.",
            row=row_of(c.row),
            field=layout.reference_column,
            code="other_model",
        )
        for c in others
    ]


def chunk_check(
    chunk: import_files.Chunk,
    *,
    user: Any,
    layout: import_files.Layout,
    duplicates: import_files.Duplicates,
    versions: set[int] | None,
) -> tuple[list[feedback_services.Checked], list[dict[str, Any]], set[int]]:
    """The chunk's valid rows, every problem by row, and the rows that failed.

    Rows with the wrong number of fields, rows naming a prediction an earlier row named (see
    files.duplicates_find) and number cells feedback_check cannot read are refused here; the others go to
    feedback_check, numbered from the chunk's first row.
    """
    problems: list[dict[str, Any]] = []
    failed: set[int] = set()
    named_before = duplicates.within(chunk)
    items: list[dict[str, Any]] = []
    rows: list[int] = []
    for offset, record in enumerate(chunk.records):
        row = chunk.first_row + offset
        if len(record) != layout.width:
            problems.append(
                problem(
                    f"Row {row} has {len(record)} field{'s' if len(record) != 1 else ''}; the header has "
                    f"{layout.width}. Quote values that hold commas.",
                    row=row,
                    code=import_files.WRONG_FIELD_COUNT,
                )
            )
            failed.add(row)
            continue
        if row in named_before:
            problems.append(
                problem(
                    f"{layout.reference_text(record)} is also named on row {named_before[row]}; give each "
                    "prediction one outcome.",
                    row=row,
                    field=layout.reference_column,
                    code=import_files.DUPLICATE,
                )
            )
            failed.add(row)
            continue
        trap = layout.number_trap(record)
        if trap is not None:
            column, value = trap
            problems.append(
                problem(
                    f"{column!r} must be a whole number (1, 2, ...); got {value!r:.80}.",
                    row=row,
                    field=column,
                )
            )
            failed.add(row)
            continue
        items.append(layout.item(record))
        rows.append(row)
    if not items:
        return [], problems, failed
    first = rows[0]
    check = feedback_services.feedback_check(items, user=user, text=True, first_row=first)
    if rows[-1] - first == len(rows) - 1:
        row_of = int
    else:
        # Rows left out above leave gaps: item i was numbered first + i, and is file row rows[i].
        def row_of(numbered: int) -> int:
            return rows[numbered - first]

    for item in check.problems:
        row = row_of(item["row"])
        problems.append({**item, "row": row})
        failed.add(row)
    if versions is None:
        return check.valid, problems, failed
    valid = [c for c in check.valid if c.target.model_version_id in versions]
    others = [c for c in check.valid if c.target.model_version_id not in versions]
    if others:
        refused = _other_models(others, layout=layout, row_of=row_of)
        problems.extend(refused)
        failed.update(p["row"] for p in refused)
    return valid, problems, failed


def chunk_prepare(
    attempt: ImportAttempt,
    chunk: import_files.Chunk,
    *,
    layout: import_files.Layout,
    duplicates: import_files.Duplicates,
    versions: set[int] | None,
) -> Checked:
    """Check a chunk and write its errors part (under a key of its own, which a retry replaces)."""
    job = attempt.job
    started = time.perf_counter()
    valid, problems, failed = chunk_check(
        chunk, user=job.user, layout=layout, duplicates=duplicates, versions=versions
    )
    started = attempt.timed("check", started)
    key = part_key(job, chunk.index)
    if problems:
        object_replace(key, io.BytesIO(import_files.errors_part(problems)))
    elif storage.exists(key):
        # An earlier attempt refused rows this one accepts (a prediction was made since): not an error now.
        storage.delete(key)
    attempt.timed("write", started)
    return Checked(index=chunk.index, rows=len(chunk), failed=len(failed), valid=valid)


def chunk_store(attempt: ImportAttempt, checked: Checked) -> None:
    """Store a checked chunk's outcomes and advance the checkpoint, in one transaction.

    The checkpoint's UPDATE comes first and locks the job's row, so no other attempt can store the same
    chunk until this transaction ends; the counts of what was stored follow in the same transaction.
    """
    started = time.perf_counter()
    with transaction.atomic():
        attempt.checkpoint(index=checked.index, rows=checked.rows, failed=checked.failed)
        stored = feedback_services.feedback_store(
            checked.valid, user=attempt.job.user, source=Source.FILE, answer=False
        )
        counts = Counter(s.status for s in stored)
        attempt.stored(created=counts["created"], updated=counts["updated"], unchanged=counts["unchanged"])
    attempt.timed("store", started)


def store_thread(attempt: ImportAttempt, *, threaded: bool) -> StoreThread[Checked]:
    """Stores checked chunks in order on a thread of its own while the main thread checks the next one;
    half the time of a chunk is the server inserting, checking keys and committing."""
    return StoreThread(
        attempt,
        lambda checked: chunk_store(attempt, checked),
        name=f"feedback-import-{attempt.job.pk}-store",
        threaded=threaded,
    )
