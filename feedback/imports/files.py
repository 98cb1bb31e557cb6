"""Feedback files: the header's layout, the rows read in chunks with their row numbers, and the first pass
that finds predictions named twice anywhere in the file.

Row numbers count data rows from 1, as in a batch job's files: the header is not counted, nor are blank
lines, and a quoted value with line breaks is one row. The errors file and every problem use them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from array import array
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ml import csv_header
from mlops_site.errors import problem

#: What a file may hold: one way of naming predictions, the outcome, a comment.
REFERENCE_COLUMNS = ("prediction_id", "key", "batch_job", "row")
OUTCOME_COLUMNS = ("true_label", "true_value", "correct", "comment")
COLUMNS = REFERENCE_COLUMNS + OUTCOME_COLUMNS
#: The kinds of reference; a file uses one.
IDS, KEYS, BATCH_ROWS = "prediction_id", "key", "batch_job"
#: Columns of the file by feedback_check's field names, for problems it reports; "model" is the form's.
COLUMN_OF_FIELD = {"prediction": "prediction_id", "model": "model"}
WRONG_FIELD_COUNT = "wrong_field_count"
DUPLICATE = "duplicate"
#: Largest id a prediction can have (a bigint).
ID_MAX = 2**63 - 1
KEY_MAX_CHARS = 128
#: How often the first pass calls back (to renew the lease), in rows.
PROGRESS_EVERY_ROWS = 10_000


class CsvReadError(Exception):
    """The stored file cannot be read as CSV (it changed since it was checked, or a value is too long)."""


def _is_blank(record: list[str]) -> bool:
    return not record or (len(record) == 1 and not record[0].strip())


def column_name(name: str) -> str:
    """Header names are matched without surrounding spaces and case: ' Prediction_ID' is prediction_id."""
    return name.strip().lower()


def records(file: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    """(row, fields) of every data row, after the header; blank lines are skipped and not counted.

    The header itself comes first, as row 0. Raises CsvReadError naming the row that cannot be read.
    """
    file.seek(0)
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    row = -1
    try:
        for record in csv.reader(text):
            if _is_blank(record):
                continue
            row += 1
            yield row, record
    except (csv.Error, UnicodeDecodeError) as exc:
        where = "The header" if row < 0 else f"Row {row + 1}"
        raise CsvReadError(f"{where} could not be read as CSV: {exc}.") from exc
    finally:
        # The file may be closed already when an unfinished reader is collected late.
        with contextlib.suppress(ValueError):
            text.detach()


def head(file: IO[bytes]) -> tuple[list[str] | None, bool]:
    """The header record and whether a data row follows it (CsvReadError when unreadable)."""
    header: list[str] | None = None
    rows = records(file)
    try:
        for row, record in rows:
            if row == 0:
                header = record
                continue
            return header, True
        return header, False
    finally:
        rows.close()


def _names(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


@dataclass(frozen=True)
class Layout:
    """Where each known column is in the file's rows, and how the file names its predictions."""

    kind: str
    width: int
    positions: dict[str, int]
    model_name: str | None = None

    def value(self, record: list[str], column: str) -> str | None:
        position = self.positions.get(column)
        return None if position is None else record[position]

    def item(self, record: list[str]) -> dict[str, Any]:
        """The row as feedback_check's item (text values); empty cells are left out, as not given."""
        item: dict[str, Any] = {}
        if self.kind == IDS:
            item["prediction"] = record[self.positions["prediction_id"]]
        elif self.kind == KEYS:
            item["model"] = self.model_name
            item["key"] = record[self.positions["key"]]
        else:
            item["batch_job"] = record[self.positions["batch_job"]]
            item["row"] = record[self.positions["row"]]
        for column in OUTCOME_COLUMNS:
            position = self.positions.get(column)
            if position is not None and record[position].strip():
                item[column] = record[position]
        return item

    def reference(self, record: list[str]) -> Hashable | None:
        """The prediction the row names, as a value equal for every spelling feedback_check resolves alike
        (" 07" and "7" are one id), or None when it names none feedback_check could find."""
        if self.kind == IDS:
            return _number(record[self.positions["prediction_id"]], ID_MAX)
        if self.kind == KEYS:
            key = record[self.positions["key"]]
            return key if key and len(key) <= KEY_MAX_CHARS else None
        number = _number(record[self.positions["row"]], 2**31)
        if number is None:
            return None
        try:
            job = uuid.UUID(record[self.positions["batch_job"]])
        except ValueError:
            return None
        return (job.int, number)

    def reference_text(self, record: list[str]) -> str:
        if self.kind == IDS:
            return f"Prediction {record[self.positions['prediction_id']].strip()[:40]}"
        if self.kind == KEYS:
            return f"Key {record[self.positions['key']][:80]!r}"
        job, number = record[self.positions["batch_job"]], record[self.positions["row"]]
        return f"Row {number.strip()[:20]} of batch job {job.strip()[:40]}"

    @property
    def reference_column(self) -> str:
        return "row" if self.kind == BATCH_ROWS else self.kind

    def number_trap(self, record: list[str]) -> tuple[str, str] | None:
        """(column, value) of a number column holding digits that are not decimal ('²'), else None.

        str.isdigit() accepts them and int() does not; such a value is refused here, by the row.
        """
        for column in ("prediction_id", "row"):
            value = self.value(record, column)
            if value is not None:
                stripped = value.strip()
                if stripped.isdigit() and not stripped.isdecimal():
                    return column, value
        return None


