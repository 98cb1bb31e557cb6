"""Writes for feedback imports: checking and storing an upload, running it in chunks on the leased-job
engine, failing it, and re-sending lost ones."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from datetime import datetime
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F

from feedback.imports import chunks as import_chunks
from feedback.imports import files as import_files
from feedback.imports.attempt import ImportAttempt, ImportRunError
from feedback.models import FeedbackImport
from jobs import engine
from ml.csv_bytes import scan_bytes, seekable
from mlops_site import storage
from mlops_site.errors import ProblemsInvalid, problem
from models_registry.models import ModelVersion, RegisteredModel

STAFF_ONLY_MESSAGE = "Only staff members may import feedback files."
# Every chunk renews the lease; an import RUNNING with an expired lease was left by a dead worker.
LEASE_SECONDS = 300
# An import claimed this many times keeps killing its worker (out of memory?); it is failed instead.
MAX_ATTEMPTS = 3
# Imports queued this long without being claimed lost their message (broker outage); they are re-sent.
STALE_QUEUED_MINUTES = 15
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (storage.StorageError, OperationalError, InterfaceError)


class FeedbackImportInvalid(ProblemsInvalid):
    """A feedback file was refused at upload (400); `errors` names every problem. Nothing was stored."""

    what = "file"


def _enqueue(import_id: int) -> None:
    from feedback.tasks import feedback_import_run_task

    feedback_import_run_task.delay(import_id)


JOBS = engine.JobSpec(
    model=FeedbackImport,
    label="feedback import",
    noun="import",
    # Looked up when called, so tests can send the imports elsewhere by replacing _enqueue.
    enqueue=lambda import_id: _enqueue(import_id),
    lease_seconds=LEASE_SECONDS,
    max_attempts=MAX_ATTEMPTS,
    stale_queued_minutes=STALE_QUEUED_MINUTES,
    task_name="feedback.tasks.feedback_import_run_task",
    transient_errors=TRANSIENT_ERRORS,
    attempt_class=ImportAttempt,
    select_related=("user", "registered_model"),
)


def chunk_rows() -> int:
    return settings.FEEDBACK_IMPORT_CHUNK_ROWS


def max_upload_bytes() -> int:
    return settings.FEEDBACK_IMPORT_MAX_UPLOAD_MB * 1024 * 1024


def input_object_key(import_uuid: uuid.UUID) -> str:
    return f"feedback-imports/{import_uuid}/input.csv"


def errors_object_key(job: FeedbackImport) -> str:
    return f"feedback-imports/{job.uuid}/errors.csv"


def _line_count(file: IO[bytes]) -> int:
    file.seek(0)
    count, last = 0, b""
    while block := file.read(1024 * 1024):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (1 if last and last != b"\n" else 0)


def feedback_import_start(
    *, user: Any, file: IO[bytes], filename: str, registered_model_name: str | None = None
) -> FeedbackImport:
    """Check an upload of true outcomes, store it and queue its import; staff only.

    The checks are cheap and streamed: size, UTF-8 text, a header naming predictions one way (ids, keys
    with `registered_model_name`, or batch job and row) and giving outcomes, at least one data row. Every
    row is checked later, by the worker. Raises PermissionDenied, FeedbackImportInvalid (every problem
    found) or storage.StorageError; then nothing is stored.
    """
    if not getattr(user, "is_staff", False):
        raise PermissionDenied(STAFF_ONLY_MESSAGE)
    model = None
    if registered_model_name:
        model = RegisteredModel.objects.filter(name=registered_model_name).first()
        if model is None:
            raise FeedbackImportInvalid(
                [
                    problem(
                        f"There is no registered model named {registered_model_name[:100]!r}.",
                        field="model",
                        code="not_found",
                    )
                ]
            )
    limit = max_upload_bytes()
    size = getattr(file, "size", None)
    if isinstance(size, int) and size > limit:
        raise FeedbackImportInvalid(
            [
                problem(
                    f"The file is {size / 1024 / 1024:.1f} MB; "
                    f"at most {limit // (1024 * 1024)} MB are accepted.",
                    field="file",
                    code="too_large",
                )
            ]
        )
    import_uuid = uuid.uuid4()
    input_key = input_object_key(import_uuid)
    with seekable(file) as readable:
        scan = scan_bytes(readable, max_bytes=limit)
        if scan.problems:
            raise FeedbackImportInvalid([problem(message, field="file") for message in scan.problems])
        try:
            header, has_rows = import_files.head(readable)
        except import_files.CsvReadError as exc:
            raise FeedbackImportInvalid([problem(str(exc), field="file")]) from exc
        _, problems = import_files.layout_problems(
            header, has_rows=has_rows, model_name=model.name if model else None
        )
        if problems:
            raise FeedbackImportInvalid(problems)
        # Blank lines and line breaks inside quotes make this an upper bound; it is exact once done.
        rows_estimate = max(1, _line_count(readable) - 1)
        readable.seek(0)
        storage.put(input_key, readable)
    try:
        with transaction.atomic():
            job = FeedbackImport.objects.create(
                uuid=import_uuid,
                user=user,
                registered_model=model,
                input_key=input_key,
                original_filename=os.path.basename(filename or "")[:255],
                input_size_bytes=scan.size_bytes,
                chunk_rows=chunk_rows(),
                rows_total=rows_estimate,
            )
            # robust: a broker outage must not undo the accepted import; the stale sweep sends it later.
            transaction.on_commit(lambda: _enqueue(job.pk), robust=True)
    except BaseException:
        with contextlib.suppress(storage.StorageError):
            storage.delete(input_key)
        raise
    return job


def feedback_import_run(*, import_id: int) -> engine.JobOutcome:
    """Claim the import, check and store its file chunk by chunk, then write its errors file.

    A first pass over the file finds the rows naming a prediction an earlier row names (files.
    duplicates_find); then each chunk is checked by feedback_check, its errors part written, and its
    outcomes, history and rollups stored (feedback_store, the one write path of outcomes) in the
    transaction that also advances the checkpoint (chunks_done and the row counts).
    Chunks are stored in order on a thread of their own while the next one is checked (chunks.store_thread).

    Idempotent and crash-safe: the claim is a conditional UPDATE (see jobs.engine), so a duplicate message
    finds the import busy or finished; a retry after a crash skips the committed chunks and counts
    nothing twice, and a chunk's errors part is written under a key of its own (a retry overwrites it).
    Transient errors (storage or the database unreachable) hand the import back for the task to retry;
    anything else marks it FAILED with the reason, keeping the chunks stored before.
    """
    return engine.job_run(JOBS, job_id=import_id, work=_run, reason=_failure_reason)


def _failure_reason(exc: Exception) -> str | None:
    if isinstance(exc, ImportRunError | import_files.CsvReadError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "The uploaded file is missing from object storage."
    return None


def _run(attempt: ImportAttempt) -> None:
    job = attempt.job
    if job.user is None:
        raise ImportRunError("The uploader's account was deleted; the rest of the file was not imported.")
    with storage.open_read(job.input_key) as readable:
        header, has_rows = import_files.head(readable)
        layout, problems = import_files.layout_problems(
            header,
            has_rows=has_rows,
            model_name=job.registered_model.name if job.registered_model else None,
        )
        if layout is None:
            raise ImportRunError("; ".join(p["message"] for p in problems))
        started = time.perf_counter()
        duplicates = import_files.duplicates_find(readable, layout, progress=attempt.renew)
        attempt.timed("scan", started)
        versions = _model_versions(job)
        chunks = import_files.chunks_read(readable, chunk_rows=job.chunk_rows, skip=attempt.chunks_done)
        writer = import_chunks.store_thread(attempt, threaded=not connection.in_atomic_block)
        try:
            with import_chunks.collector_paused():
                while True:
                    started = time.perf_counter()
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    attempt.timed("read", started)
                    checked = import_chunks.chunk_prepare(
                        attempt, chunk, layout=layout, duplicates=duplicates, versions=versions
                    )
                    writer.submit(checked)
        except BaseException:
            # Let the chunk in flight finish (or fail) before this attempt fails or hands the import back.
            with contextlib.suppress(Exception):
                writer.wait()
            raise
        finally:
            chunks.close()
        writer.wait()
    _finish(attempt)


def _model_versions(job: FeedbackImport) -> set[int] | None:
    """Ids of the versions of the model the upload named (rows of other models are refused), or None."""
    if job.registered_model is None:
        return None
    return set(
        ModelVersion.objects.filter(registered_model=job.registered_model).values_list("pk", flat=True)
    )


def _finish(attempt: ImportAttempt) -> None:
    """Write the errors file from the chunks' parts (when a row failed), then mark the import SUCCEEDED."""
    job = attempt.job
    started = time.perf_counter()
    parts = [
        key
        for key in (import_chunks.part_key(job, i) for i in range(attempt.chunks_done))
        if storage.exists(key)
    ]
    errors_key = ""
    if parts:
        errors_key = errors_object_key(job)
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as out:
            out.write(import_files.errors_header())
            for part in parts:
                for block in storage.iter_chunks(part):
                    out.write(block)
                attempt.renew()
            out.seek(0)
            import_chunks.object_replace(errors_key, out)  # type: ignore[arg-type]
    attempt.timed("finish", started)
    attempt.succeed(errors_key=errors_key, rows_total=F("rows_done"), timings=attempt.timings_rounded())
    for key in parts:
        with contextlib.suppress(storage.StorageError):
            storage.delete(key)


def errors_file_ready(job: FeedbackImport) -> bool:
    """Whether the import has an errors file to download: it succeeded and some row failed."""
    return job.status == FeedbackImport.Status.SUCCEEDED and job.rows_failed > 0 and bool(job.errors_key)


def feedback_import_fail(*, import_id: int, message: str) -> bool:
    """Mark an import that is not finished and not held by a live attempt FAILED (the task gave up).

    Returns whether it was marked. Chunks already stored stay stored: each was whole and valid.
    """
    return engine.job_fail(JOBS, job_id=import_id, message=message)


def feedback_imports_stale_requeue(*, now: datetime | None = None) -> list[int]:
    """Send again imports whose message was lost: QUEUED for long, or RUNNING with an expired lease.

    An import whose worker died MAX_ATTEMPTS times is failed instead. Safe to run at any time: the
    worker's conditional claim ignores imports another attempt holds.
    """
    return engine.jobs_stale_requeue(JOBS, now=now)
