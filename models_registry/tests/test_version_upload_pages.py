"""The page that registers an externally trained skops or ONNX file as a model version (staff only)."""

from __future__ import annotations

import html
import json
import pickle
import re
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import resolve, reverse

from ml import artifacts, onnx_export
from ml.train import model_train
from mlops_site import errors, storage
from models_registry import upload_services
from models_registry.models import ModelVersion, RegisteredModel
from models_registry.tests.registry_helpers import make_model, make_version
from training.tests.helpers import cancer_frame, stored_model_files

pytestmark = pytest.mark.django_db

UPLOAD_URL = "/models/upload/"


@pytest.fixture(scope="module")
def trained_core():
    """A pipeline from our own training core, with its training-written schema, classes and holdout."""
    return model_train(
        frame=cancer_frame(80),
        schema_columns=[
            {"name": name, "kind": "categorical" if name == "diagnosis" else "numeric"}
            for name in cancer_frame(1)
        ],
        target_column="diagnosis",
        algorithm="logistic_regression",
    )


@pytest.fixture(scope="module")
def skops_bytes(trained_core) -> bytes:
    return artifacts.skops_dump(trained_core.pipeline)


@pytest.fixture(scope="module")
def onnx_bytes(trained_core) -> bytes:
    conversion = onnx_export.onnx_convert(
        pipeline=trained_core.pipeline,
        feature_schema=trained_core.feature_schema,
        X_holdout=trained_core.X_holdout,
        classes=trained_core.classes,
    )
    assert conversion.available, conversion.reason
    return conversion.data


def typed_schema(trained_core) -> str:
    """The schema as a person would type it: names and kinds only."""
    return json.dumps([{"name": c["name"], "kind": c["kind"]} for c in trained_core.feature_schema])


def post_upload(client, data: bytes, filename: str, **fields):
    payload = {
        "model_name": "cancer-external",
        "task": "classification",
        "target_column": "diagnosis",
        "feature_schema": "",
        "copy_schema_from": "",
        "classes": "",
        "metrics": "",
        "description": "",
        **fields,
        "file": SimpleUploadedFile(filename, data, content_type="application/octet-stream"),
    }
    return client.post(UPLOAD_URL, payload)


def problems_of(response) -> list[str]:
    """The messages listed in the page's summary of problems."""
    page = response.content.decode()
    summary = page.split('class="panel force-panel upload-problems"', 1)[1].split("</ul>", 1)[0]
    return [
        html.unescape(re.sub(r"\s+", " ", item))
        for item in re.findall(r"<li>(.*?)</li>", summary, flags=re.S)
    ]


def test_the_upload_page_is_routed_before_the_model_pages():
    assert reverse("registry:version-upload") == UPLOAD_URL
    assert resolve(UPLOAD_URL).url_name == "version-upload"
    assert resolve("/models/uploads/").url_name == "model-detail"


def test_staff_register_a_skops_file_and_land_on_the_new_version(client, staff, trained_core, skops_bytes):
    client.force_login(staff)

    response = post_upload(
        client,
        skops_bytes,
        "cancer.skops",
        feature_schema=typed_schema(trained_core),
        metrics='{"accuracy": 0.93}',
    )

    version = ModelVersion.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("registry:version-detail", args=["cancer-external", 1])
    assert version.source == ModelVersion.Source.UPLOADED
    assert version.created_by == staff
    assert version.classes == trained_core.classes
    assert version.metrics == {"accuracy": 0.93}
    assert version.target_column == "diagnosis"
    assert [c["name"] for c in version.feature_schema] == [c["name"] for c in trained_core.feature_schema]
    assert storage.read_bytes(version.skops_key) == skops_bytes
    assert version.skops_sha256 == artifacts.sha256_hex(skops_bytes)
    page = client.get(response.url)
    assert "Registered cancer-external v1 from cancer.skops." in [str(m) for m in page.context["messages"]]


def test_staff_register_an_onnx_file_made_by_our_training_core(client, staff, trained_core, onnx_bytes):
    client.force_login(staff)

    response = post_upload(client, onnx_bytes, "cancer.onnx", feature_schema=typed_schema(trained_core))

    assert response.status_code == 302
    version = ModelVersion.objects.get()
    assert version.onnx_status == ModelVersion.OnnxStatus.AVAILABLE
    assert version.onnx_sha256 == artifacts.sha256_hex(onnx_bytes)
    assert version.skops_key == ""
    assert version.classes == trained_core.classes
    assert storage.read_bytes(version.onnx_key) == onnx_bytes


