"""Tests for moving a model version between sites: `model_export` on staging, `model_import` on production.

A version is trained once per module on a "staging" site (its own database transaction, media folder,
MLflow store and SITE_NAME, all rolled back or left behind afterwards) and exported. Each test then runs as
the "production" site: an empty database, media folder and MLflow store of its own. Every MLflow store
starts as a copy of one migrated once per module, since migrating a store takes seconds.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import skops.io
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from sklearn.base import BaseEstimator

from datasets.models import Dataset, DatasetVersion
from ml import artifacts, onnx_export, predictor
from ml.train import model_train
from mlops_site import storage
from models_registry import mlflow_gateway, transfer
from models_registry.models import ModelVersion, RegisteredModel, Stage
from models_registry.tests import mlflow_helpers
from training.tests.helpers import cancer_frame, dataset_upload, run_train, stored_model_files, version_of

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class StagingExport:
    """What the staging site exported, and what it knew about the version, to compare with."""

    tar: bytes
    # The same version as if the source had kept it out of MLflow (an upload): imported without MLflow.
    tar_outside_mlflow: bytes
    tar_with_dataset: bytes
    zip_outside_mlflow: bytes
    fields: dict[str, Any]
    dataset_sha256: str
    dataset_rows: int
    training_run_key: str
    predictions: tuple[list[Any], list[list[float]] | None]
    rows: list[dict[str, Any]]


def _export_bytes(version: ModelVersion, *, kind: str, with_dataset: bool = False) -> bytes:
    buffer = io.BytesIO()
    transfer.model_version_export(
        model_version=version, output=buffer, archive_kind=kind, with_dataset=with_dataset
    )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow store with every table migrated, for the sites of this module to copy."""
    folder = tmp_path_factory.mktemp("mlflow-template")
    store = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri())
    store.engine.dispose()
    return folder / "mlflow.db"


def mlflow_store_copy(template: Path, tracking_uri: str) -> None:
    shutil.copyfile(template, tracking_uri.removeprefix("sqlite:///"))


@pytest.fixture
def production_mlflow(mlflow_template, settings) -> None:
    """This test's MLflow store (the production site's), ready without migrating it."""
    mlflow_store_copy(mlflow_template, settings.MLFLOW_TRACKING_URI)


@pytest.fixture(scope="module")
def staging(django_db_setup, django_db_blocker, tmp_path_factory, mlflow_template) -> StagingExport:
    folder = tmp_path_factory.mktemp("staging-site")
    mlflow_store_copy(mlflow_template, f"sqlite:///{folder / 'mlflow.db'}")
    site = override_settings(
        SITE_NAME="staging",
        CSRF_TRUSTED_ORIGINS=["https://staging.example.com"],
        STORAGES={
            "default": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(folder / "media")},
            },
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
        MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}",
        MLFLOW_ARTIFACT_ROOT=(folder / "mlflow-artifacts").as_uri(),
    )
    with django_db_blocker.unblock(), site, transaction.atomic():
        dataset = dataset_upload(cancer_frame(80), name="cancer", target="diagnosis")
        version = version_of(run_train(dataset, model_name="cancer"))
        assert version.skops_key
        assert version.onnx_key, version.onnx_reason
        ModelVersion.objects.filter(pk=version.pk).update(stage=Stage.STAGING)
        version.refresh_from_db()
        rows = cancer_frame(6).drop(columns=["diagnosis"]).to_dict("records")
        model = predictor.SklearnPredictor(
            storage.read_bytes(version.skops_key),
            sha256=version.skops_sha256,
            feature_schema=version.feature_schema,
        )
        exported = StagingExport(
            tar=_export_bytes(version, kind="tar"),
            tar_outside_mlflow=tar_of(
                with_manifest(
                    tar_members(_export_bytes(version, kind="tar")),
                    lambda manifest: manifest["version"].update(mlflow_version=None),
                )
            ),
            tar_with_dataset=_export_bytes(version, kind="tar.gz", with_dataset=True),
            zip_outside_mlflow=zip_of(
                with_manifest(
                    tar_members(_export_bytes(version, kind="tar")),
                    lambda manifest: manifest["version"].update(mlflow_version=None),
                )
            ),
            fields={
                field: getattr(version, field)
                for field in (
                    "version",
                    "task",
                    "algorithm",
                    "params",
                    "seed",
                    "feature_schema",
                    "target_column",
                    "classes",
                    "metrics",
                    "artifacts",
                    "training_summary",
                    "reference_profile",
                    "example_rows",
                    "skops_sha256",
                    "onnx_sha256",
                    "mlflow_run_id",
                    "mlflow_version",
                )
            },
            dataset_sha256=dataset.sha256,
            dataset_rows=dataset.row_count,
            training_run_key=str(version.training_run.key),
            predictions=model.predict(rows),
            rows=rows,
        )
        transaction.set_rollback(True)
    return exported


