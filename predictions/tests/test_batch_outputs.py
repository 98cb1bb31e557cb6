"""Tests of the spreadsheet guard on batch output files: the fast first-byte path against a per-cell rule."""

from __future__ import annotations

import re

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from predictions.batch.outputs import spreadsheet_safe, spreadsheet_safe_names

_PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def guarded(cell: str | None) -> str | None:
    """The rule, one cell at a time: quote a cell a spreadsheet would run, unless it is a plain number."""
    if cell is None or not cell or cell[0] not in "=+-@\t\r" or _PLAIN_NUMBER.fullmatch(cell):
        return cell
    return "'" + cell


cells = st.one_of(
    st.none(),
    st.text(alphabet='=+-@\t\r0123456789.eEaé," ', max_size=8),
    st.from_regex(r"[+-]?[0-9]{1,4}(\.[0-9]{0,3})?([eE][+-]?[0-9]{1,2})?", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.lists(cells, max_size=12), min_size=1, max_size=4),
    start=st.integers(min_value=0, max_value=5),
)
def test_every_cell_is_guarded_as_the_per_cell_rule_says(chunks, start):
    column = pa.chunked_array([pa.array(c, pa.string()) for c in chunks], type=pa.string())
    # A slice starts inside a chunk, so its arrays have an offset into their buffers.
    column = column.slice(min(start, len(column)))
    table = pa.table({"text": column, "number": pa.array(range(len(column)), pa.int64())})

    safe = spreadsheet_safe(table)

    assert safe.column("text").to_pylist() == [guarded(c) for c in column.to_pylist()]
    assert safe.column("number").to_pylist() == list(range(len(column)))


def test_a_column_of_numbers_is_returned_unchanged():
    column = pa.chunked_array([pa.array(["1.5", "-2", "+3e2", "", ".5", "-.25E-3"])])

    safe = spreadsheet_safe(pa.table({"x": column}))

    assert safe.column("x").to_pylist() == column.to_pylist()


def test_formulas_signed_words_and_control_characters_are_quoted():
    values = ["=1+1", "+cmd", "-x", "@SUM(A1)", "\tParis", "\rx", "- 1", "1e5", "Paris", "=", "-"]

    safe = spreadsheet_safe(pa.table({"x": pa.array(values)}))

    assert safe.column("x").to_pylist() == [
        "'=1+1", "'+cmd", "'-x", "'@SUM(A1)", "'\tParis", "'\rx", "'- 1", "1e5", "Paris", "'=", "'-"
    ]  # fmt: skip


def test_header_names_are_guarded_like_cells():
    assert spreadsheet_safe_names(["age", "=cmd()", "-1"]) == ["age", "'=cmd()", "-1"]
