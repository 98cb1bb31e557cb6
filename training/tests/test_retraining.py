"""The closed loop on a drifting concept: triggers and their guardrails, the derived dataset and its lineage,
the challenger judged on the holdout."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.exceptions import ValidationError

from datasets.models import DatasetVersion
from feedback import services as feedback_services
from feedback.models import Source
from ml import drift_simulation as sim
from models_registry.models import ChallengerMode, ModelVersion, RegisteredModel, Stage
from predictions import services as prediction_services
from predictions.models import Channel
from training import policy_services, retraining_services
from training.models import Retraining, RetrainingEvent

pytestmark = pytest.mark.django_db

POLICY = {
    "enabled": True,
    "metric": "accuracy",
    "threshold": 0.85,
    "min_labels": 100,
    "window": "last",
    "last_n": 150,
    "cooldown_minutes": 0,
    "margin": 0.02,
    "alpha": 0.05,
    "shadow_min_labels": 50,
    "recent_holdout_share": 0.3,
}


def _traffic(user, *, n: int, drifted: bool, seed: int, random: bool = False) -> list[int]:
    """Predict `n` rows through the prediction service and give each its true outcome; returns their ids."""
    rng = np.random.default_rng(seed)
    rows = sim.features_draw(n, rng=rng)
    truth = sim.random_labels(n, rng=rng) if random else sim.labels(rows, drifted=drifted, rng=rng)
    outcome = prediction_services.prediction_make(
        registered_model_name="concept", rows=rows.to_dict("records"), user=user, channel=Channel.API
    )
    ids = [p.pk for p in outcome.predictions]
    feedback_services.feedback_give_many(
        items=[{"prediction": pk, "true_label": label} for pk, label in zip(ids, truth, strict=True)],
        user=user,
        source=Source.API,
    )
    return ids


def _policy(champion: ModelVersion, **changes) -> None:
    policy_services.retraining_policy_set(
        registered_model=champion.registered_model, data={**POLICY, **changes}, user=None
    )


def test_a_policy_is_off_until_enabled_and_defaults_to_the_champions_holdout(champion):
    policy = policy_services.retraining_policy_get(registered_model=champion.registered_model)

    assert policy.pk is None
    assert not policy.enabled
    assert policy.metric == "accuracy"
    assert policy.threshold == pytest.approx(round(champion.metrics["accuracy"] - 0.05, 4))
    assert retraining_services.retraining_policies_check() == []


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"metric": "rmse"}, "metric"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "nan"}, "threshold"),
        ({"min_labels": 0}, "min_labels"),
        ({"margin": -0.1}, "margin"),
        ({"alpha": 2}, "alpha"),
        ({"last_n": 10**9}, "last_n"),
        ({"window": "forever"}, "window"),
        ({"enabled": "maybe"}, "enabled"),
        ({"cooldown_minutes": 1.5}, "cooldown_minutes"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_a_bad_policy_field_is_refused_by_name_and_nothing_is_saved(champion, data, field):
    with pytest.raises(ValidationError) as caught:
        policy_services.retraining_policy_set(
            registered_model=champion.registered_model, data=data, user=None
        )

    assert field in caught.value.message_dict
    assert not champion.registered_model.__class__.objects.get(pk=champion.registered_model_id).__dict__.get(
        "retraining_policy"
    )


def test_concept_drift_triggers_a_retraining_whose_challenger_beats_the_champion_on_the_holdout(
    champion, alice, django_capture_on_commit_callbacks
):
    _policy(champion, last_n=300, recent_holdout_share=0.5)
    _traffic(alice, n=60, drifted=False, seed=10)
    assert retraining_services.retraining_policies_check() == []  # healthy: nothing starts

    _traffic(alice, n=400, drifted=True, seed=11)
    with django_capture_on_commit_callbacks(execute=True):
        started = retraining_services.retraining_policies_check()

    (retraining_id,) = started
    retraining = Retraining.objects.get(pk=retraining_id)
    assert retraining.status == Retraining.Status.SUCCEEDED, retraining.error_message
    assert retraining.trigger == Retraining.Trigger.SCHEDULE
    assert retraining.decision == Retraining.Decision.SHADOWING, retraining.figures
    holdout = retraining.figures["holdout"]
    assert holdout["recent"]["challenger_score"] > holdout["recent"]["champion_score"] + 0.1
    assert holdout["original"]["challenger_score"] >= holdout["original"]["champion_score"] - 0.02
    assert holdout["combined"]["p_value"] < 0.05
    # Half the window is held out: the half left to learn from weighs double, so the window still counts
    # as much as its 300 outcomes against the older rows.
    plan = retraining.figures["plan"]
    assert plan["recent_holdout"] == 150
    assert plan["recent_weight"] == pytest.approx(2.0)

    challenger = retraining.challenger
    assert challenger.stage == Stage.STAGING
    assert challenger.algorithm == champion.algorithm
    assert challenger.params == champion.params
    assert challenger.registered_model.challenger_mode == ChallengerMode.SHADOW

    derived = retraining.dataset_version
    assert derived.parent == champion.dataset_version
    assert derived.row_count == champion.dataset_version.row_count + 460
    lineage = derived.lineage
    assert lineage["parent"]["version"] == champion.dataset_version.version
    assert lineage["parent_rows"] == 500
    assert lineage["feedback"]["rows"] == 460
    assert lineage["feedback"]["in_window"] == 300
    assert lineage["feedback"]["last_id"] > lineage["feedback"]["first_id"]
    assert lineage["retraining"] == retraining.pk
    kinds = list(
        RetrainingEvent.objects.filter(retraining=retraining).order_by("id").values_list("kind", flat=True)
    )
    assert kinds == ["triggered", "dataset_derived", "trained", "compared"]


def test_the_derived_dataset_keeps_the_newest_outcome_of_inputs_labelled_twice(champion, alice):
    _policy(champion, min_labels=10, last_n=100)
    ids = _traffic(alice, n=120, drifted=True, seed=3)
    # The same inputs predicted again and labelled the other way: one row, the newer label.
    first = prediction_services.prediction_make(
        registered_model_name="concept",
        rows=[{"x0": 2.5, "x1": 1.0, "x2": 0.0}],
        user=alice,
        channel=Channel.API,
    ).predictions[0]
    again = prediction_services.prediction_make(
        registered_model_name="concept",
        rows=[{"x0": 2.5, "x1": 1.0, "x2": 0.0}],
        user=alice,
        channel=Channel.API,
    ).predictions[0]
    feedback_services.feedback_give(
        prediction_id=first.pk, user=alice, source=Source.API, data={"true_label": "yes"}
    )
    feedback_services.feedback_give(
        prediction_id=again.pk, user=alice, source=Source.API, data={"true_label": "no"}
    )

    retraining = retraining_services.retraining_start(
        registered_model=champion.registered_model, trigger=Retraining.Trigger.MANUAL, reason="test"
    )
    retraining_services.retraining_run(retraining_id=retraining.pk)

    retraining.refresh_from_db()
    assert retraining.dataset_version is not None, retraining.error_message
    lineage = retraining.dataset_version.lineage
    assert lineage["feedback"]["rows"] == len(ids) + 1
    assert lineage["feedback"]["duplicates_dropped"] == 1
    frame = _derived_frame(retraining.dataset_version)
    twice = frame[(frame["x0"] == 2.5) & (frame["x1"] == 1.0)]
    assert twice[sim.TARGET].tolist() == ["no"]


def _derived_frame(version: DatasetVersion):
    from datasets import selectors

    return selectors.dataset_version_frame(version=version)


def test_random_labels_do_not_get_a_challenger_past_the_holdout(champion, alice):
    _policy(champion)
    _traffic(alice, n=300, random=True, drifted=False, seed=5)

    retraining = retraining_services.retraining_start(
        registered_model=champion.registered_model, trigger=Retraining.Trigger.MANUAL, reason="noise"
    )
    retraining_services.retraining_run(retraining_id=retraining.pk)

    retraining.refresh_from_db()
    assert retraining.status == Retraining.Status.SUCCEEDED, retraining.error_message
    assert retraining.decision == Retraining.Decision.HELD_BACK
    assert champion.registered_model.versions.get(stage=Stage.PRODUCTION) == champion
    held = RetrainingEvent.objects.get(retraining=retraining, kind="held_back")
    assert "holdout" in held.message


def test_a_deliberately_worse_challenger_is_held_back_with_its_figures(champion, alice):
    _policy(champion)
    _traffic(alice, n=300, drifted=False, seed=6)

    retraining = retraining_services.retraining_start(
        registered_model=champion.registered_model,
        trigger=Retraining.Trigger.MANUAL,
        reason="worse on purpose",
        params={"n_estimators": 1, "max_depth": 1},
    )
    retraining_services.retraining_run(retraining_id=retraining.pk)

    retraining.refresh_from_db()
    assert retraining.decision == Retraining.Decision.HELD_BACK
    assert retraining.challenger.params["max_depth"] == 1
    assert (
        retraining.figures["holdout"]["original"]["challenger_score"]
        < (retraining.figures["holdout"]["original"]["champion_score"])
    )
    assert RegisteredModel.objects.get(pk=champion.registered_model_id).challenger_mode == ChallengerMode.OFF


def test_guardrails_refuse_by_name(champion, alice):
    registered = champion.registered_model
    start = retraining_services.retraining_start

    with pytest.raises(retraining_services.RetrainingRefused) as caught:
        start(registered_model=registered, trigger=Retraining.Trigger.SCHEDULE, reason="x")
    assert caught.value.reason == "disabled"

    _policy(champion, min_labels=50, cooldown_minutes=60, max_per_day=2)
    with pytest.raises(retraining_services.RetrainingRefused) as caught:
        start(registered_model=registered, trigger=Retraining.Trigger.ALERT, reason="x")
    assert caught.value.reason == "min_labels"

    _traffic(alice, n=60, drifted=False, seed=7)
    first = start(registered_model=registered, trigger=Retraining.Trigger.ALERT, reason="x")
    with pytest.raises(retraining_services.RetrainingRefused) as caught:
        start(registered_model=registered, trigger=Retraining.Trigger.MANUAL, reason="x")
    assert caught.value.reason == "running"

    Retraining.objects.filter(pk=first.pk).update(
        status=Retraining.Status.SUCCEEDED, decision=Retraining.Decision.HELD_BACK
    )
    with pytest.raises(retraining_services.RetrainingRefused) as caught:
        start(registered_model=registered, trigger=Retraining.Trigger.ALERT, reason="x")
    assert caught.value.reason == "cooldown"

    second = start(registered_model=registered, trigger=Retraining.Trigger.MANUAL, reason="staff may")
    Retraining.objects.filter(pk=second.pk).update(
        status=Retraining.Status.SUCCEEDED, decision=Retraining.Decision.SHADOWING
    )
    with pytest.raises(retraining_services.RetrainingRefused) as caught:
        start(registered_model=registered, trigger=Retraining.Trigger.MANUAL, reason="x")
    assert caught.value.reason == "undecided"

    Retraining.objects.filter(pk=second.pk).update(decision=Retraining.Decision.HELD_BACK)
    with pytest.raises(retraining_services.RetrainingRefused) as caught:
        start(registered_model=registered, trigger=Retraining.Trigger.MANUAL, reason="x")
    assert caught.value.reason == "daily_cap"
    refused = RetrainingEvent.objects.filter(registered_model=registered, kind="refused")
    assert refused.count() == 5
    assert Retraining.objects.filter(registered_model=registered).count() == 2


def test_a_retraining_run_twice_derives_and_trains_once(champion, alice):
    _policy(champion)
    _traffic(alice, n=200, drifted=True, seed=8)
    retraining = retraining_services.retraining_start(
        registered_model=champion.registered_model, trigger=Retraining.Trigger.MANUAL, reason="twice"
    )

    retraining_services.retraining_run(retraining_id=retraining.pk)
    again = retraining_services.retraining_run(retraining_id=retraining.pk)

    assert again.status == "skipped"
    assert DatasetVersion.objects.filter(parent=champion.dataset_version).count() == 1
    assert ModelVersion.objects.filter(registered_model=champion.registered_model).count() == 2
    assert RetrainingEvent.objects.filter(retraining=retraining, kind="trained").count() == 1


def test_an_uploaded_champion_cannot_be_retrained(db, staff):
    from predictions.tests.helpers import make_model_version, trained_model

    version = make_model_version(trained=trained_model("iris"), name="iris", version=1)
    with pytest.raises(retraining_services.RetrainingRefused) as caught:
        retraining_services.retraining_start(
            registered_model=version.registered_model, trigger=Retraining.Trigger.MANUAL, reason="x"
        )
    assert caught.value.reason == "not_trained_here"


def test_the_beat_check_run_twice_at_once_starts_one_retraining(champion, alice):
    _policy(champion, threshold=0.9)
    _traffic(alice, n=200, drifted=True, seed=12)

    first = retraining_services.retraining_loop_check()
    second = retraining_services.retraining_loop_check()

    assert len(first["started"]) == 1
    assert second["started"] == []
    assert Retraining.objects.filter(registered_model=champion.registered_model).count() == 1


def test_every_decision_is_sent_to_the_webhooks_that_subscribe_to_it(champion, alice):
    from models_registry.models import Webhook, WebhookDelivery

    Webhook.objects.create(
        registered_model=champion.registered_model,
        url="https://hooks.example.com/loop",
        secret="s3cret",
        events=["retraining_triggered", "dataset_derived", "challenger_trained", "challenger_held_back"],
    )
    _policy(champion)
    _traffic(alice, n=300, drifted=False, seed=13)

    retraining = retraining_services.retraining_start(
        registered_model=champion.registered_model,
        trigger=Retraining.Trigger.MANUAL,
        reason="weak on purpose",
        params={"n_estimators": 1, "max_depth": 1},
    )
    retraining_services.retraining_run(retraining_id=retraining.pk)

    sent = WebhookDelivery.objects.order_by("id")
    assert [d.event for d in sent] == [
        "retraining_triggered",
        "dataset_derived",
        "challenger_trained",
        "challenger_held_back",
    ]
    assert sent[0].payload["data"]["retraining"] == retraining.pk
    assert "figures" in sent[3].payload["data"]