def write(tmp_path: Path, data: bytes, name: str = "cancer-v1.tar") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def import_archive(path: Path, **options: Any) -> str:
    out = io.StringIO()
    call_command("model_import", str(path), stdout=out, **options)
    return out.getvalue()


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        return {member.name: tar.extractfile(member).read() for member in tar}


def tar_of(members: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def with_manifest(members: dict[str, bytes], change: Any) -> dict[str, bytes]:
    manifest = json.loads(members["manifest.json"])
    change(manifest)
    return {**members, "manifest.json": json.dumps(manifest).encode()}


def nothing_was_written() -> None:
    assert not ModelVersion.objects.exists()
    assert not RegisteredModel.objects.exists()
    assert not DatasetVersion.objects.exists()
    assert not Dataset.objects.exists()
    assert stored_model_files("models") == []
    assert stored_model_files("datasets") == []
    if Path(settings.MLFLOW_TRACKING_URI.removeprefix("sqlite:///")).exists():
        assert mlflow_helpers.client().search_model_versions() == []


def refused(path: Path, *, expected: str) -> str:
    with pytest.raises(CommandError) as caught:
        import_archive(path)
    message = str(caught.value)
    assert expected in message, message
    nothing_was_written()
    return message


# ------------------------------------------------------------------------------
# The round trip
# ------------------------------------------------------------------------------
def test_a_version_moves_from_staging_to_production_with_its_files_lineage_and_predictions(
    staging, staff, tmp_path, settings, production_mlflow
):
    settings.SITE_NAME = "production"
    output = import_archive(write(tmp_path, staging.tar_with_dataset, "cancer-v1.tar.gz"))

    assert "Imported cancer v1 in stage none; dataset cancer v1 created." in output
    version = ModelVersion.objects.get()
    source = staging.fields
    assert version.stage == Stage.NONE
    assert version.source == ModelVersion.Source.IMPORTED
    assert version.created_by == staff
    for field in ("task", "algorithm", "params", "seed", "feature_schema", "target_column", "classes"):
        assert getattr(version, field) == source[field], field
    for field in ("metrics", "artifacts", "reference_profile", "example_rows", "skops_sha256", "onnx_sha256"):
        assert getattr(version, field) == source[field], field
    summary = dict(version.training_summary)
    imported_from = summary.pop("imported_from")
    assert summary == source["training_summary"]
    assert imported_from["site_name"] == "staging"
    assert imported_from["site_url"] == "https://staging.example.com"
    assert (imported_from["model"], imported_from["version"], imported_from["stage"]) == (
        "cancer",
        1,
        "staging",
    )
    assert imported_from["mlflow_run_id"] == source["mlflow_run_id"]
    assert imported_from["dataset"]["sha256"] == staging.dataset_sha256
    assert imported_from["dataset"]["row_count"] == staging.dataset_rows
    assert "diagnosis" in [column["name"] for column in imported_from["dataset"]["columns"]]
    assert imported_from["training_run"]["key"] == staging.training_run_key
    assert imported_from["training_run"]["params"] == {"n_estimators": 10, "max_depth": 4}
    assert imported_from["trained_at"]

    # The files are in production's storage under their content address, byte for byte.
    assert storage.sha256_of(version.skops_key) == source["skops_sha256"]
    assert storage.sha256_of(version.onnx_key) == source["onnx_sha256"]
    onnx_model = predictor.predictor_from_artifacts(
        feature_schema=version.feature_schema,
        onnx_bytes=storage.read_bytes(version.onnx_key),
        onnx_sha256=version.onnx_sha256,
        classes=version.classes,
    )
    labels, probabilities = onnx_model.predict(staging.rows)
    assert labels == staging.predictions[0]
    assert np.allclose(probabilities, staging.predictions[1], atol=onnx_export.PROBABILITY_ATOL)

    # The dataset version is recorded again with the same content and a note of where it came from.
    dataset = version.dataset_version
    assert (dataset.dataset.name, dataset.sha256, dataset.row_count) == (
        "cancer",
        staging.dataset_sha256,
        staging.dataset_rows,
    )
    assert dataset.lineage["imported_from"]["site_name"] == "staging"
    assert storage.sha256_of(dataset.object_key) == staging.dataset_sha256

    # Registered in production's MLflow, as trained versions are, with the source named on the run.
    assert version.mlflow_version == 1
    run = mlflow_helpers.run_read(version.mlflow_run_id)
    assert version.mlflow_run_id != source["mlflow_run_id"]
    assert run.tags["import.source_site"] == "staging"
    assert run.tags["import.source_mlflow_run_id"] == source["mlflow_run_id"]
    assert run.metrics == pytest.approx(source["metrics"])
    # The same archive again changes nothing, in the registry or in MLflow.
    again = import_archive(write(tmp_path, staging.tar_with_dataset, "cancer-v1.tar.gz"))
    assert "Unchanged: this archive is already cancer v1" in again
    assert ModelVersion.objects.count() == 1
    assert len(mlflow_helpers.client().search_model_versions("name = 'cancer'")) == 1
    served = mlflow_helpers.registered_model_read(
        name="cancer", version=1, trusted=list(artifacts.TRUSTED_TYPES)
    )
    assert served.predict(onnx_model_frame(version, staging.rows)).tolist() == staging.predictions[0]


def onnx_model_frame(version: ModelVersion, rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    from ml.pipeline import columns_from_rows

    return pd.DataFrame(columns_from_rows(rows, version.feature_schema))


def test_importing_the_same_zip_archive_twice_keeps_one_version(staging, tmp_path):
    path = write(tmp_path, staging.zip_outside_mlflow, "cancer-v1.zip")

    first = import_archive(path)
    again = import_archive(path)

    assert "Imported cancer v1 in stage none" in first
    assert "Unchanged: this archive is already cancer v1" in again
    assert ModelVersion.objects.count() == 1
    assert ModelVersion.objects.get().mlflow_version is None


def test_an_archive_is_imported_under_another_name_as_its_next_version(staging, tmp_path):
    path = write(tmp_path, staging.tar_outside_mlflow)
    import_archive(path, name="churn")
    import_archive(path)

    assert sorted(ModelVersion.objects.values_list("registered_model__name", "version")) == [
        ("cancer", 1),
        ("churn", 1),
    ]
    # Without --with-dataset, no dataset version is made here; the lineage keeps its sha256.
    churn = ModelVersion.objects.get(registered_model__name="churn")
    assert churn.dataset_version is None
    assert churn.training_summary["imported_from"]["dataset"]["sha256"] == staging.dataset_sha256
    assert not Dataset.objects.exists()


def test_an_existing_dataset_version_with_the_same_sha256_is_linked_not_copied(staging, tmp_path):
    existing = dataset_upload(cancer_frame(80), name="cancer-prod", target="diagnosis")

    output = import_archive(write(tmp_path, staging.tar_outside_mlflow))

    assert "dataset cancer-prod v1 linked" in output
    assert ModelVersion.objects.get().dataset_version == existing
    assert DatasetVersion.objects.count() == 1


def test_the_exported_archive_holds_exactly_the_manifest_and_the_files_it_lists(staging):
    members = tar_members(staging.tar_with_dataset)
    manifest = json.loads(members["manifest.json"])

    assert sorted(members) == ["dataset.csv", "manifest.json", "model.onnx", "model.skops"]
    assert manifest["format"] == transfer.FORMAT_NAME
    assert manifest["format_version"] == transfer.FORMAT_VERSION
    assert manifest["source"] == {"site_name": "staging", "site_url": "https://staging.example.com"}
    assert manifest["files"]["model.skops"]["sha256"] == staging.fields["skops_sha256"]
    assert manifest["files"]["dataset.csv"]["sha256"] == staging.dataset_sha256
    assert manifest["version"]["stage"] == "staging"
    assert manifest["lineage"]["dataset"]["row_count"] == staging.dataset_rows
    assert sorted(tar_members(staging.tar)) == ["manifest.json", "model.onnx", "model.skops"]


# ------------------------------------------------------------------------------
# Refusals: nothing is written
# ------------------------------------------------------------------------------
def test_a_member_changed_on_its_way_is_refused_with_nothing_written(staging, tmp_path):
    members = tar_members(staging.tar_with_dataset)
    members["dataset.csv"] = members["dataset.csv"].replace(b"malignant", b"benign", 1)

    refused(write(tmp_path, tar_of(members)), expected="dataset.csv does not match the sha256")


def test_a_manifest_naming_other_checksums_than_the_version_is_refused(staging, tmp_path):
    members = tar_members(staging.tar)
    members["model.onnx"] = tar_members(staging.tar)["model.skops"]

    def relist(manifest: dict[str, Any]) -> None:
        manifest["files"]["model.onnx"] = dict(manifest["files"]["model.skops"])

    refused(write(tmp_path, tar_of(with_manifest(members, relist))), expected="version.onnx_sha256")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../manifest.json", "unexpected member '../manifest.json'"),
        ("/etc/cron.d/model.skops", "unexpected member '/etc/cron.d/model.skops'"),
        ("notes.txt", "unexpected member 'notes.txt'"),
        ("model.skops", "holds model.skops twice"),
    ],
)
def test_a_member_other_than_the_expected_ones_is_refused(staging, tmp_path, name, expected):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member_name, content in [*tar_members(staging.tar).items(), (name, b"extra")]:
            info = tarfile.TarInfo(member_name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))

    refused(write(tmp_path, buffer.getvalue()), expected=expected)


