"""The transfer API: staff download a version's archive and import one; refusals answer 400, 413, 401, 403.

The version is an uploaded skops file (kept out of MLflow), so no MLflow store is needed; the command tests
in test_transfer.py cover MLflow. One model is trained per module.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from typing import Any
from unittest import mock

import pytest
from drf_spectacular.generators import SchemaGenerator

from ml import artifacts
from ml.train import model_train
from mlops_site import storage
from mlops_site.tests.helpers import error_body
from models_registry import transfer, upload_services
from models_registry.models import ModelVersion, RegisteredModel
from tests.factories import make_api_client as api_for
from training.tests.helpers import cancer_frame, stored_model_files

pytestmark = pytest.mark.django_db

EXPORT = "/api/models/cancer/versions/1/export/"


@pytest.fixture(scope="module")
def trained() -> Any:
    frame = cancer_frame(60)
    return model_train(
        frame=frame,
        schema_columns=[
            {"name": name, "kind": "categorical" if name == "diagnosis" else "numeric"} for name in frame
        ],
        target_column="diagnosis",
        algorithm="logistic_regression",
    )


@pytest.fixture
def cancer_v1(trained, staff) -> ModelVersion:
    return upload_services.model_version_upload(
        registered_model_name="cancer",
        file=io.BytesIO(artifacts.skops_dump(trained.pipeline)),
        filename="model.skops",
        feature_schema=trained.feature_schema,
        task="classification",
        classes=trained.classes,
        target_column="diagnosis",
        created_by=staff,
    )


def archive_file(data: bytes, name: str = "cancer-v1.tar") -> io.BytesIO:
    upload = io.BytesIO(data)
    upload.name = name
    return upload


def import_answer(api: Any, data: bytes, *, model: str = "cancer", name: str = "cancer-v1.tar") -> Any:
    return api.post(f"/api/models/{model}/import/", {"file": archive_file(data, name)}, format="multipart")


def test_staff_download_a_version_as_a_tar_archive_with_its_manifest(staff, cancer_v1):
    response = api_for(staff).get(EXPORT)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-tar"
    assert response["Content-Disposition"] == 'attachment; filename="cancer-v1.tar"'
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        members = {member.name: tar.extractfile(member).read() for member in tar}
    assert sorted(members) == ["manifest.json", "model.skops"]
    manifest = json.loads(members["manifest.json"])
    assert manifest["version"]["skops_sha256"] == cancer_v1.skops_sha256
    assert artifacts.sha256_hex(members["model.skops"]) == cancer_v1.skops_sha256


@pytest.mark.parametrize(
    ("kind", "content_type"), [("zip", "application/zip"), ("tar.gz", "application/gzip")]
)
def test_the_format_parameter_picks_the_archive_kind(staff, cancer_v1, kind, content_type):
    response = api_for(staff).get(EXPORT, {"format": kind})

    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["Content-Disposition"] == f'attachment; filename="cancer-v1.{kind}"'
    if kind == "zip":
        assert zipfile.ZipFile(io.BytesIO(response.content)).namelist() == ["manifest.json", "model.skops"]
    else:
        with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
            assert tar.getnames() == ["manifest.json", "model.skops"]


def test_an_export_in_an_unknown_format_or_of_an_unknown_version_is_refused(staff, cancer_v1):
    api = api_for(staff)

    body = error_body(api.get(EXPORT, {"format": "rar"}), 400, "invalid")
    assert body["errors"][0]["field"] == "format"
    error_body(api.get("/api/models/cancer/versions/9/export/"), 404, "not_found")


def test_an_export_whose_stored_file_was_damaged_or_without_its_dataset_is_a_conflict(staff, cancer_v1):
    api = api_for(staff)
    body = error_body(api.get(EXPORT, {"with_dataset": "true"}), 409, "export_refused")
    assert "records no dataset version" in body["detail"]

    storage.delete(cancer_v1.skops_key)
    storage.put_bytes(cancer_v1.skops_key, b"not the model")

    body = error_body(api.get(EXPORT), 409, "export_refused")
    assert "no longer matches the sha256" in body["detail"]


def test_an_archive_imports_as_the_next_version_and_again_changes_nothing(staff, cancer_v1):
    api = api_for(staff)
    archive = api.get(EXPORT, {"format": "zip"}).content

    created = import_answer(api, archive, model="churn", name="cancer-v1.zip")
    again = import_answer(api, archive, model="churn", name="cancer-v1.zip")

    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["model"], body["version"], body["stage"], body["source"]) == ("churn", 1, "none", "imported")
    assert body["skops_sha256"] == cancer_v1.skops_sha256
    assert body["created_by"] == staff.username
    assert again.status_code == 200
    assert again.json()["url"] == body["url"]
    imported = ModelVersion.objects.get(registered_model__name="churn")
    assert imported.training_summary["imported_from"]["model"] == "cancer"
    # Into the site it came from, the archive finds the version it was exported from.
    assert import_answer(api, archive, name="cancer-v1.zip").json()["version"] == 1
    assert ModelVersion.objects.count() == 2


def test_a_refused_archive_answers_400_naming_the_problem_and_writes_nothing(staff, cancer_v1):
    api = api_for(staff)
    with tarfile.open(fileobj=io.BytesIO(api.get(EXPORT).content)) as tar:
        members = {member.name: tar.extractfile(member).read() for member in tar}
    members["model.skops"] = members["model.skops"][:-1] + b"!"
    changed = io.BytesIO()
    with tarfile.open(fileobj=changed, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    stored = stored_model_files("models")

    body = error_body(import_answer(api, changed.getvalue(), model="churn"), 400, "invalid")
    assert "model.skops does not match the sha256 the manifest records" in body["detail"]
    body = error_body(import_answer(api, b"not an archive at all", model="churn"), 400, "invalid")
    assert "neither a tar nor a zip" in body["detail"]
    body = error_body(api.post("/api/models/churn/import/", {}, format="multipart"), 400, "invalid")
    assert body["errors"][0]["field"] == "file"
    assert not RegisteredModel.objects.filter(name="churn").exists()
    assert stored_model_files("models") == stored


def test_an_archive_over_a_size_limit_answers_413(staff, cancer_v1, settings):
    api = api_for(staff)
    archive = api.get(EXPORT).content

    with mock.patch.object(transfer, "archive_max_bytes", return_value=len(archive) - 1):
        body = error_body(import_answer(api, archive, model="churn"), 413, "too_large")
    assert f"at most {len(archive) - 1} bytes" in body["detail"]
    settings.MODEL_MAX_UPLOAD_MB = 0
    body = error_body(import_answer(api, archive, model="churn"), 413, "too_large")
    assert "model.skops in the archive is larger than the 0 MB limit" in body["detail"]
    assert not RegisteredModel.objects.filter(name="churn").exists()


def test_users_get_403_and_anonymous_callers_401(alice, staff, cancer_v1):
    archive = api_for(staff).get(EXPORT).content

    for api, status, code in [
        (api_for(alice), 403, "permission_denied"),
        (api_for(None), 401, "not_authenticated"),
    ]:
        error_body(api.get(EXPORT), status, code)
        error_body(import_answer(api, archive, model="churn"), status, code)
    assert not RegisteredModel.objects.filter(name="churn").exists()


def test_the_schema_documents_both_operations_and_the_imported_source(db):
    schema = SchemaGenerator().get_schema(request=None, public=True)

    export = schema["paths"]["/api/models/{name}/versions/{version}/export/"]["get"]
    imported = schema["paths"]["/api/models/{name}/import/"]["post"]
    assert {"200", "400", "401", "403", "404", "409", "503"} <= set(export["responses"])
    assert {"application/zip", "application/x-tar"} <= set(export["responses"]["200"]["content"])
    assert {"200", "201", "400", "401", "403", "413", "503"} <= set(imported["responses"])
    body = imported["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][body]["required"] == ["file"]
    sources = [
        component["enum"]
        for component in schema["components"]["schemas"].values()
        if "imported" in component.get("enum", [])
    ]
    assert sources == [["trained", "uploaded", "imported"]]
