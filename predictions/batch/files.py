"""Batch CSV files: the input read in chunks of whole rows with their row numbers, and parts written as CSV.

Row numbers count data rows from 1: the header is not counted, nor are blank lines, so row 1 is the first
line after the header in a file without blank lines or line breaks inside quoted values. The result and
errors files and the stored predictions (row_index = row - 1) all use these numbers.

Every cell is read as text (Arrow's CSV reader, single-threaded so that it can number the rows it
refuses): the validation decides what is a number, missing, NaN or infinity, and the result repeats each
input value exactly as written.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

#: Bytes Arrow parses at once; chunks are then cut to an exact number of rows.
READ_BLOCK_BYTES = 1024 * 1024
#: Characters of a malformed line repeated in the errors file.
LINE_SHOWN_CHARS = 200
WRONG_FIELD_COUNT = "wrong_field_count"


class CsvReadError(Exception):
    """The file cannot be read as CSV at all (for example an unterminated quote); the message says where."""


@dataclass(frozen=True)
class RaggedRow:
    """A line whose number of fields differs from the header's: reported, never predicted."""

    row: int
    fields: int
    text: str


@dataclass
class Chunk:
    """Rows [first row, …] of the file: the well-formed ones as a table of text, the others as RaggedRow."""

    index: int
    table: pa.Table
    # The row number of each table row (ascending; gaps where a ragged row was left out).
    rows: np.ndarray
    ragged: list[RaggedRow] = field(default_factory=list)

    def __len__(self) -> int:
        return self.table.num_rows + len(self.ragged)


def _is_blank(record: list[str]) -> bool:
    return not record or (len(record) == 1 and not record[0].strip())


def records_head(file: IO[bytes]) -> tuple[list[str] | None, bool]:
    """The header record and whether a data record follows it (csv.Error when unreadable)."""
    file.seek(0)
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    header: list[str] | None = None
    try:
        for record in csv.reader(text):
            if _is_blank(record):
                continue
            if header is not None:
                return header, True
            header = record
        return header, False
    finally:
        text.detach()


class _Numbering:
    """Row numbers of the rows Arrow keeps, from the records it refused (reported in order)."""

    def __init__(self, width: int) -> None:
        self.width = width
        # Record numbers as Arrow counts them (1 = the header; empty lines not counted).
        self.skipped: list[int] = []
        self.blank: list[int] = []
        self.ragged: list[tuple[int, int, str]] = []

    def on_invalid(self, row: Any) -> str:
        if row.number is None:
            # Only a multi-threaded reader leaves rows unnumbered; this one is single-threaded.
            return "error"
        self.skipped.append(row.number)
        if not row.text.strip():
            # pandas (and the upload check) skips whitespace-only lines as blank: not a row at all.
            self.blank.append(row.number)
        else:
            self.ragged.append((row.number, row.actual_columns, row.text))
        return "skip"

    def records(self, ordinals: np.ndarray) -> np.ndarray:
        """Record numbers of the kept rows with these ordinals (0-based among kept rows)."""
        if not self.skipped:
            return ordinals + 2
        skipped = np.asarray(self.skipped, dtype="int64")
        kept_before = skipped - 2 - np.arange(len(skipped))
        return ordinals + 2 + np.searchsorted(kept_before, ordinals, side="right")

    def row_of(self, records: np.ndarray) -> np.ndarray:
        if not self.blank:
            return records - 1
        return records - 1 - np.searchsorted(np.asarray(self.blank, dtype="int64"), records, side="left")

    def ragged_before(self, record: int | None) -> list[RaggedRow]:
        """Take the ragged rows with record numbers below `record` (all of them when None)."""
        taken = [r for r in self.ragged if record is None or r[0] < record]
        if not taken:
            return []
        self.ragged = self.ragged[len(taken) :]
        rows = self.row_of(np.array([r[0] for r in taken], dtype="int64"))
        return [
            RaggedRow(row=int(row), fields=fields, text=text[:LINE_SHOWN_CHARS])
            for row, (_, fields, text) in zip(rows, taken, strict=True)
        ]


def chunks_read(file: IO[bytes], *, header: list[str], chunk_rows: int) -> Iterator[Chunk]:
    """The file's rows in chunks of `chunk_rows` well-formed rows (the last may hold fewer).

    The cut depends only on the file and chunk_rows, so a retry sees the same chunks. A ragged row goes
    with the chunk of the next well-formed row (the last chunk takes those after the last one).
    """
    numbering = _Numbering(len(header))
    try:
        reader = pacsv.open_csv(
            file,
            read_options=pacsv.ReadOptions(block_size=READ_BLOCK_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=numbering.on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise CsvReadError(f"The file could not be read as CSV: {exc}") from exc
    if reader.schema.names != header:
        raise CsvReadError(
            f"The file's header changed since it was checked: {reader.schema.names} is not {header}."
        )
    buffered: list[pa.RecordBatch] = []
    count = 0
    ordinal = 0
    index = 0

    def cut(table: pa.Table, *, last: bool) -> Chunk:
        records = numbering.records(np.arange(ordinal, ordinal + table.num_rows, dtype="int64"))
        ragged = numbering.ragged_before(None if last else int(records[-1]))
        return Chunk(index=index, table=table, rows=numbering.row_of(records), ragged=ragged)

    try:
        for batch in reader:
            if not batch.num_rows:
                continue
            buffered.append(batch)
            count += batch.num_rows
            while count >= chunk_rows:
                table = pa.Table.from_batches(buffered)
                yield cut(table.slice(0, chunk_rows), last=False)
                rest = table.slice(chunk_rows)
                buffered = rest.to_batches() if rest.num_rows else []
                count -= chunk_rows
                ordinal += chunk_rows
                index += 1
    except pa.ArrowInvalid as exc:
        raise CsvReadError(f"The file could not be read as CSV: {exc}") from exc
    if count or numbering.ragged:
        table = pa.Table.from_batches(buffered, schema=reader.schema)
        yield cut(table, last=True)


def chunk_encode(chunk: Chunk) -> bytes:
    """The chunk as an Arrow stream, for a worker that did not read the file: its table, then its row
    numbers as one more (last) column; its index and ragged rows in the schema's metadata."""
    table = chunk.table.append_column("row", pa.array(chunk.rows, pa.int64()))
    ragged = [[r.row, r.fields, r.text] for r in chunk.ragged]
    table = table.replace_schema_metadata({"index": str(chunk.index), "ragged": json.dumps(ragged)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def chunk_decode(data: bytes) -> Chunk:
    """The chunk chunk_encode stored, exactly as chunks_read cut it."""
    table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    metadata = table.schema.metadata or {}
    last = table.num_columns - 1
    rows = table.column(last).to_numpy().astype("int64", copy=False)
    ragged = [
        RaggedRow(row=row, fields=fields, text=text) for row, fields, text in json.loads(metadata[b"ragged"])
    ]
    return Chunk(
        index=int(metadata[b"index"]),
        table=table.remove_column(last).replace_schema_metadata(None),
        rows=rows,
        ragged=ragged,
    )


def csv_part(table: pa.Table) -> bytes:
    """Rows as CSV without a header; values are quoted only when some value in the part needs it."""
    out = io.BytesIO()
    try:
        pacsv.write_csv(
            table, out, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none")
        )
    except pa.ArrowInvalid:
        # A value holds a comma, quote or line break: Arrow then quotes every text value, which is valid
        # CSV and far faster than quoting only where needed in Python.
        out = io.BytesIO()
        pacsv.write_csv(
            table, out, write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed")
        )
    return out.getvalue()


def header_line(names: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(names)
    return buffer.getvalue().encode("utf-8")