def test_a_link_is_refused(staging, tmp_path):
    members = tar_members(staging.tar)
    del members["model.onnx"]

    refused(write(tmp_path, tar_of(members, links={"model.onnx": "/etc/passwd"})), expected="is a link")


def test_a_zip_member_escaping_the_archive_is_refused(staging, tmp_path):
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(staging.zip_outside_mlflow)) as source,
        zipfile.ZipFile(buffer, "w") as target,
    ):
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr("../../evil.py", b"print('owned')")

    refused(write(tmp_path, buffer.getvalue(), "cancer.zip"), expected="unexpected member '../../evil.py'")


def test_a_zip_symlink_is_refused(staging, tmp_path):
    members = tar_members(staging.tar_outside_mlflow)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            if name != "model.onnx":
                archive.writestr(name, data)
        link = zipfile.ZipInfo("model.onnx")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, b"/etc/passwd")

    refused(write(tmp_path, buffer.getvalue(), "cancer.zip"), expected="model.onnx in the archive is a link")


def test_a_member_over_its_size_limit_is_refused_before_it_is_read(staging, tmp_path, settings):
    settings.MODEL_MAX_UPLOAD_MB = 0

    refused(write(tmp_path, staging.tar), expected="larger than the 0 MB limit")


def test_an_unknown_format_version_is_refused(staging, tmp_path):
    members = with_manifest(tar_members(staging.tar), lambda manifest: manifest.update(format_version=2))

    refused(write(tmp_path, tar_of(members)), expected="format version 2, which this site does not know")


