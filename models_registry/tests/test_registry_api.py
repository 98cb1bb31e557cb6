"""The registry API: token access, reads for users, writes for staff, and 400/404/409 answers."""

from __future__ import annotations

import io

import pytest
from rest_framework.test import APIClient

from mlops_site.tests.helpers import error_body, messages_of
from models_registry import transition_services
from models_registry.models import ModelVersion, RegisteredModel, StageTransition
from models_registry.tests.registry_helpers import make_model, make_version
from tests.factories import make_api_client as api_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def churn(staff):
    registered = make_model("churn", created_by=staff, min_metrics={"accuracy": {"min": 0.8}})
    make_version(registered, 1, metrics={"accuracy": 0.9}, created_by=staff)
    make_version(registered, 2, metrics={"accuracy": 0.7})
    return registered


# ------------------------------------------------------------------------------
# Access
# ------------------------------------------------------------------------------
def test_without_a_token_every_endpoint_answers_401(churn):
    client = APIClient()

    for url in ["/api/models/", "/api/models/churn/", "/api/models/churn/versions/", "/api/training-runs/"]:
        response = client.get(url)
        error_body(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"] == "Token", url
    refused = client.post("/api/models/churn/versions/1/transition/", {"to_stage": "staging"})
    error_body(refused, 401, "not_authenticated")


def test_a_bad_token_is_refused(churn):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert error_body(client.get("/api/models/"), 401, "authentication_failed")["detail"] == "Invalid token."


def test_users_read_models_and_versions_but_may_not_change_them_or_see_training(alice, churn):
    api = api_for(alice)

    assert api.get("/api/models/").status_code == 200
    assert api.get("/api/models/churn/versions/1/").status_code == 200
    for refused in [
        api.post("/api/models/churn/versions/1/transition/", {"to_stage": "staging"}),
        api.post("/api/models/churn/rollback/", {}),
        api.post("/api/models/", {"name": "x"}, format="json"),
        api.delete("/api/models/churn/"),
        api.get("/api/training-runs/"),
        api.post("/api/training-runs/", {}, format="json"),
    ]:
        error_body(refused, 403, "permission_denied")
    assert StageTransition.objects.count() == 0


# ------------------------------------------------------------------------------
# Models and versions
# ------------------------------------------------------------------------------
def test_the_model_list_shows_counts_and_thresholds(alice, churn):
    body = api_for(alice).get("/api/models/").json()

    assert body["count"] == 1
    [model] = body["results"]
    assert model["name"] == "churn"
    assert model["min_metrics"] == {"accuracy": {"min": 0.8}}
    assert (model["version_count"], model["latest_version"], model["production_version"]) == (2, 2, None)
    assert model["created_by"] == "sam-staff"
    assert model["versions_url"] == "http://testserver/api/models/churn/versions/"


def test_the_model_list_needs_the_same_queries_for_many_models(alice, django_assert_num_queries):
    for name in ("a1", "b2", "c3", "d4", "e5"):
        make_version(make_model(name), 1)
    api = api_for(alice)

    # token lookup with its user, the page count, the page
    with django_assert_num_queries(3):
        assert len(api.get("/api/models/").json()["results"]) == 5


def test_the_version_list_needs_the_same_queries_for_many_versions(alice, churn, django_assert_num_queries):
    for number in range(3, 12):
        make_version(churn, number)
    api = api_for(alice)

    # token, the 404 check on the model, the page count, the page
    with django_assert_num_queries(4):
        body = api.get("/api/models/churn/versions/").json()
    assert [v["version"] for v in body["results"]] == list(range(11, 0, -1))


def test_a_version_shows_its_lineage_metrics_and_checksums(alice, churn):
    body = api_for(alice).get("/api/models/churn/versions/1/").json()

    assert body["model"] == "churn"
    assert body["version"] == 1
    assert body["stage"] == "none"
    assert body["metrics"] == {"accuracy": 0.9}
    assert body["skops_sha256"] == "0" * 63 + "1"
    assert body["dataset_version"] is None
    assert body["feature_schema"][0]["name"] == "age"
    assert body["url"] == "http://testserver/api/models/churn/versions/1/"


def test_unknown_models_and_versions_are_404(alice, staff, churn):
    api = api_for(alice)

    error_body(api.get("/api/models/nope/"), 404, "not_found")
    assert error_body(api.get("/api/models/nope/versions/"), 404, "not_found")["detail"] == (
        "No registered model named 'nope'."
    )
    assert error_body(api.get("/api/models/churn/versions/9/"), 404, "not_found")
    staff_api = api_for(staff)
    error_body(
        staff_api.post("/api/models/churn/versions/9/transition/", {"to_stage": "staging"}), 404, "not_found"
    )
    error_body(staff_api.post("/api/models/nope/rollback/", {}), 404, "not_found")


def test_staff_register_a_model_with_thresholds(staff):
    response = api_for(staff).post(
        "/api/models/",
        {
            "name": "fraud",
            "task": "classification",
            "target_column": "is_fraud",
            "min_metrics": {"roc_auc": 0.9},
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["min_metrics"] == {"roc_auc": {"min": 0.9}}
    assert RegisteredModel.objects.get(name="fraud").created_by == staff


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"name": "Bad Name"}, "name", "Use lowercase letters"),
        (
            {"name": "fraud", "task": "classification", "min_metrics": {"rmse": 3}},
            None,
            "Unknown metric 'rmse'",
        ),
        ({"name": "fraud", "task": "clustering"}, "task", "is not a valid choice"),
    ],
)
def test_a_bad_model_registration_is_a_400_naming_the_problem(staff, churn, data, field, problem):
    response = api_for(staff).post("/api/models/", data, format="json")

    body = error_body(response, 400, "invalid")
    assert any(problem in message for message in messages_of(body, field)), body


