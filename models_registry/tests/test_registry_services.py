"""Tests for the registry services: transitions, rollback, the quality gate, MLflow aliases and uploads."""

from __future__ import annotations

import io
import os
import pickle
from unittest import mock

import joblib
import pytest
from celery.exceptions import Retry
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from ml import artifacts, onnx_export
from ml.train import model_train
from mlops_site import storage
from models_registry import mlflow_gateway, tasks, transition_services, upload_services
from models_registry import services as registry_services
from models_registry.models import (
    ModelVersion,
    RegisteredModel,
    StageTransition,
    Webhook,
    WebhookDelivery,
    min_metrics_normalize,
)
from models_registry.transition_services import QualityGateError
from training.tests.helpers import (
    cancer_frame,
    dataset_upload,
    model_make,
    run_train,
    version_make,
    version_of,
)

pytestmark = pytest.mark.django_db


def transition(version, to_stage, user, **kwargs):
    return transition_services.model_version_transition(
        model_version=version, to_stage=to_stage, user=user, **kwargs
    )


def stages(registered: RegisteredModel) -> dict[int, str]:
    return dict(registered.versions.values_list("version", "stage"))


# ------------------------------------------------------------------------------
# Transitions
# ------------------------------------------------------------------------------
def test_promoting_to_staging_records_who_when_from_to_and_why(staff):
    version = version_make(model_make(), 1)

    transition(version, "staging", staff, reason="ready for a look")

    version.refresh_from_db()
    assert version.stage == "staging"
    (record,) = version.transitions.all()
    assert (record.from_stage, record.to_stage, record.action) == ("none", "staging", "promote")
    assert record.user == staff
    assert record.reason == "ready for a look"
    assert record.forced is False
    assert record.created_at is not None


def test_promoting_to_production_archives_the_previous_production_version(staff):
    registered = model_make()
    first, second = version_make(registered, 1), version_make(registered, 2)
    transition(first, "production", staff)

    transition(second, "production", staff, reason="better recall")

    assert stages(registered) == {1: "archived", 2: "production"}
    archived = first.transitions.get(to_stage="archived")
    assert (archived.from_stage, archived.action, archived.user) == ("production", "archive", staff)
    assert archived.reason == "Replaced in production by version 2."
    assert second.transitions.get().reason == "better recall"


def test_archiving_the_production_version_leaves_none_in_production(staff):
    registered = model_make()
    version = version_make(registered, 1)
    transition(version, "production", staff)

    transition(version, "archived", staff, reason="data drift")

    assert stages(registered) == {1: "archived"}
    assert version.transitions.order_by("id").last().action == "archive"


@pytest.mark.parametrize(
    ("start", "to_stage", "message"),
    [
        ("staging", "staging", "is already in staging"),
        ("production", "staging", "cannot move to staging"),
        ("none", "none", "Unknown target stage 'none'"),
        ("none", "deleted", "Unknown target stage 'deleted'"),
    ],
)
def test_impossible_transitions_are_refused_with_the_reason(staff, start, to_stage, message):
    version = version_make(model_make(), 1, stage=start)

    with pytest.raises(ValidationError, match=message):
        transition(version, to_stage, staff)

    version.refresh_from_db()
    assert version.stage == start
    assert not StageTransition.objects.exists()


def test_a_stale_copy_of_a_version_is_checked_against_its_current_stage(staff):
    version = version_make(model_make(), 1)
    stale = ModelVersion.objects.get(pk=version.pk)
    transition(version, "staging", staff)

    with pytest.raises(ValidationError, match="already in staging"):
        transition(stale, "staging", staff)


def test_the_database_refuses_a_second_production_version():
    registered = model_make()
    version_make(registered, 1, stage="production")

    with pytest.raises(IntegrityError), transaction.atomic():
        version_make(registered, 2, stage="production")


def test_the_one_production_constraint_is_per_model():
    version_make(model_make("first"), 1, stage="production")
    version_make(model_make("second"), 1, stage="production")

    assert ModelVersion.objects.filter(stage="production").count() == 2


