"""Reading an uploaded CSV file: byte checks, structure checks naming every problem, the column profile."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pandas as pd

from datasets.models import ColumnKind
from ml import csv_header

# Long lists of bad rows or column names help nobody; the first few locate the problem.
MAX_LISTED = 5
TOP_VALUES = 5
TOP_VALUE_MAX_CHARS = 100
CATEGORICAL_MIN_LIMIT = 20
CATEGORICAL_ROW_FRACTION = 0.05


@dataclass
class ColumnProfile:
    name: str
    kind: str
    dtype: str
    missing_count: int
    missing_ratio: float
    stats: dict[str, Any]


@dataclass
class CsvProfile:
    row_count: int
    columns: list[ColumnProfile]

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def schema(self, *, target_column: str) -> dict[str, Any]:
        return {
            "target_column": target_column,
            "columns": [{"name": c.name, "kind": c.kind, "dtype": c.dtype} for c in self.columns],
        }

    def profile(self) -> dict[str, Any]:
        return {
            "columns": [
                {
                    "name": c.name,
                    "missing_count": c.missing_count,
                    "missing_ratio": c.missing_ratio,
                    "stats": c.stats,
                }
                for c in self.columns
            ]
        }


@dataclass
class CsvReport:
    """The outcome of reading the structure: every problem found, and the profile when there is none."""

    problems: list[str]
    header: list[str]
    profile: CsvProfile | None
    #: The parsed rows under the header's names, when there is a profile.
    frame: pd.DataFrame | None = None


def _is_blank_row(row: list[str]) -> bool:
    # pandas skips blank and whitespace-only lines; count rows the same way.
    return not row or (len(row) == 1 and not row[0].strip())


def read_csv_report(
    file: IO[bytes], *, target_column: str | None, min_rows: int, max_columns: int | None = None
) -> CsvReport:
    """Check the structure of UTF-8 CSV bytes and, when it is sound, profile every column.

    Expects `scan_bytes` to have passed. Problems are collected rather than raised so that the caller
    can report all of them at once; a header wider than `max_columns` is refused before any data row
    is read.
    """
    problems: list[str] = []
    file.seek(0)
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    header: list[str] | None = None
    data_rows = 0
    ragged: list[str] = []
    ragged_count = 0
    try:
        reader = csv.reader(text)
        for row in reader:
            if _is_blank_row(row):
                continue
            if header is None:
                header = row
                if max_columns is not None and len(header) > max_columns:
                    return CsvReport(
                        problems=[
                            f"The file has {len(header)} columns; at most {max_columns} are accepted "
                            "(DATASET_MAX_COLUMNS)."
                        ],
                        header=header,
                        profile=None,
                    )
                continue
            data_rows += 1
            if len(row) != len(header):
                ragged_count += 1
                if len(ragged) < MAX_LISTED:
                    ragged.append(
                        f"Row {data_rows} (line {reader.line_num}) has {_count(len(row), 'field')}, "
                        f"expected {len(header)}."
                    )
    except csv.Error as exc:
        return CsvReport(
            problems=[f"The file could not be read as CSV: {exc} (near line {reader.line_num})."],
            header=header or [],
            profile=None,
        )
    finally:
        text.detach()

    if header is None:
        return CsvReport(
            problems=["The file is empty: it has no header row and no data."], header=[], profile=None
        )

    problems.extend(csv_header.header_problems(header))
    problems.extend(ragged)
    if ragged_count > len(ragged):
        problems.append(f"… and {ragged_count - len(ragged)} more rows with the wrong number of fields.")
    if data_rows < min_rows:
        problems.append(f"The file has {_count(data_rows, 'data row')}; at least {min_rows} are required.")
    if target_column is not None and target_column not in header:
        problems.append(
            f"Target column {target_column!r} is not in the file. "
            f"Available columns: {csv_header.name_list(header)}."
        )
    if ragged_count:
        return CsvReport(problems=problems, header=header, profile=None)

    try:
        frame = _read_frame(file, width=len(header))
    except (pd.errors.ParserError, ValueError) as exc:
        problems.append(f"The file could not be parsed as CSV: {exc}")
        return CsvReport(problems=problems, header=header, profile=None)

    empty = [name for position, name in enumerate(header) if frame.iloc[:, position].isna().all()]
    if empty and len(frame):
        problems.append(f"These columns have no values at all: {csv_header.name_list(empty)}.")
    if problems:
        return CsvReport(problems=problems, header=header, profile=None)
    columns = [_profile_column(header[position], frame.iloc[:, position]) for position in range(len(header))]
    # The header passed the duplicate-name check above, so its names can replace the positional ones.
    frame.columns = header
    return CsvReport(
        problems=[], header=header, profile=CsvProfile(row_count=len(frame), columns=columns), frame=frame
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _read_frame(file: IO[bytes], *, width: int) -> pd.DataFrame:
    file.seek(0)
    # Positional names: pandas would rename duplicate headers, and we report those ourselves.
    return pd.read_csv(
        file,
        encoding="utf-8-sig",
        header=0,
        names=[f"column_{position}" for position in range(width)],
        index_col=False,
        low_memory=False,
    )


def infer_kind(series: pd.Series, *, row_count: int) -> str:
    """Decide how a column is treated downstream.

    - numeric: pandas parsed it as numbers (booleans excluded);
    - categorical: anything else with at most max(20, 5% of the rows) distinct non-missing values;
    - text: the rest (free text, identifiers, dates).
    """
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return ColumnKind.NUMERIC
    limit = max(CATEGORICAL_MIN_LIMIT, math.floor(CATEGORICAL_ROW_FRACTION * row_count))
    if series.nunique(dropna=True) <= limit:
        return ColumnKind.CATEGORICAL
    return ColumnKind.TEXT


def _number(value: Any) -> float | int | None:
    if value is None or pd.isna(value):
        return None
    if isinstance(value, np.integer | int) and not isinstance(value, bool):
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        return None
    return round(number, 6)


def _profile_column(name: str, series: pd.Series) -> ColumnProfile:
    row_count = len(series)
    missing = int(series.isna().sum())
    kind = infer_kind(series, row_count=row_count)
    present = series.dropna()
    stats: dict[str, Any]
    if kind == ColumnKind.NUMERIC:
        finite = present[np.isfinite(present.astype(float))]
        stats = {
            "min": _number(finite.min()) if len(finite) else None,
            "max": _number(finite.max()) if len(finite) else None,
            "mean": _number(finite.mean()) if len(finite) else None,
            "std": _number(finite.std()) if len(finite) > 1 else None,
            "median": _number(finite.median()) if len(finite) else None,
            "unique": int(present.nunique()),
            # Written as inf or -inf in the file: left out of the statistics, and training reads them as
            # missing values (ml.pipeline.frame_prepare); the version page and API warn about them.
            "inf_count": int(np.isinf(present.astype(float)).sum()),
        }
    else:
        counts = present.astype(str).value_counts()
        stats = {
            "unique": int(counts.size),
            "top": [
                {"value": str(value)[:TOP_VALUE_MAX_CHARS], "count": int(count)}
                for value, count in counts.head(TOP_VALUES).items()
            ],
        }
    return ColumnProfile(
        name=name,
        kind=str(kind),
        dtype=str(series.dtype),
        missing_count=missing,
        missing_ratio=round(missing / row_count, 6) if row_count else 0.0,
        stats=stats,
    )