def test_a_manifest_with_wrong_types_names_each_problem(staging, tmp_path):
    def spoil(manifest: dict[str, Any]) -> None:
        manifest["version"]["metrics"]["accuracy"] = "high"
        manifest["version"]["seed"] = "42"
        del manifest["lineage"]["dataset"]

    message = refused(write(tmp_path, tar_of(with_manifest(tar_members(staging.tar), spoil))), expected="")
    assert "version.metrics.accuracy must be a number" in message
    assert "version.seed must be a whole number or null; got text" in message
    assert "lineage.dataset is missing" in message


def _example_rows(change: Any) -> Any:
    def spoil(manifest: dict[str, Any]) -> None:
        version = manifest["version"]
        version["example_rows"] = change(version["example_rows"], version["feature_schema"][0]["name"])

    return spoil


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda rows, first: rows * 5, "version.example_rows holds 25 rows; at most 20 are allowed"),
        (lambda rows, first: [*rows[:-1], "a row"], "version.example_rows[4] must be an object"),
        (
            lambda rows, first: [{**rows[0], "password": 1.0}],
            "version.example_rows[0] names 'password', which is not a feature of the schema",
        ),
        (lambda rows, first: [{**rows[0], first: [1, 2]}], "must be a number, text or null"),
        (lambda rows, first: [{**rows[0], first: True}], "must be a number, text or null"),
        (lambda rows, first: [{**rows[0], first: float("inf")}], "must be a finite number"),
    ],
    ids=["too-many", "not-an-object", "unknown-feature", "list-value", "boolean-value", "infinite"],
)
def test_example_rows_must_be_a_few_objects_of_the_schemas_features(staging, tmp_path, change, expected):
    assert len(staging.fields["example_rows"]) == 5
    members = with_manifest(tar_members(staging.tar_outside_mlflow), _example_rows(change))

    refused(write(tmp_path, tar_of(members)), expected=expected)