# ------------------------------------------------------------------------------
# Rollback
# ------------------------------------------------------------------------------
def test_rollback_puts_the_previous_production_version_back(staff):
    registered = model_make()
    first, second = version_make(registered, 1), version_make(registered, 2)
    transition(first, "production", staff)
    transition(second, "production", staff)

    restored = transition_services.model_version_rollback(
        registered_model=registered, user=staff, reason="v2 broke"
    )

    assert restored == first
    assert stages(registered) == {1: "production", 2: "archived"}
    back = first.transitions.order_by("id").last()
    assert (back.from_stage, back.to_stage, back.action, back.reason) == (
        "archived",
        "production",
        "rollback",
        "v2 broke",
    )
    demoted = second.transitions.order_by("id").last()
    assert (demoted.from_stage, demoted.to_stage, demoted.action) == ("production", "archived", "rollback")
    assert demoted.reason == "Rolled back to version 1. v2 broke"


def test_rolling_back_twice_returns_to_the_version_rolled_back_from(staff):
    registered = model_make()
    first, second = version_make(registered, 1), version_make(registered, 2)
    transition(first, "production", staff)
    transition(second, "production", staff)
    transition_services.model_version_rollback(registered_model=registered, user=staff)

    transition_services.model_version_rollback(registered_model=registered, user=staff)

    assert stages(registered) == {1: "archived", 2: "production"}


def _gate_raised_after_v1(staff) -> RegisteredModel:
    """v1 served production, v2 replaced it, then the gate rose above v1's accuracy."""
    registered = model_make()
    first, second = version_make(registered, 1, metrics={"accuracy": 0.7}), version_make(registered, 2)
    transition(first, "production", staff)
    transition(second, "production", staff)
    registry_services.registered_model_thresholds_set(
        registered_model=registered, min_metrics={"accuracy": 0.8}
    )
    return registered


def test_rollback_applies_the_quality_gate_as_a_promotion_does(staff):
    registered = _gate_raised_after_v1(staff)

    with pytest.raises(QualityGateError) as refused:
        transition_services.model_version_rollback(registered_model=registered, user=staff)

    assert refused.value.reasons == ["accuracy is 0.7, below the minimum 0.8"]
    assert stages(registered) == {1: "archived", 2: "production"}
    assert not StageTransition.objects.filter(action="rollback").exists()


def test_staff_force_a_rollback_past_the_gate_with_a_reason_and_it_is_recorded(staff):
    registered = _gate_raised_after_v1(staff)

    restored = transition_services.model_version_rollback(
        registered_model=registered, user=staff, reason="v2 corrupts outputs", force=True
    )

    assert restored.version == 1
    assert stages(registered) == {1: "production", 2: "archived"}
    back = restored.transitions.order_by("id").last()
    assert (back.action, back.forced) == ("rollback", True)
    assert back.reason == (
        "v2 corrupts outputs\n\nForced past the quality gate (accuracy is 0.7, below the minimum 0.8)."
    )


@pytest.mark.parametrize(
    ("who", "reason", "message"),
    [
        ("user", "please", "Only staff members may force a rollback past the quality gate."),
        (None, "automatic", "Only staff members may force a rollback past the quality gate."),
        ("staff", "  ", "Forcing a rollback past the quality gate needs a written reason."),
    ],
)
def test_forcing_a_rollback_needs_staff_and_a_reason(staff, alice, who, reason, message):
    registered = _gate_raised_after_v1(staff)
    user = {"user": alice, "staff": staff, None: None}[who]

    with pytest.raises(ValidationError) as refused:
        transition_services.model_version_rollback(
            registered_model=registered, user=user, reason=reason, force=True
        )

    assert refused.value.messages == [message]
    assert stages(registered) == {1: "archived", 2: "production"}


def test_forcing_a_rollback_that_passes_the_gate_records_nothing_forced(staff):
    registered = model_make()
    first, second = version_make(registered, 1), version_make(registered, 2)
    transition(first, "production", staff)
    transition(second, "production", staff)

    restored = transition_services.model_version_rollback(
        registered_model=registered, user=staff, reason="just in case", force=True
    )

    back = restored.transitions.order_by("id").last()
    assert (back.forced, back.reason) == (False, "just in case")


def test_a_rollback_is_named_by_the_way_it_goes(staff):
    registered = model_make()
    first, second = version_make(registered, 1), version_make(registered, 2)
    transition(first, "production", staff)
    transition(second, "production", staff)

    before = transition_services.rollback_preview(registered_model=registered)
    transition_services.model_version_rollback(registered_model=registered, user=staff)
    after = transition_services.rollback_preview(registered_model=registered)

    assert (before.label, before.current.version, before.new.version) == ("Roll back to v1", 2, 1)
    assert (after.label, after.current.version, after.new.version) == ("Return v2 to production", 1, 2)
    returned = transition_services.model_version_rollback(registered_model=registered, user=staff)
    demoted = first.transitions.order_by("id").last()
    assert returned.version == 2
    assert demoted.reason == "Replaced in production by version 2, returned by a rollback."


