"""A batch job's output files: each chunk's result and errors parts, and the files assembled from them."""

from __future__ import annotations

import logging
import tempfile
import uuid
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_site import storage
from predictions.batch import files as batch_files
from predictions.batch.attempt import BatchAttempt
from predictions.batch.table_validation import TableCheck
from predictions.models import BatchPredictionJob

logger = logging.getLogger(__name__)

#: Columns the result file adds after the input columns (probability_<class> columns follow prediction).
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
TRAILING_COLUMNS = ("prediction_id", "row", "warnings")
ERRORS_COLUMNS = ("row", "field", "code", "message", "value")


# A cell a spreadsheet would run as a formula (=, +, -, @, or a leading tab or carriage return) ...
_FORMULA_FIRST_BYTE = np.zeros(256, dtype=bool)
_FORMULA_FIRST_BYTE[np.frombuffer(b"=+-@\t\r", dtype=np.uint8)] = True
# ... unless it is a plain number such as -1.5 or +3e2, which spreadsheets read as a number.
_PLAIN_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def spreadsheet_safe(table: pa.Table) -> pa.Table:
    """Text cells that would start a spreadsheet formula, prefixed with a single quote (shown as text).

    Result and errors files repeat what uploaders wrote; opened in a spreadsheet, a cell such as
    =HYPERLINK(...) would otherwise run. Plain numbers are left alone.
    """
    columns = []
    for column in table.columns:
        if not pa.types.is_string(column.type):
            columns.append(column)
            continue
        risky = _formula_cells(column)
        if risky is None:
            columns.append(column)
        else:
            columns.append(pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column))
    return pa.table(columns, names=table.column_names)


def _first_bytes(array: pa.StringArray) -> np.ndarray:
    """The first byte of each cell (0 for an empty or null cell), read from Arrow's buffers directly."""
    _, offsets_buffer, data_buffer = array.buffers()
    n = len(array)
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[array.offset : array.offset + n + 1]
    starts = offsets[:-1]
    filled = offsets[1:] > starts
    if array.null_count:
        filled &= ~np.asarray(array.is_null())
    first = np.zeros(n, dtype=np.uint8)
    if data_buffer is not None and filled.any():
        first[filled] = np.frombuffer(data_buffer, dtype=np.uint8)[starts[filled]]
    return first