def test_example_rows_with_missing_features_and_nulls_are_restored_as_they_came(staging, tmp_path):
    def fewer(rows: list[dict[str, Any]], first: str) -> list[dict[str, Any]]:
        return [{first: rows[0][first]}, {**rows[1], first: None}]

    members = with_manifest(tar_members(staging.tar_outside_mlflow), _example_rows(fewer))
    import_archive(write(tmp_path, tar_of(members)))

    first = staging.fields["feature_schema"][0]["name"]
    rows = ModelVersion.objects.get().example_rows
    assert rows == [
        {first: staging.fields["example_rows"][0][first]},
        {**staging.fields["example_rows"][1], first: None},
    ]


def test_a_manifest_that_is_not_json_is_refused(staging, tmp_path):
    members = {**tar_members(staging.tar), "manifest.json": b"{not json"}

    refused(write(tmp_path, tar_of(members)), expected="manifest.json is not valid JSON")


def test_a_file_that_is_no_archive_is_refused(tmp_path):
    refused(write(tmp_path, b"\x80\x04K\x01.", "model.tar"), expected="neither a tar nor a zip")


class Sneaky(BaseEstimator):
    """A type no site trusts: loading it would import and run this module's code."""

    def predict(self, rows: Any) -> list[str]:
        return ["benign"] * len(rows)


def test_a_skops_file_with_an_untrusted_type_is_refused(staging, tmp_path):
    sneaky = skops.io.dumps(Sneaky())
    members = {name: data for name, data in tar_members(staging.tar).items() if name != "model.onnx"}
    members["model.skops"] = sneaky
    sha = artifacts.sha256_hex(sneaky)

    def point_at_it(manifest: dict[str, Any]) -> None:
        del manifest["files"]["model.onnx"]
        manifest["files"]["model.skops"] = {"sha256": sha, "size": len(sneaky)}
        manifest["version"].update(skops_sha256=sha, onnx_sha256="", onnx_status="unavailable")

    with mock.patch.object(Sneaky, "predict", side_effect=AssertionError("the untrusted type was loaded")):
        message = refused(
            write(tmp_path, tar_of(with_manifest(members, point_at_it))), expected="model.skops was refused"
        )
    assert "types this site does not trust" in message
    assert "Sneaky" in message


def test_a_pickle_in_place_of_the_skops_file_is_refused(staging, tmp_path):
    pickled = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."
    members = {**tar_members(staging.tar), "model.skops": pickled}
    sha = artifacts.sha256_hex(pickled)

    def point_at_it(manifest: dict[str, Any]) -> None:
        manifest["files"]["model.skops"] = {"sha256": sha, "size": len(pickled)}
        manifest["version"]["skops_sha256"] = sha

    message = refused(write(tmp_path, tar_of(with_manifest(members, point_at_it))), expected="model.skops")
    assert "Python pickle" in message


def test_an_onnx_file_of_another_model_than_the_skops_file_is_refused(staging, tmp_path):
    other = model_train(
        frame=cancer_frame(80),
        schema_columns=[
            {"name": name, "kind": "categorical" if name == "diagnosis" else "numeric"}
            for name in cancer_frame(1)
        ],
        target_column="diagnosis",
        algorithm="logistic_regression",
    )
    conversion = onnx_export.onnx_convert(
        pipeline=other.pipeline,
        feature_schema=other.feature_schema,
        X_holdout=other.X_holdout,
        classes=other.classes,
    )
    assert conversion.available, conversion.reason
    members = {**tar_members(staging.tar), "model.onnx": conversion.data}

    def point_at_it(manifest: dict[str, Any]) -> None:
        manifest["files"]["model.onnx"] = {"sha256": conversion.sha256, "size": len(conversion.data)}
        manifest["version"]["onnx_sha256"] = conversion.sha256

    refused(
        write(tmp_path, tar_of(with_manifest(members, point_at_it))),
        expected="model.skops and model.onnx disagree",
    )


