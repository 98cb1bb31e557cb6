"""The dataset_upload and load_demo_datasets management commands."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, ManagementUtility, call_command

from datasets.models import Dataset, DatasetVersion
from datasets.tests.helpers import unique_csv
from mlops_site import storage

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_dataset_upload_creates_a_version_and_reports_it(tmp_path, admin_user):
    path = tmp_path / "churn.csv"
    path.write_bytes(unique_csv(rows=12))

    output = run(
        "dataset_upload", str(path), "--name", "churn", "--target", "label", "--description", "Churn"
    )

    version = DatasetVersion.objects.get()
    assert output.startswith("Created version 1 of dataset churn (12 rows, 4 columns, sha256 ")
    assert version.original_filename == "churn.csv"
    assert version.created_by == admin_user
    assert version.dataset.description == "Churn"


def test_dataset_upload_of_the_same_file_reports_the_existing_version(tmp_path):
    path = tmp_path / "churn.csv"
    path.write_bytes(unique_csv())
    run("dataset_upload", str(path), "--name", "churn", "--target", "label")

    output = run("dataset_upload", str(path), "--name", "churn")

    assert output.startswith("Unchanged: version 1 of dataset churn already holds this file")
    assert DatasetVersion.objects.count() == 1


def test_dataset_upload_records_the_parent_version_and_the_named_user(tmp_path, alice):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_bytes(unique_csv())
    second.write_bytes(unique_csv())
    run("dataset_upload", str(first), "--name", "churn", "--target", "label")

    run("dataset_upload", str(second), "--name", "churn", "--parent-version", "1", "--user", "alice")

    latest = DatasetVersion.objects.get(version=2)
    assert latest.parent.version == 1
    assert latest.created_by == alice


def test_dataset_upload_lists_every_problem_and_fails(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,a\n1,2\n")

    with pytest.raises(CommandError) as caught:
        run("dataset_upload", str(path), "--name", "churn")

    message = str(caught.value)
    assert message.startswith("The file was not stored:\n- ")
    assert "A target column is required for the first version of dataset 'churn'." in message
    assert "these appear more than once: 'a'" in message
    assert Dataset.objects.count() == 0


def test_dataset_upload_of_a_missing_file_fails_clearly(tmp_path):
    with pytest.raises(CommandError, match=r"Cannot read .*missing\.csv: No such file or directory"):
        run("dataset_upload", str(tmp_path / "missing.csv"), "--name", "churn", "--target", "label")


def test_dataset_upload_of_an_unknown_user_fails(tmp_path):
    path = tmp_path / "churn.csv"
    path.write_bytes(unique_csv())
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("dataset_upload", str(path), "--name", "churn", "--target", "label", "--user", "nobody")


def test_dataset_upload_exits_with_status_1_and_writes_errors_to_stderr(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"")

    with pytest.raises(SystemExit) as exited:
        ManagementUtility(
            ["manage.py", "dataset_upload", str(path), "--name", "x", "--target", "y"]
        ).execute()

    assert exited.value.code == 1
    assert "The file is empty." in capsys.readouterr().err


def test_load_demo_datasets_uploads_three_labelled_datasets_once(staff):
    output = run("load_demo_datasets")

    assert output.splitlines() == [
        "breast-cancer: version 1 created (569 rows).",
        "iris: version 1 created (150 rows).",
        "diabetes: version 1 created (442 rows).",
    ]
    versions = {v.dataset.name: v for v in DatasetVersion.objects.select_related("dataset")}
    assert versions["breast-cancer"].target_column == "target"
    assert versions["iris"].target_column == "species"
    assert versions["diabetes"].target_column == "target"
    assert all(v.created_by == staff for v in versions.values())
    cancer = storage.read_csv(versions["breast-cancer"].object_key)
    assert set(cancer["target"]) == {"malignant", "benign"}
    iris = storage.read_csv(versions["iris"].object_key)
    assert set(iris["species"]) == {"setosa", "versicolor", "virginica"}
    diabetes_target = next(c for c in versions["diabetes"].schema["columns"] if c["name"] == "target")
    assert diabetes_target["kind"] == "numeric"

    again = run("load_demo_datasets")

    assert again.splitlines() == [
        "breast-cancer: version 1 already present (569 rows).",
        "iris: version 1 already present (150 rows).",
        "diabetes: version 1 already present (442 rows).",
    ]
    assert DatasetVersion.objects.count() == 3


def test_load_demo_datasets_needs_a_staff_user(alice):
    with pytest.raises(CommandError, match="No staff user exists yet"):
        run("load_demo_datasets")
    assert Dataset.objects.count() == 0


def test_load_demo_datasets_prefers_the_named_user(staff, bob):
    run("load_demo_datasets", "--user", "bob")
    assert set(DatasetVersion.objects.values_list("created_by__username", flat=True)) == {"bob"}
