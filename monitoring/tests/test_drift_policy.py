"""Tests of drift as a retraining trigger: the policy's switch, and the reading the loop acts on."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from django.core.exceptions import ValidationError

from monitoring import drift_services
from monitoring.tests.drift_helpers import drift_version, traffic_store
from training import policy_services

NOW = dt.datetime(2025, 6, 2, 0, 20, tzinfo=dt.UTC)


def drifted_champion():
    version = drift_version()
    hours = [NOW.replace(minute=0) - dt.timedelta(hours=h) for h in range(1, 4)]
    traffic_store(version, n=2000, hours=hours, rng=np.random.default_rng(1), shift=1.0)
    drift_services.drift_reports_compute(now=NOW)
    return version


@pytest.mark.django_db
def test_the_drift_trigger_is_off_by_default_and_set_like_any_policy_field() -> None:
    version = drifted_champion()
    registered = version.registered_model
    policy = policy_services.retraining_policy_get(registered_model=registered)
    assert policy.trigger_on_drift is False
    assert policy_services.drift_reading(policy=policy, version=version) is None

    policy = policy_services.retraining_policy_set(
        registered_model=registered, data={"trigger_on_drift": "true"}, user=None
    )
    assert policy.trigger_on_drift is True
    with pytest.raises(ValidationError):
        policy_services.retraining_policy_set(
            registered_model=registered, data={"trigger_on_drift": "maybe"}, user=None
        )


@pytest.mark.django_db
def test_a_drifting_champion_gives_a_reading_that_names_the_drifted_features() -> None:
    version = drifted_champion()
    policy = policy_services.retraining_policy_set(
        registered_model=version.registered_model, data={"trigger_on_drift": True}, user=None
    )
    reading = policy_services.drift_reading(policy=policy, version=version)
    assert reading is not None
    assert reading.drifting
    assert {"x", "c"} <= set(reading.drifted)
    assert "drifted" in reading.reason
    assert reading.as_dict()["rows"] == 2000


@pytest.mark.django_db
def test_a_stable_champion_gives_no_reading() -> None:
    version = drift_version()
    hours = [NOW.replace(minute=0) - dt.timedelta(hours=h) for h in range(1, 4)]
    traffic_store(version, n=2000, hours=hours, rng=np.random.default_rng(2))
    drift_services.drift_reports_compute(now=NOW)
    policy = policy_services.retraining_policy_set(
        registered_model=version.registered_model, data={"trigger_on_drift": True}, user=None
    )
    assert policy_services.drift_reading(policy=policy, version=version) is None


@pytest.mark.django_db
def test_the_loop_starts_a_drift_retraining_when_the_champion_drifts_but_its_live_metric_holds(staff) -> None:
    from django.utils import timezone

    from feedback import services as feedback_services
    from feedback.models import Source
    from models_registry import transition_services
    from models_registry.models import Stage
    from monitoring import drift_rollups
    from predictions import services as prediction_services
    from training import retraining_services
    from training.models import Retraining
    from training.tests.helpers import cancer_frame, dataset_upload, run_train, version_of

    frame = cancer_frame(200)
    dataset = dataset_upload(frame, name="cancer", target="diagnosis", user=staff)
    champion = version_of(run_train(dataset, model_name="cancer"))
    transition_services.model_version_transition(
        model_version=champion, to_stage=Stage.PRODUCTION, user=staff
    )
    champion.refresh_from_db()
    # Three labels: enough for the guardrail; the threshold of 0 keeps the live metric from triggering.
    features = [c["name"] for c in champion.feature_schema]
    outcome = prediction_services.prediction_make(
        registered_model_name="cancer",
        rows=frame[features].head(3).to_dict("records"),
        user=staff,
        channel="api",
    )
    feedback_services.feedback_give_many(
        items=[{"prediction": p.pk, "true_label": "benign"} for p in outcome.predictions],
        user=staff,
        source=Source.API,
    )
    policy_services.retraining_policy_set(
        registered_model=champion.registered_model,
        data={"enabled": True, "trigger_on_drift": True, "min_labels": 3, "threshold": 0.0},
        user=None,
    )
    assert retraining_services.retraining_policies_check() == []

    now = timezone.now()
    shifted = frame.sample(2000, replace=True, random_state=0)
    drift_rollups.prediction_features_add(
        model_version=champion,
        columns={name: shifted[name].to_numpy(dtype="float64") * 1.5 for name in features},
        predictions=["benign"] * len(shifted),
        confidences=[0.9] * len(shifted),
        hour=now - dt.timedelta(hours=1),
    )
    drift_services.drift_reports_compute(now=now)

    started = retraining_services.retraining_policies_check()
    assert len(started) == 1
    retraining = Retraining.objects.get(pk=started[0])
    assert retraining.trigger == Retraining.Trigger.DRIFT
    assert "is drifting" in retraining.reason
    assert retraining.figures["drift"]["drifting"] is True
