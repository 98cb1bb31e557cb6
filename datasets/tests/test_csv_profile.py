"""Byte checks, structure checks and the column profile of uploaded CSV files."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from datasets import csv_profile
from ml import csv_bytes
from tests.factories import make_classification_frame, make_csv_bytes


def problems_of(
    content: bytes, *, target: str | None = "label", min_rows: int = 3, max_bytes: int = 10**6
) -> list[str]:
    handle = io.BytesIO(content)
    scan = csv_bytes.scan_bytes(handle, max_bytes=max_bytes)
    if not scan.is_readable_text:
        return scan.problems
    return csv_profile.read_csv_report(handle, target_column=target, min_rows=min_rows).problems


def profile_of(content: bytes, *, target: str = "label") -> csv_profile.CsvProfile:
    report = csv_profile.read_csv_report(io.BytesIO(content), target_column=target, min_rows=1)
    assert report.problems == []
    assert report.profile is not None
    return report.profile


def test_it_hashes_and_sizes_the_file_in_one_pass():
    content = make_csv_bytes(make_classification_frame(30))
    scan = csv_bytes.scan_bytes(io.BytesIO(content), max_bytes=10**6)
    import hashlib

    assert scan.sha256 == hashlib.sha256(content).hexdigest()
    assert scan.size_bytes == len(content)
    assert scan.problems == []


def test_it_profiles_numeric_and_categorical_columns():
    frame = make_classification_frame(40)
    profile = profile_of(make_csv_bytes(frame))

    assert profile.row_count == 40
    assert profile.column_names == ["age", "income", "city", "label"]
    kinds = {column.name: column.kind for column in profile.columns}
    assert kinds == {"age": "numeric", "income": "numeric", "city": "categorical", "label": "categorical"}
    income = next(column for column in profile.columns if column.name == "income")
    assert income.stats["min"] == pytest.approx(frame["income"].min())
    assert income.stats["max"] == pytest.approx(frame["income"].max())
    assert income.stats["mean"] == pytest.approx(frame["income"].mean(), abs=1e-5)
    assert income.stats["std"] == pytest.approx(frame["income"].std(), abs=1e-5)
    assert income.stats["median"] == pytest.approx(frame["income"].median())
    city = next(column for column in profile.columns if column.name == "city")
    counts = frame["city"].value_counts()
    assert city.stats["unique"] == 3
    assert {item["value"]: item["count"] for item in city.stats["top"]} == counts.to_dict()


def test_it_reports_missing_values_per_column():
    content = b"x,y,label\n1,,a\n,,b\n3,z,a\n4,w,b\n"
    profile = profile_of(content)
    by_name = {column.name: column for column in profile.columns}

    assert by_name["x"].missing_count == 1
    assert by_name["x"].missing_ratio == 0.25
    assert by_name["y"].missing_ratio == 0.5
    assert by_name["label"].missing_ratio == 0.0


def test_schema_and_profile_are_json_ready_in_file_order():
    profile = profile_of(b"b,a,label\n1,inf,x\n2,3,y\n")
    schema = profile.schema(target_column="label")

    assert schema["target_column"] == "label"
    assert [column["name"] for column in schema["columns"]] == ["b", "a", "label"]
    # An infinite value must not reach the JSON column, where it is not valid JSON.
    assert profile.profile()["columns"][1]["stats"]["max"] == 3


@pytest.mark.parametrize(
    ("distinct", "rows", "kind"),
    [
        (20, 100, "categorical"),
        (21, 100, "text"),
        (50, 1000, "categorical"),
        (51, 1000, "text"),
    ],
)
def test_it_calls_strings_categorical_up_to_max_of_20_and_5_percent_of_rows(distinct, rows, kind):
    series = pd.Series([f"value-{i % distinct}" for i in range(rows)])
    assert csv_profile.infer_kind(series, row_count=rows) == kind


def test_it_treats_booleans_as_categorical_and_numbers_as_numeric():
    assert csv_profile.infer_kind(pd.Series([True, False, True]), row_count=3) == "categorical"
    assert csv_profile.infer_kind(pd.Series(np.arange(100)), row_count=100) == "numeric"


def test_it_accepts_a_utf8_byte_order_mark_and_drops_it_from_the_first_name():
    profile = profile_of(b"\xef\xbb\xbfid,label\n1,a\n2,b\n")
    assert profile.column_names == ["id", "label"]


def test_it_rejects_an_empty_file():
    assert problems_of(b"") == ["The file is empty."]


def test_it_rejects_a_file_of_blank_lines_as_having_no_header():
    assert problems_of(b"  \n\n\n") == ["The file is empty: it has no header row and no data."]


def test_it_names_the_offset_of_the_first_byte_that_is_not_utf8():
    problems = problems_of("name,label\ncafé,a\n".encode("latin-1"))
    assert len(problems) == 1
    assert "not valid UTF-8" in problems[0]
    assert "byte 0xE9 at offset 14" in problems[0]


def test_it_finds_a_bad_byte_split_across_read_chunks(monkeypatch):
    monkeypatch.setattr(csv_bytes, "CHUNK_SIZE", 4)
    # A euro sign cut short at offset 10: the decoder only notices in the next chunk, at offset 12.
    content = b"abc,label\n\xe2\x82\xe2\x82\xac,x\n"
    problems = problems_of(content)
    assert "byte 0xE2 at offset 10" in problems[0]


def test_it_reports_a_truncated_multibyte_character_at_the_end():
    problems = problems_of(b"a,label\n1,\xe2\x82")
    assert "offset 10" in problems[0]


def test_it_recognises_utf16_and_suggests_saving_as_utf8():
    problems = problems_of("a,label\n1,x\n".encode("utf-16"))
    assert any("looks like UTF-16" in problem for problem in problems)
    assert any("NUL byte" in problem for problem in problems)


def test_it_rejects_binary_content_with_nul_bytes():
    problems = problems_of(b"a,label\n1,\x00\x01\x02\n")
    assert problems == [
        "This is not a CSV file: it contains binary data (a NUL byte at offset 10). "
        "Upload comma-separated text."
    ]


def test_it_recognises_a_spreadsheet_uploaded_instead_of_csv():
    problems = problems_of(b"PK\x03\x04" + bytes(range(256)))
    assert problems == [
        "This is not a CSV file: it looks like a ZIP archive (an .xlsx workbook or a .zip file). "
        "Upload comma-separated text."
    ]


def test_it_stops_reading_a_file_over_the_size_limit():
    problems = problems_of(b"a,label\n" + b"1,x\n" * 1000, max_bytes=2 * 1024 * 1024 // 1024)
    assert problems == ["The file is larger than the upload limit of 0.00195312 MB."]


def test_it_rejects_a_first_row_of_numbers_as_a_missing_header():
    problems = problems_of(b"1,2.5,\n3,4,5\n6,7,8\n9,1,2\n", target=None)
    assert problems == [
        "The first row does not look like a header: every field is a number or blank. "
        "Add a header row with the column names."
    ]


def test_it_names_duplicate_columns_from_the_raw_header():
    problems = problems_of(b"a,b,a,label,b\n1,2,3,x,4\n1,2,3,y,4\n1,2,3,z,4\n")
    assert problems == ["Column names must be unique; these appear more than once: 'a', 'b'."]


def test_it_names_columns_without_a_name():
    problems = problems_of(b"a,,label\n1,2,x\n1,2,y\n1,2,z\n")
    assert problems == ["Column 2 has no name in the header row; every column needs one."]


def test_it_names_a_missing_target_and_lists_the_available_columns():
    problems = problems_of(b"a,b\n1,2\n3,4\n5,6\n", target="price")
    assert problems == ["Target column 'price' is not in the file. Available columns: 'a', 'b'."]


def test_it_names_columns_that_are_entirely_empty():
    problems = problems_of(b"a,empty,label,void\n1,,x,\n2,,y,\n3,,z,\n")
    assert problems == ["These columns have no values at all: 'empty', 'void'."]


def test_it_rejects_too_few_rows():
    problems = problems_of(b"a,label\n1,x\n2,y\n", min_rows=5)
    assert problems == ["The file has 2 data rows; at least 5 are required."]


def test_it_lists_ragged_rows_with_their_row_and_line_numbers():
    content = b"a,b,label\n1,2,x\n1,2\n\n1,2,x,9\n" + b"1\n" * 7
    problems = problems_of(content)
    assert problems[:2] == [
        "Row 2 (line 3) has 2 fields, expected 3.",
        "Row 3 (line 5) has 4 fields, expected 3.",
    ]
    assert problems[2] == "Row 4 (line 6) has 1 field, expected 3."
    assert problems[4] == "Row 6 (line 8) has 1 field, expected 3."
    assert problems[5] == "… and 4 more rows with the wrong number of fields."


def test_it_hints_at_a_semicolon_separated_file():
    problems = problems_of(b"a;b;label\n1;2;x\n3;4;y\n5;6;z\n")
    assert (
        "The file seems to separate fields with semicolons; only comma-separated files are accepted."
        in problems
    )


def test_it_reports_every_problem_of_a_file_at_once():
    content = b"a,a,,empty\n1,2,3,\n4,5\n"
    problems = problems_of(content, target="label", min_rows=5)
    assert problems == [
        "Column 3 has no name in the header row; every column needs one.",
        "Column names must be unique; these appear more than once: 'a'.",
        "Row 2 (line 3) has 2 fields, expected 4.",
        "The file has 2 data rows; at least 5 are required.",
        "Target column 'label' is not in the file. Available columns: 'a', 'a', '', 'empty'.",
    ]


def test_it_reads_a_stream_that_cannot_seek_through_a_spooled_copy():
    class OneWay(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    content = make_csv_bytes(make_classification_frame(12))
    with csv_bytes.seekable(OneWay(content)) as copy:
        assert copy.read() == content
        copy.seek(0)
        assert copy.read() == content
    assert copy.closed