def test_registering_a_taken_model_name_is_a_409_conflict(staff, churn):
    response = api_for(staff).post("/api/models/", {"name": "churn"}, format="json")

    body = error_body(response, 409, "name_taken")
    assert body["detail"] == "A model named 'churn' already exists."
    assert RegisteredModel.objects.filter(name="churn").count() == 1


# ------------------------------------------------------------------------------
# Transitions and rollback
# ------------------------------------------------------------------------------
def test_staff_promote_a_version_and_get_it_back(staff, churn):
    api = api_for(staff)

    response = api.post(
        "/api/models/churn/versions/1/transition/",
        {"to_stage": "production", "reason": "best"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["stage"] == "production"
    recorded = StageTransition.objects.get()
    assert (recorded.to_stage, recorded.user, recorded.reason) == ("production", staff, "best")
    assert api.get("/api/models/churn/").json()["production_version"] == 1


def test_a_version_below_the_gate_is_a_409_with_the_reasons(staff, churn):
    response = api_for(staff).post("/api/models/churn/versions/2/transition/", {"to_stage": "production"})

    body = error_body(response, 409, "quality_gate")
    assert messages_of(body) == ["accuracy is 0.7, below the minimum 0.8"]
    assert "quality gate" in body["detail"]
    assert ModelVersion.objects.get(version=2).stage == "none"


def test_staff_force_past_the_gate_with_a_reason_but_not_without(staff, churn):
    api = api_for(staff)

    refused = api.post(
        "/api/models/churn/versions/2/transition/", {"to_stage": "production", "force": True}, format="json"
    )
    forced = api.post(
        "/api/models/churn/versions/2/transition/",
        {"to_stage": "production", "force": True, "reason": "Known data drift; accepted"},
        format="json",
    )

    # The service's rule, checked once there: the serializer only parses force and reason.
    assert error_body(refused, 400, "invalid")["detail"] == (
        "Forcing a promotion past the quality gate needs a written reason."
    )
    assert forced.status_code == 200
    assert StageTransition.objects.get().forced


@pytest.mark.parametrize(
    ("data", "status", "field", "problem"),
    [
        ({"to_stage": "deleted"}, 400, "to_stage", '"deleted" is not a valid choice.'),
        ({}, 400, "to_stage", "This field is required."),
        ({"to_stage": "staging", "force": "perhaps"}, 400, "force", "Must be a valid boolean."),
    ],
)
def test_a_malformed_transition_is_a_400(staff, churn, data, status, field, problem):
    response = api_for(staff).post("/api/models/churn/versions/1/transition/", data, format="json")

    body = error_body(response, status, "invalid")
    assert messages_of(body, field) == [problem]


def test_a_transition_the_service_refuses_is_a_400(staff, churn):
    api = api_for(staff)
    api.post("/api/models/churn/versions/1/transition/", {"to_stage": "staging"})

    response = api.post("/api/models/churn/versions/1/transition/", {"to_stage": "staging"})

    assert messages_of(error_body(response, 400, "invalid")) == ["churn v1 is already in staging."]


def test_staff_roll_back_and_get_the_restored_version(staff, churn):
    v1, v2 = churn.versions.order_by("version")
    transition_services.model_version_transition(model_version=v1, to_stage="production", user=staff)
    transition_services.model_version_transition(
        model_version=v2, to_stage="production", user=staff, force=True, reason="try"
    )

    response = api_for(staff).post("/api/models/churn/rollback/", {"reason": "v2 is worse"}, format="json")

    assert response.status_code == 200
    assert (response.json()["version"], response.json()["stage"]) == (1, "production")
    assert ModelVersion.objects.get(version=2).stage == "archived"


def test_a_rollback_to_a_version_below_the_gate_is_a_409_unless_staff_force_it(staff, churn):
    v1, v2 = churn.versions.order_by("version")
    transition_services.model_version_transition(
        model_version=v2, to_stage="production", user=staff, force=True, reason="try"
    )
    transition_services.model_version_transition(model_version=v1, to_stage="production", user=staff)
    api = api_for(staff)

    refused = api.post("/api/models/churn/rollback/", {}, format="json")
    no_reason = api.post("/api/models/churn/rollback/", {"force": True}, format="json")
    forced = api.post("/api/models/churn/rollback/", {"force": True, "reason": "v1 leaks"}, format="json")

    body = error_body(refused, 409, "quality_gate")
    assert messages_of(body) == ["accuracy is 0.7, below the minimum 0.8"]
    assert messages_of(error_body(no_reason, 400, "invalid")) == [
        "Forcing a rollback past the quality gate needs a written reason."
    ]
    assert (forced.status_code, forced.json()["version"]) == (200, 2)
    assert ModelVersion.objects.get(version=2).transitions.order_by("id").last().forced


def test_a_rollback_with_a_bad_force_value_is_a_400(staff, churn):
    response = api_for(staff).post("/api/models/churn/rollback/", {"force": "maybe"}, format="json")

    assert error_body(response, 400, "invalid")["errors"][0]["field"] == "force"


def test_staff_delete_a_model_without_versions(staff):
    make_model("leftover")

    response = api_for(staff).delete("/api/models/leftover/")

    assert response.status_code == 204
    assert not RegisteredModel.objects.filter(name="leftover").exists()


def test_deleting_a_model_with_versions_is_a_409_saying_why(staff, churn):
    response = api_for(staff).delete("/api/models/churn/")

    body = error_body(response, 409, "model_has_versions")
    assert body["detail"].startswith("Model 'churn' has 2 versions and cannot be deleted")
    assert RegisteredModel.objects.filter(name="churn").exists()


def test_deleting_an_unknown_model_is_a_404(staff):
    error_body(api_for(staff).delete("/api/models/nope/"), 404, "not_found")


def test_the_schema_documents_the_delete_and_the_rollbacks_gate(staff):
    schema = api_for(staff).get("/api/schema/", {"format": "json"}).json()

    delete = schema["paths"]["/api/models/{name}/"]["delete"]["responses"]
    rollback = schema["paths"]["/api/models/{name}/rollback/"]["post"]["responses"]
    assert {"204", "403", "404", "409"} <= set(delete)
    assert "409" in rollback


def test_a_rollback_without_history_is_a_400(staff, churn):
    response = api_for(staff).post("/api/models/churn/rollback/", {}, format="json")

    assert messages_of(error_body(response, 400, "invalid")) == [
        "Model 'churn' has no earlier production version to roll back to."
    ]


# ------------------------------------------------------------------------------
# Uploading an external model
# ------------------------------------------------------------------------------
def skops_file_of_a_small_pipeline() -> bytes:
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from ml import artifacts

    frame = pd.DataFrame({"age": np.arange(40, dtype=float), "city": ["Paris", "Rome"] * 20})
    labels = np.array(["no", "yes"] * 20)
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("num", "passthrough", ["age"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                    ]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, labels)
    return artifacts.skops_dump(pipeline)


SCHEMA = (
    '[{"name": "age", "kind": "numeric", "min": 0, "max": 39}, '
    '{"name": "city", "kind": "categorical", "categories": ["Paris", "Rome"]}]'
)


def test_staff_upload_a_skops_model_as_a_new_version(staff):
    upload = io.BytesIO(skops_file_of_a_small_pipeline())
    upload.name = "external.skops"

    response = api_for(staff).post(
        "/api/models/external/versions/upload/",
        {"file": upload, "task": "classification", "feature_schema": SCHEMA, "metrics": '{"accuracy": 0.75}'},
        format="multipart",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["model"], body["version"], body["source"]) == ("external", 1, "uploaded")
    assert body["classes"] == ["no", "yes"]
    assert body["metrics"] == {"accuracy": 0.75}
    assert len(body["skops_sha256"]) == 64


def test_a_pickle_upload_is_refused_with_a_400(staff):
    import pickle

    upload = io.BytesIO(pickle.dumps({"not": "a model"}))
    upload.name = "model.pkl"

    response = api_for(staff).post(
        "/api/models/external/versions/upload/",
        {"file": upload, "task": "classification", "feature_schema": SCHEMA},
        format="multipart",
    )

    [message] = messages_of(error_body(response, 400, "invalid"))
    assert "Nothing was stored." in message
    assert not ModelVersion.objects.exists()


def test_an_upload_without_a_file_or_schema_names_the_missing_fields(staff):
    response = api_for(staff).post(
        "/api/models/external/versions/upload/", {"task": "regression"}, format="multipart"
    )

    body = error_body(response, 400, "invalid")
    assert [(e["field"], e["code"]) for e in body["errors"]] == [
        ("file", "required"),
        ("feature_schema", "required"),
    ]


def test_the_schema_documents_the_registry_endpoints(staff):
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    with GENERATOR_STATS.silence():
        schema = SchemaGenerator().get_schema(request=None, public=True)

    problems = [*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache]
    assert [
        m for m in problems if "registry" in m.lower() or "model" in m.lower() or "training" in m.lower()
    ] == []
    paths = schema["paths"]
    assert set(paths["/api/models/"]) == {"get", "post"}
    assert "409" in paths["/api/models/{model_name}/versions/{version}/transition/"]["post"]["responses"]
    assert (
        "multipart/form-data"
        in paths["/api/models/{model_name}/versions/upload/"]["post"]["requestBody"]["content"]
    )
    assert set(paths["/api/training-runs/"]) == {"get", "post"}
