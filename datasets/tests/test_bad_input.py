"""Hostile dataset files: too many columns refused on the header; infinite values counted and warned about."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from datasets import csv_profile
from datasets.models import Dataset
from datasets.tests.helpers import is_stored, upload
from mlops_site.tests.helpers import error_body, messages_of


def wide_csv(columns: int, rows: int = 12) -> bytes:
    header = [f"f{i}" for i in range(columns - 1)] + ["label"]
    lines = [",".join(header)]
    lines += [
        ",".join([str(r + i) for i in range(columns - 1)] + ["yes" if r % 2 else "no"]) for r in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def test_a_file_wider_than_the_column_limit_is_refused_naming_the_limit(staff, settings):
    settings.DATASET_MAX_COLUMNS = 50
    content = wide_csv(51)

    with pytest.raises(ValidationError) as caught:
        upload(content, user=staff)

    assert caught.value.messages == [
        "The file has 51 columns; at most 50 are accepted (DATASET_MAX_COLUMNS)."
    ]
    assert not Dataset.objects.exists()
    assert not is_stored(content)


def test_a_file_as_wide_as_the_limit_is_accepted(staff, settings):
    settings.DATASET_MAX_COLUMNS = 50

    version, created = upload(wide_csv(50), user=staff)

    assert created
    assert version.column_count == 50


def test_the_column_limit_is_checked_on_the_header_before_any_row_is_read(settings):
    # The rows after the header are not even CSV: only the header is read.
    content = wide_csv(1001, rows=0) + b'"unterminated\n' * 3

    report = csv_profile.read_csv_report(
        io.BytesIO(content), target_column="label", min_rows=10, max_columns=1000
    )

    assert report.problems == ["The file has 1001 columns; at most 1000 are accepted (DATASET_MAX_COLUMNS)."]


def test_the_api_refuses_ten_thousand_columns_with_a_400(staff):
    client = APIClient()
    client.force_authenticate(staff)
    content = wide_csv(10_001)

    response = client.post(
        "/api/datasets/",
        {"name": "wide", "target_column": "label", "file": SimpleUploadedFile("wide.csv", content)},
        format="multipart",
    )

    body = error_body(response, 400, "invalid")
    assert messages_of(body) == [
        "The file has 10001 columns; at most 1000 are accepted (DATASET_MAX_COLUMNS)."
    ]


INF_CSV = b"x,y,label\n" + b"".join(
    f"{value},{i},{'yes' if i % 2 else 'no'}\n".encode()
    for i, value in enumerate(["inf", "-inf", "1", "2", "3", "-Infinity", "4", "5", "6", "7", "8", "9"])
)


def test_infinite_values_are_counted_per_column_and_warned_about_in_the_api_and_page(staff):
    version, _ = upload(INF_CSV, user=staff)

    stats = {column["name"]: column["stats"] for column in version.profile["columns"]}
    assert stats["x"]["inf_count"] == 3
    assert stats["y"]["inf_count"] == 0
    assert (stats["x"]["min"], stats["x"]["max"]) == (1, 9)
    api = APIClient()
    api.force_authenticate(staff)
    body = api.get("/api/datasets/churn/versions/1/").json()
    (warning,) = body["warnings"]
    assert warning.startswith("Column 'x' holds 3 infinite values (inf or -inf)")
    assert "read as missing values in training" in warning
    assert body["columns"][0]["stats"]["inf_count"] == 3
    page = Client()
    page.force_login(staff)
    html = page.get("/datasets/churn/versions/1/").content.decode()
    assert "Column &#x27;x&#x27; holds 3 infinite values" in html
    assert "3 infinite" in html


def test_a_dataset_without_infinite_values_has_no_warning(staff):
    version, _ = upload(
        INF_CSV.replace(b"-Infinity", b"0").replace(b"-inf", b"0").replace(b"inf", b"0"), user=staff
    )

    assert version.warnings == []