def test_a_rollback_preview_shows_the_gate_of_the_returning_version(staff):
    registered = _gate_raised_after_v1(staff)

    preview = transition_services.rollback_preview(registered_model=registered)

    assert preview.gate_failures == ["accuracy is 0.7, below the minimum 0.8"]
    assert stages(registered) == {1: "archived", 2: "production"}


@pytest.mark.parametrize(
    ("stage", "to_stage", "changes"),
    [
        ("none", "production", True),
        ("staging", "production", True),
        ("production", "archived", True),
        ("staging", "archived", False),
        ("none", "staging", False),
    ],
)
def test_which_moves_change_production(stage, to_stage, changes):
    version = version_make(model_make(), 1, stage=stage)

    assert (
        transition_services.transition_changes_production(model_version=version, to_stage=to_stage) is changes
    )


def test_a_transition_preview_names_the_change_and_refuses_an_impossible_move(staff):
    registered = model_make(min_metrics={"accuracy": {"min": 0.95}})
    first, second = version_make(registered, 1, stage="production"), version_make(registered, 2)

    promote = transition_services.transition_preview(model_version=second, to_stage="production")
    archive = transition_services.transition_preview(model_version=first, to_stage="archived")

    assert (promote.label, promote.current, promote.new) == ("Promote v2 to production", first, second)
    assert promote.gate_failures == ["accuracy is 0.9, below the minimum 0.95"]
    assert (archive.label, archive.current, archive.new) == ("Archive v1", first, None)
    with pytest.raises(ValidationError, match=r"churn v1 is already in production\."):
        transition_services.transition_preview(model_version=first, to_stage="production")


def test_rollback_without_an_earlier_production_version_is_refused(staff):
    registered = model_make()
    only = version_make(registered, 1)
    version_make(registered, 2, stage="staging")
    transition(only, "production", staff)

    with pytest.raises(ValidationError, match="'churn' has no earlier production version to roll back to"):
        transition_services.model_version_rollback(registered_model=registered, user=staff)

    assert stages(registered) == {1: "production", 2: "staging"}


def test_rollback_after_archiving_production_restores_the_archived_version(staff):
    registered = model_make()
    version = version_make(registered, 1)
    transition(version, "production", staff)
    transition(version, "archived", staff)

    assert transition_services.model_version_rollback(registered_model=registered, user=staff) == version
    assert stages(registered) == {1: "production"}


# ------------------------------------------------------------------------------
# Quality gate
# ------------------------------------------------------------------------------
@pytest.fixture
def gated():
    registered = model_make(min_metrics={"accuracy": {"min": 0.9}, "log_loss": {"max": 0.3}})
    return version_make(registered, 1, metrics={"accuracy": 0.85, "log_loss": 0.5})


def test_promotion_below_the_thresholds_is_refused_with_each_failing_metric(gated, staff):
    with pytest.raises(QualityGateError) as refused:
        transition(gated, "production", staff)

    assert refused.value.reasons == [
        "accuracy is 0.85, below the minimum 0.9",
        "log_loss is 0.5, above the maximum 0.3",
    ]
    assert "does not pass the quality gate" in refused.value.messages[0]
    gated.refresh_from_db()
    assert gated.stage == "none"
    assert not StageTransition.objects.exists()


def test_the_gate_does_not_apply_to_staging(gated, staff):
    transition(gated, "staging", staff)
    gated.refresh_from_db()
    assert gated.stage == "staging"


def test_staff_can_force_a_promotion_with_a_written_reason_which_is_recorded(gated, staff):
    transition(gated, "production", staff, force=True, reason="hotfix for the holiday spike")

    gated.refresh_from_db()
    assert gated.stage == "production"
    record = gated.transitions.get()
    assert record.forced is True
    assert record.reason.startswith("hotfix for the holiday spike")
    assert "accuracy is 0.85, below the minimum 0.9" in record.reason


@pytest.mark.parametrize("reason", ["", "   "])
def test_forcing_without_a_reason_is_refused(gated, staff, reason):
    with pytest.raises(ValidationError, match="needs a written reason"):
        transition(gated, "production", staff, force=True, reason=reason)


def test_forcing_is_refused_for_users_who_are_not_staff(gated, alice):
    with pytest.raises(ValidationError, match="Only staff members may force"):
        transition(gated, "production", alice, force=True, reason="trust me")
    with pytest.raises(ValidationError, match="Only staff members may force"):
        transition(gated, "production", None, force=True, reason="trust me")