def test_a_pickle_is_refused_with_the_reason_and_nothing_is_stored(client, staff, trained_core):
    client.force_login(staff)

    response = post_upload(
        client, pickle.dumps(trained_core.pipeline), "model.pkl", feature_schema=typed_schema(trained_core)
    )

    assert response.status_code == 400
    [problem] = problems_of(response)
    assert "a Python pickle" in problem
    assert "Nothing was stored" in problem
    # Said once: the heading above the problems does not repeat it.
    assert response.content.decode().lower().count("nothing was stored") == 1
    assert not ModelVersion.objects.exists()
    assert not RegisteredModel.objects.exists()
    assert stored_model_files() == []
    # What was typed is kept; only the file has to be chosen again.
    assert response.context["form"]["model_name"].value() == "cancer-external"


def test_every_problem_of_the_form_is_listed_at_once(client, staff, skops_bytes):
    client.force_login(staff)

    response = post_upload(
        client,
        skops_bytes,
        "cancer.skops",
        model_name="upload",
        feature_schema='[{"name": "age", "kind": "numeric"}, {"name": "age", "kind": "text"}',
        metrics="[0.9]",
        classes="no,,yes",
    )

    assert response.status_code == 400
    problems = problems_of(response)
    assert len(problems) == 4, problems
    assert problems[0] == (
        "Model name: Model name 'upload' is reserved for a page of this site; choose another."
    )
    assert problems[1] == (
        "Feature schema (JSON list): The feature schema is not valid JSON: "
        "Expecting ',' delimiter at line 1, column 69."
    )
    assert "A class label is empty" in problems[2]
    assert "The metrics must be a JSON object" in problems[3]
    assert not ModelVersion.objects.exists()
    assert stored_model_files() == []


def test_each_column_problem_of_a_typed_schema_is_listed(client, staff, skops_bytes):
    client.force_login(staff)

    response = post_upload(
        client,
        skops_bytes,
        "cancer.skops",
        feature_schema=json.dumps(
            [{"name": "age", "kind": "numeric", "min": 5, "max": 1}, {"name": "city", "kind": "text"}]
        ),
    )

    assert response.status_code == 400
    problems = problems_of(response)
    assert any("min 5 is greater than max 1" in p for p in problems), problems
    assert any("Feature column 'city' has kind 'text'" in p for p in problems), problems


def test_a_schema_is_required_from_the_textarea_or_a_version_but_not_both(client, staff, skops_bytes):
    client.force_login(staff)
    source = make_version(make_model("churn"), 1)

    neither = post_upload(client, skops_bytes, "cancer.skops")
    both = post_upload(
        client,
        skops_bytes,
        "cancer.skops",
        feature_schema='[{"name": "age", "kind": "numeric"}]',
        copy_schema_from=str(source.pk),
    )

    assert neither.status_code == both.status_code == 400
    assert problems_of(neither) == [
        "Feature schema (JSON list): Give the feature schema, or choose a version to copy it from."
    ]
    assert "Either type a feature schema or copy the one of churn v1, not both" in problems_of(both)[0]
    assert ModelVersion.objects.count() == 1


def test_the_feature_schema_can_be_copied_from_a_trained_version(client, staff, trained_core, skops_bytes):
    client.force_login(staff)
    registered = make_model("cancer", target="diagnosis")
    # A version row carrying the schema exactly as training writes it (with dtype and missing counts).
    trained = make_version(registered, 1, feature_schema=trained_core.feature_schema)

    response = post_upload(
        client,
        skops_bytes,
        "retrained-elsewhere.skops",
        model_name="cancer",
        copy_schema_from=str(trained.pk),
    )

    assert response.status_code == 302, problems_of(response)
    assert response.url == reverse("registry:version-detail", args=["cancer", 2])
    uploaded = registered.versions.get(version=2)
    assert uploaded.feature_schema == upload_services.feature_schema_validate(trained_core.feature_schema)
    assert [c["name"] for c in uploaded.feature_schema] == [c["name"] for c in trained_core.feature_schema]


