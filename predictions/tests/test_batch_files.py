"""Tests of reading batch files in chunks with row numbers, and of writing parts as CSV."""

from __future__ import annotations

import csv
import io

import pyarrow as pa
import pytest

from predictions.batch import files as batch_files


def chunks_of(text: str, *, chunk_rows: int = 3) -> list[batch_files.Chunk]:
    data = text.encode("utf-8")
    header, _ = batch_files.records_head(io.BytesIO(data))
    return list(batch_files.chunks_read(io.BytesIO(data), header=header, chunk_rows=chunk_rows))


def test_it_cuts_chunks_of_exactly_chunk_rows_rows_numbered_from_one():
    text = "a,b\n" + "".join(f"{i},x{i}\n" for i in range(1, 9))

    chunks = chunks_of(text)

    assert [c.index for c in chunks] == [0, 1, 2]
    assert [c.table.num_rows for c in chunks] == [3, 3, 2]
    assert [c.rows.tolist() for c in chunks] == [[1, 2, 3], [4, 5, 6], [7, 8]]
    assert chunks[1].table.column("b").to_pylist() == ["x4", "x5", "x6"]


def test_blank_lines_are_not_rows_and_quoted_line_breaks_stay_in_their_value():
    text = '\ufeffa,b\r\n1,x\r\n\r\n   \r\n"2\r\nstill 2",y\r\n3,"z, with comma"\r\n'

    (chunk,) = chunks_of(text, chunk_rows=10)

    assert chunk.table.column_names == ["a", "b"]
    assert chunk.rows.tolist() == [1, 2, 3]
    assert chunk.table.column("a").to_pylist() == ["1", "2\r\nstill 2", "3"]
    assert chunk.table.column("b").to_pylist() == ["x", "y", "z, with comma"]
    assert chunk.ragged == []


def test_rows_with_the_wrong_number_of_fields_go_with_the_chunk_of_the_next_good_row():
    lines = ["a,b", "1,x", "2", "3,x", "4,x,extra", "5,x", "6,x", "7,x", "8", "9"]

    chunks = chunks_of("\n".join(lines) + "\n", chunk_rows=2)

    assert [c.rows.tolist() for c in chunks] == [[1, 3], [5, 6], [7]]
    assert [[(r.row, r.fields, r.text) for r in c.ragged] for c in chunks] == [
        [(2, 1, "2")],
        [(4, 3, "4,x,extra")],
        [(8, 1, "8"), (9, 1, "9")],
    ]
    assert [len(c) for c in chunks] == [3, 3, 3]


def test_a_file_of_ragged_rows_only_gives_one_empty_chunk_with_them():
    (chunk,) = chunks_of("a,b\n1\n2\n")

    assert chunk.table.num_rows == 0
    assert [r.row for r in chunk.ragged] == [1, 2]


def test_the_cut_depends_only_on_the_file_and_the_chunk_size(monkeypatch):
    text = "a,b\n" + "".join(f"{i},{'y' * (i % 7)}\n" for i in range(1, 200))
    first = [(c.index, c.rows.tolist()) for c in chunks_of(text, chunk_rows=17)]

    # Arrow's reading blocks do not matter: a retry reading with other blocks cuts the same chunks.
    monkeypatch.setattr(batch_files, "READ_BLOCK_BYTES", 64)
    again = [(c.index, c.rows.tolist()) for c in chunks_of(text, chunk_rows=17)]

    assert again == first


def test_text_that_is_not_utf8_is_a_read_error():
    data = "a,b\n1,x\n2,Jos\xe9\n".encode("latin-1")

    with pytest.raises(batch_files.CsvReadError, match="could not be read as CSV"):
        list(batch_files.chunks_read(io.BytesIO(data), header=["a", "b"], chunk_rows=3))


def test_parts_quote_only_when_some_value_needs_it_and_read_back_the_same():
    plain = pa.table({"a": ["1", "2"], "p": [0.25, None], "n": pa.array([7, None], pa.int64())})
    tricky = pa.table({"a": ['say "hi"', "x,y"], "p": [0.5, 1.0], "n": pa.array([1, 2], pa.int64())})

    assert batch_files.csv_part(plain) == b"1,0.25,7\n2,,\n"
    written = batch_files.csv_part(tricky)
    assert list(csv.reader(io.StringIO(written.decode()))) == [['say "hi"', "0.5", "1"], ["x,y", "1", "2"]]


def test_the_header_line_is_quoted_like_csv():
    assert batch_files.header_line(["a", "b,c", 'd"e']) == b'a,"b,c","d""e"\n'


def test_a_chunk_stored_for_another_worker_comes_back_exactly_as_it_was_cut():
    text = 'a,b\n1,x\n\n2,"y, z"\n3\n4,=1+1\n5,\n'
    for chunk in chunks_of(text, chunk_rows=2):
        back = batch_files.chunk_decode(batch_files.chunk_encode(chunk))

        assert back.index == chunk.index
        assert back.table.equals(chunk.table)
        assert back.table.schema.metadata is None
        assert back.rows.tolist() == chunk.rows.tolist()
        assert back.ragged == chunk.ragged
