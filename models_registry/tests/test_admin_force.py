"""Django admin: forcing versions to production with a written reason, and uploading a model file."""

from __future__ import annotations

import json
import pickle

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from ml import artifacts
from ml.train import model_train
from mlops_site import storage
from models_registry import transition_services
from models_registry.models import ModelVersion, RegisteredModel, StageTransition
from models_registry.tests.registry_helpers import make_model, make_version
from training.tests.helpers import cancer_frame, stored_model_files

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:models_registry_modelversion_changelist"
UPLOAD = "admin:models_registry_modelversion_upload"


def force(client, ids, **extra):
    return client.post(
        reverse(CHANGELIST),
        {"action": "force_to_production", ACTION_CHECKBOX_NAME: [str(i) for i in ids], **extra},
        follow=True,
    )


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def stages() -> dict[str, str]:
    return {str(v): v.stage for v in ModelVersion.objects.select_related("registered_model")}


@pytest.fixture
def churn():
    """v1 in production and passing the gate, v2 below the accuracy minimum."""
    registered = make_model("churn", min_metrics={"accuracy": {"min": 0.8}})
    first = make_version(registered, 1, metrics={"accuracy": 0.9})
    make_version(registered, 2, metrics={"accuracy": 0.7})
    transition_services.model_version_transition(model_version=first, to_stage="production", user=None)
    return registered


# ------------------------------------------------------------------------------
# Forced promotion
# ------------------------------------------------------------------------------
def test_the_action_first_asks_for_a_reason_and_shows_what_the_gate_says(client, admin_user, churn):
    client.force_login(admin_user)
    v2 = churn.versions.get(version=2)

    response = force(client, [v2.pk])

    assert response.status_code == 200
    assert response.templates[0].name == "admin/models_registry/modelversion/force_production.html"
    page = response.content.decode()
    assert "accuracy is 0.7, below the minimum 0.8" in page
    assert "churn v1 (will be archived)" in page
    assert 'name="reason"' in page
    assert stages() == {"churn v1": "production", "churn v2": "none"}


def test_a_forced_promotion_is_recorded_with_the_reason_and_the_user(client, admin_user, churn):
    client.force_login(admin_user)
    v2 = churn.versions.get(version=2)

    response = force(client, [v2.pk], apply="1", reason="  The old model is broken; v2 is the lesser evil.  ")

    assert messages_of(response) == [("success", "churn v2: forced to production past the quality gate.")]
    assert stages() == {"churn v1": "archived", "churn v2": "production"}
    record = v2.transitions.get()
    assert record.forced is True
    assert record.user == admin_user
    assert record.reason.startswith("The old model is broken; v2 is the lesser evil.")
    assert "accuracy is 0.7, below the minimum 0.8" in record.reason
    assert response.redirect_chain[-1][0] == reverse(CHANGELIST)


def test_without_a_reason_the_confirmation_page_comes_back_with_an_error(client, admin_user, churn):
    client.force_login(admin_user)
    v2 = churn.versions.get(version=2)

    for reason in ("", "   "):
        response = force(client, [v2.pk], apply="1", reason=reason)

        assert response.status_code == 400
        assert "Write why these versions go to production despite the quality gate." in (
            response.content.decode()
        )
    assert stages() == {"churn v1": "production", "churn v2": "none"}
    assert not v2.transitions.exists()


def test_a_version_that_passes_the_gate_is_promoted_without_being_marked_forced(client, admin_user):
    registered = make_model("churn", min_metrics={"accuracy": {"min": 0.8}})
    v1 = make_version(registered, 1, metrics={"accuracy": 0.95})
    client.force_login(admin_user)

    response = force(client, [v1.pk], apply="1", reason="scheduled release")

    assert messages_of(response) == [
        ("success", "churn v1: promoted to production; it passes the quality gate, so nothing was forced.")
    ]
    assert v1.transitions.get().forced is False


def test_refusals_from_the_service_are_shown_per_version(client, admin_user, churn):
    client.force_login(admin_user)
    other = make_model("fraud", min_metrics={"accuracy": {"min": 0.99}})
    fraud_v1 = make_version(other, 1, metrics={"accuracy": 0.5})
    v1 = churn.versions.get(version=1)

    response = force(client, [v1.pk, fraud_v1.pk], apply="1", reason="audit asked for it")

    assert messages_of(response) == [
        ("error", "churn v1: churn v1 is already in production."),
        ("success", "fraud v1: forced to production past the quality gate."),
    ]
    assert stages()["fraud v1"] == "production"


def test_two_versions_of_one_model_are_refused_before_anything_changes(client, admin_user, churn):
    client.force_login(admin_user)
    v3 = make_version(churn, 3, metrics={"accuracy": 0.6})

    response = force(client, [churn.versions.get(version=2).pk, v3.pk], apply="1", reason="both")

    assert messages_of(response) == [
        (
            "error",
            "Select at most one version per model to force to production (churn had several); "
            "nothing was changed.",
        )
    ]
    assert StageTransition.objects.filter(forced=True).count() == 0
    assert stages() == {"churn v1": "production", "churn v2": "none", "churn v3": "none"}