def test_a_schema_that_does_not_fit_the_model_is_refused(client, staff, skops_bytes):
    client.force_login(staff)
    other = make_version(make_model("churn"), 1)

    response = post_upload(client, skops_bytes, "cancer.skops", copy_schema_from=str(other.pk))

    assert response.status_code == 400
    [problem] = problems_of(response)
    assert problem.startswith("The model could not predict a row built from the feature schema")
    assert "columns are missing" in problem
    assert not ModelVersion.objects.filter(registered_model__name="cancer-external").exists()
    assert stored_model_files() == []


def test_an_upload_of_the_wrong_task_for_an_existing_model_is_refused(
    client, staff, trained_core, skops_bytes
):
    client.force_login(staff)
    make_model("cancer", task="regression", target="diagnosis")

    response = post_upload(
        client, skops_bytes, "cancer.skops", model_name="cancer", feature_schema=typed_schema(trained_core)
    )

    assert response.status_code == 400
    assert problems_of(response) == [
        "Model 'cancer' holds regression versions; this upload is classification."
    ]
    assert stored_model_files() == []


def test_unavailable_storage_is_a_503_with_the_form_kept(client, staff, trained_core, skops_bytes):
    client.force_login(staff)

    with mock.patch.object(storage, "put_bytes", side_effect=storage.StorageError("bucket unreachable")):
        response = post_upload(client, skops_bytes, "cancer.skops", feature_schema=typed_schema(trained_core))

    assert response.status_code == 503
    assert problems_of(response) == [errors.STORAGE_UNAVAILABLE]
    assert "bucket unreachable" not in response.content.decode()
    assert response.context["form"].data["model_name"]
    assert not ModelVersion.objects.exists()


def test_anonymous_visitors_are_sent_to_the_login_page(client, skops_bytes):
    for response in (client.get(UPLOAD_URL), post_upload(client, skops_bytes, "cancer.skops")):
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))
    assert not ModelVersion.objects.exists()


def test_users_without_staff_status_are_forbidden(client, alice, trained_core, skops_bytes):
    client.force_login(alice)

    assert client.get(UPLOAD_URL).status_code == 403
    response = post_upload(client, skops_bytes, "cancer.skops", feature_schema=typed_schema(trained_core))

    assert response.status_code == 403
    assert not ModelVersion.objects.exists()
    assert stored_model_files() == []


def test_upload_from_a_model_page_prefills_its_name_task_target_and_latest_schema(client, staff):
    client.force_login(staff)
    registered = make_model("houses", task="regression", target="price")
    make_version(registered, 1)
    latest = make_version(registered, 2)

    detail = client.get(reverse("registry:model-detail", args=["houses"]))
    link = f"{UPLOAD_URL}?model_name=houses"
    assert link in detail.content.decode()
    response = client.get(link)

    form = response.context["form"]
    assert response.status_code == 200
    assert form["model_name"].value() == "houses"
    assert form["task"].value() == "regression"
    assert form["target_column"].value() == "price"
    assert form["copy_schema_from"].value() == str(latest.pk)
    assert f'<option value="{latest.pk}" selected>houses v2 (regression, trained)</option>' in (
        response.content.decode()
    )


def test_the_upload_page_shows_the_schema_example_and_the_version_choices(client, staff):
    client.force_login(staff)
    make_version(make_model("churn"), 1)

    html = client.get(UPLOAD_URL).content.decode()

    assert "{&quot;name&quot;: &quot;age&quot;, &quot;kind&quot;: &quot;numeric&quot;}" in html
    assert '<optgroup label="churn">' in html
    assert 'accept=".skops,.onnx"' in html
    assert 'enctype="multipart/form-data"' in html


def test_only_staff_see_the_upload_links(client, staff, alice):
    make_model("churn")
    pages = [reverse("registry:model-list"), reverse("registry:model-detail", args=["churn"])]

    client.force_login(alice)
    assert all(UPLOAD_URL not in client.get(url).content.decode() for url in pages)
    client.force_login(staff)
    assert all(UPLOAD_URL in client.get(url).content.decode() for url in pages)