def test_a_failure_after_files_were_stored_removes_them_and_the_dataset_again(
    staging, tmp_path, django_capture_on_commit_callbacks
):
    with (
        mock.patch.object(
            mlflow_gateway,
            "training_run_log",
            side_effect=mlflow_gateway.RegistryUnavailable("MLflow is down"),
        ),
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(CommandError, match="MLflow is down"),
    ):
        import_archive(write(tmp_path, staging.tar_with_dataset, "cancer.tgz"))

    nothing_was_written()


def test_a_failure_after_the_mlflow_registration_removes_it_again(staging, tmp_path, production_mlflow):
    RegisteredModel.objects.create(name="cancer", task="regression", target_column="diagnosis")

    with pytest.raises(CommandError, match="holds regression versions"):
        import_archive(write(tmp_path, staging.tar))

    assert not ModelVersion.objects.exists()
    assert stored_model_files("models") == []
    assert mlflow_helpers.client().search_model_versions("name = 'cancer'") == []


# ------------------------------------------------------------------------------
# How an imported version shows
# ------------------------------------------------------------------------------
def test_the_version_page_says_the_version_was_imported(staging, tmp_path, client, alice):
    import_archive(write(tmp_path, staging.tar_outside_mlflow))
    client.force_login(alice)

    page = client.get("/models/cancer/versions/1/").content.decode()

    source = re.search(r'<dd id="version-source">(.*?)</dd>', page).group(1)
    # Where it came from: the staging site's model and version, and the export's day.
    assert re.fullmatch(
        r"Imported from another site: cancer v1 of [^<>]+, exported on \d{4}-\d{2}-\d{2}", source
    )
    assert "Imported from another site" in client.get("/models/cancer/").content.decode()


def test_the_admin_filters_versions_by_the_imported_source(staging, tmp_path, client, admin_user):
    import_archive(write(tmp_path, staging.tar_outside_mlflow))
    client.force_login(admin_user)

    imported = client.get("/admin/models_registry/modelversion/", {"source__exact": "imported"})
    uploaded = client.get("/admin/models_registry/modelversion/", {"source__exact": "uploaded"})

    assert imported.status_code == 200
    assert "Imported from another site" in imported.content.decode()
    assert imported.context["cl"].result_count == 1
    assert uploaded.context["cl"].result_count == 0


# ------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------
def test_the_export_command_writes_an_archive_that_imports_back(staging, tmp_path, settings):
    import_archive(write(tmp_path, staging.tar_outside_mlflow))
    output = tmp_path / "again.zip"

    out = io.StringIO()
    call_command("model_export", "cancer", "1", "--output", str(output), stdout=out)

    assert f"Exported cancer v1 (stage none) from {settings.SITE_NAME} to {output}" in out.getvalue()
    with zipfile.ZipFile(output) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["version"]["skops_sha256"] == staging.fields["skops_sha256"]
    # The chain of sites is kept: this site's export names where the version came from before.
    assert manifest["lineage"]["imported_from"]["site_name"] == "staging"


def test_the_export_refuses_a_stored_file_that_no_longer_matches_its_checksum(staging, tmp_path):
    import_archive(write(tmp_path, staging.tar_outside_mlflow))
    version = ModelVersion.objects.get()
    storage.delete(version.onnx_key)
    storage.put_bytes(version.onnx_key, b"not the model")

    with pytest.raises(CommandError, match="no longer matches the sha256"):
        call_command("model_export", "cancer", "1", "--output", str(tmp_path / "out.tar"))

    assert not (tmp_path / "out.tar").exists()
    assert list(tmp_path.glob(".out.tar.*")) == []


def test_the_export_refuses_with_dataset_for_a_version_without_one(staging, tmp_path):
    import_archive(write(tmp_path, staging.tar_outside_mlflow))

    with pytest.raises(CommandError, match="records no dataset version"):
        call_command("model_export", "cancer", "1", "--output", str(tmp_path / "out.tar"), "--with-dataset")


def test_the_export_of_a_missing_version_names_it(tmp_path):
    with pytest.raises(CommandError, match="Model 'cancer' has no version 3"):
        call_command("model_export", "cancer", "3", "--output", str(tmp_path / "out.tar"))