def test_the_gate_refusal_message_of_the_plain_action_points_to_the_force_action(client, admin_user, churn):
    client.force_login(admin_user)

    response = client.post(
        reverse(CHANGELIST),
        {
            "action": "transition_to_production",
            ACTION_CHECKBOX_NAME: [str(churn.versions.get(version=2).pk)],
            "apply": "1",
        },
        follow=True,
    )

    [(level, message)] = messages_of(response)
    assert level == "error"
    assert "“Force to production (with a written reason)”" in message


def test_users_without_staff_status_never_reach_the_action(client, alice, churn):
    client.force_login(alice)

    response = client.post(
        reverse(CHANGELIST),
        {
            "action": "force_to_production",
            ACTION_CHECKBOX_NAME: [str(churn.versions.get(version=2).pk)],
            "apply": "1",
            "reason": "let me in",
        },
    )

    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))
    assert stages() == {"churn v1": "production", "churn v2": "none"}


# ------------------------------------------------------------------------------
# Uploading a model file
# ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_core():
    return model_train(
        frame=cancer_frame(60),
        schema_columns=[
            {"name": name, "kind": "categorical" if name == "diagnosis" else "numeric"}
            for name in cancer_frame(1)
        ],
        target_column="diagnosis",
        algorithm="logistic_regression",
    )


def upload_fields(trained_core, data: bytes, filename: str, **fields) -> dict:
    return {
        "model_name": "cancer-external",
        "task": "classification",
        "target_column": "diagnosis",
        "feature_schema": json.dumps(
            [{"name": c["name"], "kind": c["kind"]} for c in trained_core.feature_schema]
        ),
        "copy_schema_from": "",
        "classes": "",
        "metrics": "",
        "description": "",
        "file": SimpleUploadedFile(filename, data),
        **fields,
    }


def test_the_version_list_has_an_upload_button(client, admin_user):
    client.force_login(admin_user)

    page = client.get(reverse(CHANGELIST)).content.decode()

    assert f'href="{reverse(UPLOAD)}"' in page
    assert "Upload a model file" in page


def test_admin_registers_a_skops_file_through_the_upload_view(client, admin_user, trained_core):
    client.force_login(admin_user)
    data = artifacts.skops_dump(trained_core.pipeline)
    assert client.get(reverse(UPLOAD)).status_code == 200

    response = client.post(
        reverse(UPLOAD), upload_fields(trained_core, data, "model.skops", metrics='{"accuracy": 0.9}')
    )

    version = ModelVersion.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:models_registry_modelversion_change", args=[version.pk])
    assert version.source == ModelVersion.Source.UPLOADED
    assert version.created_by == admin_user
    assert version.metrics == {"accuracy": 0.9}
    assert storage.read_bytes(version.skops_key) == data
    followed = client.get(response.url)
    assert [str(m) for m in followed.context["messages"]] == [
        'Registered cancer-external v1 (<a href="/models/cancer-external/versions/1/">its page</a>).'
    ]


def test_admin_upload_of_a_pickle_is_refused_with_the_message(client, admin_user, trained_core):
    client.force_login(admin_user)

    response = client.post(
        reverse(UPLOAD), upload_fields(trained_core, pickle.dumps(trained_core.pipeline), "model.pkl")
    )

    assert response.status_code == 400
    [problem] = response.context["errors"]
    assert "a Python pickle" in problem
    assert "a Python pickle" in response.content.decode()
    assert not ModelVersion.objects.exists()
    assert not RegisteredModel.objects.exists()
    assert stored_model_files() == []


def test_admin_upload_copies_a_versions_schema_and_prefills_from_the_model_name(
    client, admin_user, trained_core
):
    client.force_login(admin_user)
    registered = make_model("cancer", target="diagnosis")
    source = make_version(registered, 1, feature_schema=trained_core.feature_schema)

    form = client.get(reverse(UPLOAD) + "?model_name=cancer").context["form"]
    assert form["copy_schema_from"].value() == str(source.pk)
    response = client.post(
        reverse(UPLOAD),
        upload_fields(
            trained_core,
            artifacts.skops_dump(trained_core.pipeline),
            "model.skops",
            model_name="cancer",
            feature_schema="",
            copy_schema_from=str(source.pk),
        ),
    )

    assert response.status_code == 302
    assert registered.versions.get(version=2).source == ModelVersion.Source.UPLOADED


def test_staff_without_model_permissions_cannot_open_the_admin_upload(client, staff, trained_core):
    client.force_login(staff)

    assert client.get(reverse(UPLOAD)).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_modelversion"))
    assert client.get(reverse(UPLOAD)).status_code == 200


def test_users_without_staff_status_are_sent_to_the_admin_login(client, alice):
    client.force_login(alice)

    response = client.get(reverse(UPLOAD))

    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))