def _number(text: str, limit: int) -> int | None:
    stripped = text.strip()
    if not stripped.isdecimal():
        return None
    number = int(stripped)
    return number if 1 <= number <= limit else None


def layout_problems(
    header: list[str] | None, *, has_rows: bool, model_name: str | None
) -> tuple[Layout | None, list[dict[str, Any]]]:
    """The file's layout, or every problem of its header row (and of a data-less file)."""
    if header is None:
        return None, [problem("The file is empty: it has no header row and no data.", field="file")]
    names = [column_name(name) for name in header]
    problems = [problem(message, field="file") for message in csv_header.header_problems(names)]
    unknown = [name for name, normal in zip(header, names, strict=True) if normal and normal not in COLUMNS]
    if unknown:
        problems.append(
            problem(
                f"Unknown column{'s' if len(unknown) != 1 else ''} {csv_header.name_list(unknown)}. "
                f"A feedback file has these columns: {_names(list(COLUMNS))}.",
                field="file",
                code="unknown_column",
            )
        )
    present = set(names)
    kinds = [
        kind
        for kind in (IDS, KEYS, BATCH_ROWS)
        if kind in present or (kind == BATCH_ROWS and "row" in present)
    ]
    if not kinds:
        problems.append(
            problem(
                "The file does not name predictions: give a 'prediction_id' column, a 'key' column (with "
                "the model), or 'batch_job' and 'row' columns.",
                field="file",
                code="missing_column",
            )
        )
    elif len(kinds) > 1:
        problems.append(
            problem(
                "Name the predictions one way: 'prediction_id', 'key', or 'batch_job' with 'row'; the file "
                f"has {', '.join(repr(k) if k != BATCH_ROWS else repr('batch_job/row') for k in kinds)}.",
                field="file",
            )
        )
    elif kinds == [BATCH_ROWS] and not {"batch_job", "row"} <= present:
        lacking = "row" if "row" not in present else "batch_job"
        problems.append(
            problem(
                f"A file of batch rows needs both 'batch_job' and 'row' columns; it lacks {lacking!r}.",
                field="file",
                code="missing_column",
            )
        )
    if kinds == [KEYS] and not model_name:
        problems.append(
            problem(
                "A file of keys must name its model (keys are unique per model): choose the model.",
                field="model",
                code="required",
            )
        )
    if not {"true_label", "true_value"} & present:
        problems.append(
            problem(
                "The file gives no outcomes: add a 'true_label' column (classification) or a 'true_value' "
                "column (regression).",
                field="file",
                code="missing_column",
            )
        )
    if not has_rows:
        problems.append(problem("The file has a header row but no data rows.", field="file"))
    if problems:
        return None, problems
    positions = {name: position for position, name in enumerate(names)}
    return Layout(kind=kinds[0], width=len(header), positions=positions, model_name=model_name or None), []


@dataclass
class Chunk:
    """Rows first_row, first_row + 1, … of the file, as read (a row may have the wrong number of fields)."""

    index: int
    first_row: int
    records: list[list[str]]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last_row(self) -> int:
        return self.first_row + len(self.records) - 1