def _formula_cells(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Which cells of a text column would start a formula; None when none would (the common case).

    Matching every cell against regular expressions cost more than writing the file. Only cells whose
    first byte can start a formula are matched: in numeric data, the negative and signed numbers.
    """
    masks = []
    found = False
    for array in column.chunks:
        mask = np.zeros(len(array), dtype=bool)
        candidates = np.flatnonzero(_FORMULA_FIRST_BYTE[_first_bytes(array)])
        if len(candidates):
            cells = array.take(pa.array(candidates))
            risky = pc.invert(pc.match_substring_regex(cells, _PLAIN_NUMBER))
            mask[candidates] = risky.to_numpy(zero_copy_only=False)
            found = found or bool(mask.any())
        masks.append(mask)
    if not found:
        return None
    return pa.chunked_array([pa.array(m) for m in masks], type=pa.bool_())


def spreadsheet_safe_names(names: list[str]) -> list[str]:
    """Header names neutralised as spreadsheet_safe neutralises cells."""
    safe = spreadsheet_safe(pa.table({"name": pa.array(names, pa.string())}))
    return safe.column("name").to_pylist()


def output_columns(*, classes: list[Any] | None) -> list[str]:
    """The columns the result file adds, for a model with these classes (None: no probabilities)."""
    return [PREDICTION_COLUMN, *probability_columns(classes), *TRAILING_COLUMNS]


def probability_columns(classes: list[Any] | None) -> list[str]:
    return [f"{PROBABILITY_PREFIX}{c}" for c in classes or []]


def input_object_key(job_uuid: uuid.UUID) -> str:
    return f"batch/{job_uuid}/input.csv"


def part_key(job: BatchPredictionJob, kind: str, index: int) -> str:
    return f"batch/{job.uuid}/parts/{kind}-{index:06d}.csv"


def input_part_key(job: BatchPredictionJob, index: int) -> str:
    """Where the rows of chunk `index` wait for the worker that predicts them (an Arrow stream)."""
    return f"batch/{job.uuid}/parts/input-{index:06d}.arrow"


def object_replace(key: str, content: IO[bytes]) -> None:
    """Store content under exactly `key`, replacing what an earlier attempt stored there."""
    if storage.exists(key):
        storage.delete(key)
    storage.put(key, content)


def errors_part(chunk: batch_files.Chunk, check: TableCheck) -> bytes:
    """The chunk's refused rows and ragged lines as errors-file rows, ordered by row number."""
    errors = check.errors
    width = chunk.table.num_columns
    ragged = chunk.ragged
    row = np.concatenate([chunk.rows[errors["position"]], np.array([r.row for r in ragged], dtype="int64")])
    messages = [
        f"Row {r.row} has {r.fields} field{'s' if r.fields != 1 else ''}; the header has {width}. "
        "Quote values that hold commas."
        for r in ragged
    ]
    columns = {
        "field": [errors["field"], np.full(len(ragged), "", dtype=object)],
        "code": [errors["code"], np.full(len(ragged), batch_files.WRONG_FIELD_COUNT, dtype=object)],
        "message": [errors["message"], np.array(messages, dtype=object)],
        "value": [errors["value"], np.array([r.text for r in ragged], dtype=object)],
    }
    order = np.argsort(row, kind="stable")
    table = pa.table(
        {
            "row": pa.array(row[order], pa.int64()),
            **{name: pa.array(np.concatenate(parts)[order], pa.string()) for name, parts in columns.items()},
        }
    )
    return batch_files.csv_part(spreadsheet_safe(table))


def result_part(
    chunk: batch_files.Chunk,
    check: TableCheck,
    *,
    classes: list[str] | None,
    labels: list[Any],
    probabilities: np.ndarray,
    ids: np.ndarray,
) -> bytes:
    """The chunk's rows as read, then prediction, probability_<class>…, prediction_id, row, warnings."""
    n = chunk.table.num_rows
    valid = check.valid
    columns: dict[str, Any] = dict(zip(chunk.table.column_names, chunk.table.columns, strict=True))
    predicted = np.full(n, None, dtype=object)
    if len(labels):
        predicted[valid] = labels
    columns[PREDICTION_COLUMN] = pa.array(predicted, from_pandas=True)
    for position, name in enumerate(probability_columns(classes)):
        column = np.full(n, np.nan)
        if len(probabilities):
            column[valid] = probabilities[:, position]
        columns[name] = pa.array(column, mask=~valid)
    columns["prediction_id"] = pa.array(ids, mask=ids == 0)
    columns["row"] = pa.array(chunk.rows)
    columns["warnings"] = pa.array(check.warnings_text, pa.string())
    return batch_files.csv_part(spreadsheet_safe(pa.table(columns)))


def concatenate(attempt: BatchAttempt, *, key: str, header: bytes, parts: list[str]) -> None:
    """Header plus parts, in order, streamed through a temporary file (memory stays flat) into `key`."""
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as out:
        out.write(header)
        for part in parts:
            for block in storage.iter_chunks(part):
                out.write(block)
            attempt.renew()
        out.seek(0)
        object_replace(key, out)  # type: ignore[arg-type]


def files_assemble(attempt: BatchAttempt, *, header: list[str], classes: list[str] | None) -> list[str]:
    """Write the job's result and errors files from the parts of its chunks; returns the parts used."""
    job = attempt.job
    chunks = job.chunks_total or 0
    result_parts = [part_key(job, "result", i) for i in range(chunks)]
    concatenate(
        attempt,
        key=result_key(job),
        header=batch_files.header_line(spreadsheet_safe_names([*header, *output_columns(classes=classes)])),
        parts=result_parts,
    )
    error_parts = [key for key in (part_key(job, "errors", i) for i in range(chunks)) if storage.exists(key)]
    concatenate(
        attempt, key=errors_key(job), header=batch_files.header_line(list(ERRORS_COLUMNS)), parts=error_parts
    )
    return result_parts + error_parts


def result_key(job: BatchPredictionJob) -> str:
    return f"batch/{job.uuid}/result.csv"


def errors_key(job: BatchPredictionJob) -> str:
    return f"batch/{job.uuid}/errors.csv"


def parts_delete(job: BatchPredictionJob, keys: list[str]) -> None:
    """Delete parts the assembled files hold; one left behind only costs space."""
    for key in keys:
        try:
            storage.delete(key)
        except storage.StorageError:
            logger.warning("batch job %s: could not delete part %s", job.pk, key, exc_info=True)