def test_a_version_that_passes_the_gate_is_not_recorded_as_forced(staff):
    registered = model_make(min_metrics={"accuracy": {"min": 0.8}})
    version = version_make(registered, 1, metrics={"accuracy": 0.8})

    transition(version, "production", staff, force=True, reason="belt and braces")

    assert version.transitions.get().forced is False


def test_a_metric_the_version_lacks_fails_the_gate():
    registered = model_make(min_metrics={"roc_auc": {"min": 0.7}})
    version = version_make(registered, 1, metrics={"accuracy": 0.99})

    assert transition_services.quality_gate_check(model_version=version) == [
        "roc_auc was not measured for this version (required: at least 0.7)"
    ]


def test_thresholds_accept_plain_numbers_and_take_the_direction_from_the_metric():
    assert min_metrics_normalize(task="regression", value={"r2": 0.5, "rmse": 3}) == {
        "r2": {"min": 0.5},
        "rmse": {"max": 3.0},
    }


@pytest.mark.parametrize(
    ("task", "value", "message"),
    [
        ("classification", {"rmse": 1}, "Unknown metric 'rmse' for classification"),
        ("regression", {"rmse": {"min": 1}}, "must be a maximum"),
        ("classification", {"accuracy": "high"}, "must be a number"),
        ("classification", {"accuracy": True}, "must be a number"),
        ("classification", [0.8], "must be a JSON object"),
        ("", {"accuracy": 0.8}, "Choose the model's task"),
    ],
)
def test_invalid_thresholds_are_refused(task, value, message):
    with pytest.raises(ValidationError, match=message):
        min_metrics_normalize(task=task, value=value)


def test_registered_model_create_validates_name_task_and_thresholds(staff):
    created = registry_services.registered_model_create(
        name="churn", task="classification", min_metrics={"accuracy": 0.8}, created_by=staff
    )
    assert created.min_metrics == {"accuracy": {"min": 0.8}}
    with pytest.raises(ValidationError, match="already exists"):
        registry_services.registered_model_create(name="churn", created_by=staff)
    with pytest.raises(ValidationError, match="is not valid"):
        registry_services.registered_model_create(name="Churn Model", created_by=staff)


# ------------------------------------------------------------------------------
# Webhook events
# ------------------------------------------------------------------------------
def test_transitions_announce_events_to_subscribed_webhooks(staff):
    registered = model_make()
    Webhook.objects.create(
        registered_model=registered,
        url="http://127.0.0.1:9/hook",
        secret="s3cret",
        events=["version_promoted", "version_archived", "version_rolled_back"],
    )
    first, second = version_make(registered, 1), version_make(registered, 2)

    transition(first, "production", staff)
    transition(second, "production", staff)
    transition_services.model_version_rollback(registered_model=registered, user=staff)

    events = list(WebhookDelivery.objects.order_by("id").values_list("event", "payload__data__version"))
    assert events == [
        ("version_promoted", 1),
        ("version_archived", 1),
        ("version_promoted", 2),
        ("version_archived", 2),
        ("version_rolled_back", 1),
    ]
    promoted = WebhookDelivery.objects.filter(event="version_promoted").order_by("id").last().payload["data"]
    assert promoted["transition"]["user"] == staff.username
    assert promoted["previous_production"] == [1]


# ------------------------------------------------------------------------------
# MLflow aliases (real tracking store)
# ------------------------------------------------------------------------------
@pytest.fixture
def trained_pair(staff):
    dataset = dataset_upload(cancer_frame(80), name="cancer", target="diagnosis")
    return version_of(run_train(dataset, user=staff)), version_of(run_train(dataset, user=staff, seed=1))


def test_transitions_are_mirrored_to_mlflow_aliases(trained_pair, staff, django_capture_on_commit_callbacks):
    first, second = trained_pair

    with django_capture_on_commit_callbacks(execute=True):
        transition(first, "staging", staff)
    assert mlflow_gateway.aliases_get(name="cancer") == {"staging": 1}

    with django_capture_on_commit_callbacks(execute=True):
        transition(first, "production", staff)
        transition(second, "staging", staff)
    assert mlflow_gateway.aliases_get(name="cancer") == {"production": 1, "staging": 2}

    with django_capture_on_commit_callbacks(execute=True):
        transition(second, "production", staff)
    assert mlflow_gateway.aliases_get(name="cancer") == {"production": 2}

    with django_capture_on_commit_callbacks(execute=True):
        transition_services.model_version_rollback(registered_model=first.registered_model, user=staff)
    assert mlflow_gateway.aliases_get(name="cancer") == {"production": 1}

    with django_capture_on_commit_callbacks(execute=True):
        transition(first, "archived", staff)
    assert mlflow_gateway.aliases_get(name="cancer") == {}