def chunks_read(file: IO[bytes], *, chunk_rows: int, skip: int = 0) -> Iterator[Chunk]:
    """The file's data rows in chunks of `chunk_rows` (the last may hold fewer); the first `skip` chunks
    are read past without being kept. The cut depends only on the file and chunk_rows, so a retry sees
    the same chunks."""
    index, first, kept = 0, 1, []
    keep = skip == 0
    for row, record in records(file):
        if row == 0:
            continue
        if keep:
            kept.append(record)
        if row - first + 1 == chunk_rows:
            if keep:
                yield Chunk(index=index, first_row=first, records=kept)
            index, first, kept = index + 1, row + 1, []
            keep = index >= skip
    if kept:
        yield Chunk(index=index, first_row=first, records=kept)


@dataclass(frozen=True)
class Duplicates:
    """Rows naming a prediction an earlier row of the file already names: `later` ascending, each with
    the `first` row that named it."""

    later: np.ndarray
    first: np.ndarray

    def within(self, chunk: Chunk) -> dict[int, int]:
        """{row: first row naming the same prediction} for the chunk's rows."""
        low = int(np.searchsorted(self.later, chunk.first_row, side="left"))
        high = int(np.searchsorted(self.later, chunk.last_row, side="right"))
        return dict(zip(self.later[low:high].tolist(), self.first[low:high].tolist(), strict=True))


def duplicates_find(file: IO[bytes], layout: Layout, *, progress: Callable[[], None]) -> Duplicates:
    """Every row that names a prediction an earlier row already named: the first pass over the file.

    Duplicates across chunks can only be found by looking at the whole file, so it is read once before
    the chunks are stored. Memory stays small: one 64-bit hash per row in a numpy array (17 bytes a row at
    the peak, 3.4 MB for 200,000 rows), not the references themselves. Rows whose hash repeats are
    candidates; a second pass, only when there are any, reads their references to compare them exactly,
    so a hash collision never refuses a row. The result depends only on the file, so every attempt
    computes the same one, and nothing needs to be kept in the checkpoint.
    `progress` is called every PROGRESS_EVERY_ROWS rows (the caller renews its lease).
    """
    codes = array("q")
    named = bytearray()
    for row, record in records(file):
        if row == 0:
            continue
        reference = layout.reference(record) if len(record) == layout.width else None
        codes.append(0 if reference is None else hash(reference))
        named.append(reference is not None)
        if row % PROGRESS_EVERY_ROWS == 0:
            progress()
    hashes = np.frombuffer(codes, dtype=np.int64) if codes else np.empty(0, dtype=np.int64)
    mask = np.frombuffer(bytes(named), dtype=bool) if named else np.empty(0, dtype=bool)
    ordered = np.sort(hashes[mask])
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    empty = np.empty(0, dtype=np.int64)
    if not len(repeated):
        return Duplicates(later=empty, first=empty)
    candidates = set((np.flatnonzero(mask & np.isin(hashes, repeated)) + 1).tolist())
    del codes, hashes, mask
    first_of: dict[Hashable, int] = {}
    later, first = [], []
    for row, record in records(file):
        if row in candidates:
            reference = layout.reference(record)
            if reference in first_of:
                later.append(row)
                first.append(first_of[reference])
            else:
                first_of[reference] = row
    return Duplicates(later=np.array(later, dtype=np.int64), first=np.array(first, dtype=np.int64))


# A cell a spreadsheet would run as a formula: see predictions' batch outputs.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _safe(text: str) -> str:
    return f"'{text}" if text.startswith(_FORMULA_START) else text


ERRORS_COLUMNS = ("row", "field", "code", "message")


def errors_part(problems: list[dict[str, Any]]) -> bytes:
    """Problems as errors-file rows (no header), in row order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for item in sorted(problems, key=lambda p: p["row"] or 0):
        field = item["field"] or ""
        writer.writerow(
            [item["row"], _safe(COLUMN_OF_FIELD.get(field, field)), item["code"], _safe(item["message"])]
        )
    return out.getvalue().encode("utf-8")


def errors_header() -> bytes:
    return (",".join(ERRORS_COLUMNS) + "\n").encode("utf-8")