def test_the_alias_sync_task_is_idempotent_and_repairs_drift(trained_pair, staff):
    first, second = trained_pair
    ModelVersion.objects.filter(pk=first.pk).update(stage="production")
    ModelVersion.objects.filter(pk=second.pk).update(stage="staging")
    mlflow_gateway.alias_set(name="cancer", alias="production", version=2)
    mlflow_gateway.alias_set(name="cancer", alias="champion", version=2)

    with mock.patch.object(mlflow_gateway, "alias_set", wraps=mlflow_gateway.alias_set) as alias_set:
        first_result = tasks.model_aliases_sync_task.apply(args=[first.registered_model_id]).get()
        calls_after_first = alias_set.call_count
        second_result = tasks.model_aliases_sync_task.apply(args=[first.registered_model_id]).get()

    assert first_result == second_result == {"production": 1, "staging": 2}
    assert calls_after_first == 2
    assert alias_set.call_count == 2
    # Aliases this app does not manage are left alone.
    assert mlflow_gateway.aliases_get(name="cancer") == {"production": 1, "staging": 2, "champion": 2}


def test_the_alias_sync_task_retries_when_mlflow_is_unavailable(trained_pair):
    first, _ = trained_pair
    with (
        mock.patch.object(
            mlflow_gateway, "aliases_get", side_effect=mlflow_gateway.RegistryUnavailable("down")
        ),
        pytest.raises(Retry),
    ):
        tasks.model_aliases_sync_task.apply(args=[first.registered_model_id], throw=True)


def test_the_alias_sync_of_a_model_mlflow_does_not_know_sets_nothing():
    registered = model_make("uploaded-only")
    version_make(registered, 1, stage="production")

    assert registry_services.model_aliases_sync(registered_model_id=registered.pk) == {
        "production": None,
        "staging": None,
    }


def test_the_sync_all_task_queues_one_sync_per_model_with_versions():
    with_versions = model_make("a")
    version_make(with_versions, 1)
    model_make("b")

    with mock.patch.object(tasks.model_aliases_sync_task, "delay") as delay:
        assert tasks.model_aliases_sync_all_task.apply().get() == 1

    delay.assert_called_once_with(with_versions.pk)


# ------------------------------------------------------------------------------
# Uploading external models
# ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_core():
    """A pipeline from our own training core, with its schema, classes and holdout."""
    return model_train(
        frame=cancer_frame(80),
        schema_columns=[
            {"name": name, "kind": "categorical" if name == "diagnosis" else "numeric"}
            for name in cancer_frame(1)
        ],
        target_column="diagnosis",
        algorithm="logistic_regression",
    )


def stored_model_files() -> list[str]:
    from training.tests.helpers import stored_model_files as listing

    return listing()


def upload(data: bytes, filename: str, schema, **kwargs):
    return upload_services.model_version_upload(
        registered_model_name=kwargs.pop("name", "external"),
        file=io.BytesIO(data),
        filename=filename,
        feature_schema=schema,
        task=kwargs.pop("task", "classification"),
        created_by=kwargs.pop("created_by", None),
        **kwargs,
    )


def test_a_skops_file_from_our_training_core_is_accepted_with_its_schema(trained_core, staff):
    data = artifacts.skops_dump(trained_core.pipeline)

    version = upload(
        data, "model.skops", trained_core.feature_schema, created_by=staff, target_column="diagnosis"
    )

    assert version.source == ModelVersion.Source.UPLOADED
    assert version.version == 1
    assert version.registered_model.task == "classification"
    assert version.classes == trained_core.classes
    assert [c["name"] for c in version.feature_schema] == [c["name"] for c in trained_core.feature_schema]
    assert version.skops_sha256 == artifacts.sha256_hex(data)
    assert storage.read_bytes(version.skops_key) == data
    assert version.onnx_key == ""
    assert version.onnx_status == "unavailable"
    assert version.mlflow_version is None
    assert version.created_by == staff


def test_an_onnx_file_from_our_training_core_is_accepted(trained_core):
    conversion = onnx_export.onnx_convert(
        pipeline=trained_core.pipeline,
        feature_schema=trained_core.feature_schema,
        X_holdout=trained_core.X_holdout,
        classes=trained_core.classes,
    )
    assert conversion.available, conversion.reason

    version = upload(conversion.data, "model.onnx", trained_core.feature_schema, metrics='{"accuracy": 0.9}')

    assert version.onnx_status == "available"
    assert version.onnx_sha256 == conversion.sha256
    assert storage.read_bytes(version.onnx_key) == conversion.data
    assert version.skops_key == ""
    assert version.classes == trained_core.classes
    assert version.metrics == {"accuracy": 0.9}


def test_a_second_upload_becomes_the_next_version(trained_core):
    data = artifacts.skops_dump(trained_core.pipeline)
    upload(data, "model.skops", trained_core.feature_schema)

    assert upload(data, "again.skops", trained_core.feature_schema).version == 2


def _refused(data: bytes, filename: str, schema, message: str, **kwargs) -> None:
    with pytest.raises(ValidationError) as refused:
        upload(data, filename, schema, **kwargs)
    assert any(message in m for m in refused.value.messages), refused.value.messages
    assert not ModelVersion.objects.exists()
    assert not RegisteredModel.objects.exists()
    assert stored_model_files() == []


def test_a_pickle_is_refused(trained_core):
    data = pickle.dumps(trained_core.pipeline)
    _refused(data, "model.pkl", trained_core.feature_schema, "a Python pickle")
    _refused(data, "model.skops", trained_core.feature_schema, "are never accepted")


def test_a_joblib_file_is_refused(trained_core):
    buffer = io.BytesIO()
    joblib.dump(trained_core.pipeline, buffer)
    _refused(buffer.getvalue(), "model.joblib", trained_core.feature_schema, "are never accepted")
    compressed = io.BytesIO()
    joblib.dump(trained_core.pipeline, compressed, compress=("gzip", 3))
    _refused(compressed.getvalue(), "model.joblib", trained_core.feature_schema, "gzip-compressed")


def test_random_bytes_are_refused(trained_core):
    _refused(
        os.urandom(4096), "model.onnx", trained_core.feature_schema, "neither a skops file nor a valid ONNX"
    )


def test_an_oversized_file_is_refused_before_it_is_read_whole(trained_core, settings):
    settings.MODEL_MAX_UPLOAD_MB = 1
    data = artifacts.skops_dump(trained_core.pipeline) + b"\0" * (1024 * 1024)
    _refused(data, "model.skops", trained_core.feature_schema, "larger than the 1 MB limit")


def test_a_model_that_does_not_fit_the_schema_is_refused(trained_core):
    data = artifacts.skops_dump(trained_core.pipeline)
    schema = [{"name": "mean radius", "kind": "numeric"}]
    _refused(data, "model.skops", schema, "could not predict a row built from the feature schema")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("not json", "not valid JSON"),
        ([], "non-empty JSON list"),
        ([{"name": "a", "kind": "text"}], "has kind 'text'"),
        ([{"name": "a", "kind": "numeric"}, {"name": "a", "kind": "numeric"}], "appears twice"),
        ([{"name": "a", "kind": "numeric", "min": 5, "max": 1}], "greater than max"),
        ([{"name": "a", "kind": "categorical", "categories": [1, 2]}], "list of text"),
    ],
)
def test_a_malformed_feature_schema_is_refused(trained_core, schema, message):
    _refused(artifacts.skops_dump(trained_core.pipeline), "model.skops", schema, message)


def test_a_classification_onnx_model_needs_its_classes(trained_core):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    frame = cancer_frame(80)
    features = frame[["mean radius", "mean texture"]].to_numpy(dtype="float32")
    plain = LogisticRegression().fit(features, frame["diagnosis"] == "benign")
    data = to_onnx(plain, features[:1], options={id(plain): {"zipmap": False}}).SerializeToString()
    schema = [{"name": "mean radius", "kind": "numeric"}, {"name": "mean texture", "kind": "numeric"}]

    _refused(data, "plain.onnx", schema, "Give the class labels")
    version = upload(data, "plain.onnx", schema, classes=["malignant", "benign"])
    assert version.classes == ["malignant", "benign"]


@pytest.mark.django_db
def test_a_model_cannot_take_the_name_of_a_fixed_page():
    with pytest.raises(ValidationError, match="reserved for a page"):
        registry_services.registered_model_get_or_create(name="upload", created_by=None)
