"""After the holdout: the challenger's shadow evidence decides promotion, a staff click when the policy says
so, holding back, and the automatic rollback of a new champion whose first outcomes fall short."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from models_registry.models import ChallengerMode, ModelVersion, RegisteredModel, Stage
from predictions import shadow
from predictions.models import ShadowPrediction
from tests.factories import make_api_client
from training import decision_services, holdout_services, retraining_services
from training.models import Retraining, RetrainingEvent
from training.tests.test_retraining import _policy, _traffic

pytestmark = pytest.mark.django_db


def _shadowing(champion, alice, capture, **policy) -> Retraining:
    """Drift, a retraining, and a challenger in staging and in shadow."""
    _policy(
        champion, last_n=300, recent_holdout_share=0.5, shadow_min_labels=60, rollback_labels=60, **policy
    )
    _traffic(alice, n=400, drifted=True, seed=21)
    with capture(execute=True):
        (retraining_id,) = retraining_services.retraining_policies_check()
    retraining = Retraining.objects.get(pk=retraining_id)
    assert retraining.decision == Retraining.Decision.SHADOWING, retraining.figures
    return retraining


def _shadow_traffic(alice, capture, *, n: int, drifted: bool, seed: int) -> None:
    """Production traffic with outcomes, then the sweep that has the challenger score it on the worker."""
    _traffic(alice, n=n, drifted=drifted, seed=seed)
    with capture(execute=True):
        shadow.shadow_batches_create(now=timezone.now() + timedelta(seconds=shadow.SETTLE_SECONDS))


def test_a_challenger_better_on_its_shadow_rows_is_promoted_and_the_shadow_ends(
    champion, alice, django_capture_on_commit_callbacks
):
    retraining = _shadowing(champion, alice, django_capture_on_commit_callbacks)
    assert decision_services.retrainings_decide() == []  # no shadow outcomes yet

    _shadow_traffic(alice, django_capture_on_commit_callbacks, n=80, drifted=True, seed=22)
    assert ShadowPrediction.objects.filter(model_version=retraining.challenger).count() == 80
    with django_capture_on_commit_callbacks(execute=True):
        assert decision_services.retrainings_decide() == [retraining.pk]

    retraining.refresh_from_db()
    assert retraining.decision == Retraining.Decision.PROMOTED
    shadow_figures = retraining.figures["shadow"]
    assert shadow_figures["n"] == 80
    assert shadow_figures["challenger_score"] > shadow_figures["champion_score"]
    assert shadow_figures["p_value"] < 0.05
    assert retraining.figures["predecessor_live"]["value"] < 0.85
    assert ModelVersion.objects.get(pk=retraining.challenger_id).stage == Stage.PRODUCTION
    assert ModelVersion.objects.get(pk=champion.pk).stage == Stage.ARCHIVED
    assert RegisteredModel.objects.get(pk=champion.registered_model_id).challenger_mode == ChallengerMode.OFF
    assert RetrainingEvent.objects.filter(retraining=retraining, kind="promoted").count() == 1
    assert decision_services.retrainings_decide() == []  # decided once


def test_after_a_promotion_the_next_retraining_starts_from_the_original_rows_and_their_holdout(
    champion, alice, django_capture_on_commit_callbacks
):
    first = _shadowing(champion, alice, django_capture_on_commit_callbacks)
    _shadow_traffic(alice, django_capture_on_commit_callbacks, n=80, drifted=True, seed=22)
    with django_capture_on_commit_callbacks(execute=True):
        decision_services.retrainings_decide()
    first.refresh_from_db()
    assert first.decision == Retraining.Decision.PROMOTED
    promoted = first.challenger
    assert promoted.dataset_version.row_count > 500  # the original rows and the first outcomes
    _traffic(alice, n=120, drifted=True, seed=24)

    second = retraining_services.retraining_start(
        registered_model=champion.registered_model, trigger=Retraining.Trigger.MANUAL, reason="again"
    )
    retraining_services.retraining_run(retraining_id=second.pk)

    second.refresh_from_db()
    assert second.champion_id == promoted.pk
    assert second.status == Retraining.Status.SUCCEEDED, second.error_message
    # The promoted champion's outcomes come back as feedback (the newest `feedback_rows`), not as part of
    # its data; and the original holdout is the one the whole chain kept out, not a new split of rows the
    # promoted champion learned from.
    plan, first_plan = second.figures["plan"], first.figures["plan"]
    assert plan["original_rows"] == 500
    assert (plan["original_seed"], plan["original_test_size"]) == (
        first_plan["original_seed"],
        first_plan["original_test_size"],
    )
    assert second.dataset_version.lineage["parent_rows"] == 500
    assert second.dataset_version.row_count == 500 + second.dataset_version.lineage["feedback"]["rows"]
    original = holdout_services.holdout_parts(retraining=second)["original"]
    assert len(original) == second.figures["holdout"]["original"]["n"] == 100


def test_a_challenger_no_better_on_its_shadow_rows_is_held_back(
    champion, alice, django_capture_on_commit_callbacks
):
    retraining = _shadowing(champion, alice, django_capture_on_commit_callbacks)
    # The concept swings back: the champion is right again and the challenger is not.
    _shadow_traffic(alice, django_capture_on_commit_callbacks, n=80, drifted=False, seed=23)

    decision_services.retrainings_decide()

    retraining.refresh_from_db()
    assert retraining.decision == Retraining.Decision.HELD_BACK
    assert ModelVersion.objects.get(pk=champion.pk).stage == Stage.PRODUCTION
    assert ModelVersion.objects.get(pk=retraining.challenger_id).stage == Stage.STAGING
    assert RegisteredModel.objects.get(pk=champion.registered_model_id).challenger_mode == ChallengerMode.OFF
    held = RetrainingEvent.objects.get(retraining=retraining, kind="held_back")
    assert "shadow" in held.message


def test_without_automatic_promotion_a_staff_click_promotes(
    champion, alice, staff, django_capture_on_commit_callbacks
):
    retraining = _shadowing(champion, alice, django_capture_on_commit_callbacks, auto_promote=False)
    _shadow_traffic(alice, django_capture_on_commit_callbacks, n=80, drifted=True, seed=24)
    decision_services.retrainings_decide()
    retraining.refresh_from_db()
    assert retraining.decision == Retraining.Decision.AWAITING_APPROVAL
    assert ModelVersion.objects.get(pk=champion.pk).stage == Stage.PRODUCTION

    url = f"/api/retrainings/{retraining.pk}/approve/"
    assert make_api_client(alice).post(url).status_code == 403
    answer = make_api_client(staff).post(url)

    assert answer.status_code == 200, answer.json()
    assert answer.json()["decision"] == "promoted"
    assert ModelVersion.objects.get(pk=retraining.challenger_id).stage == Stage.PRODUCTION
    again = make_api_client(staff).post(url)
    assert again.status_code == 400


def test_a_new_champion_worse_than_its_predecessor_on_its_first_outcomes_is_rolled_back(
    champion, alice, django_capture_on_commit_callbacks
):
    retraining = _shadowing(champion, alice, django_capture_on_commit_callbacks)
    _shadow_traffic(alice, django_capture_on_commit_callbacks, n=80, drifted=True, seed=25)
    with django_capture_on_commit_callbacks(execute=True):
        decision_services.retrainings_decide()
    retraining.refresh_from_db()
    assert retraining.decision == Retraining.Decision.PROMOTED
    assert decision_services.champions_watch() == []  # not enough outcomes yet

    # Its first outcomes are noise: far below what the predecessor scored before the switch.
    _traffic(alice, n=60, drifted=False, random=True, seed=26)
    with django_capture_on_commit_callbacks(execute=True):
        assert decision_services.champions_watch() == [retraining.pk]

    retraining.refresh_from_db()
    assert retraining.decision == Retraining.Decision.ROLLED_BACK
    assert ModelVersion.objects.get(pk=champion.pk).stage == Stage.PRODUCTION
    assert ModelVersion.objects.get(pk=retraining.challenger_id).stage == Stage.ARCHIVED
    rolled = RetrainingEvent.objects.get(retraining=retraining, kind="rolled_back")
    assert "first 60 outcomes" in rolled.message
    assert decision_services.champions_watch() == []


def test_a_new_champion_as_good_as_its_predecessor_passes_the_watch(
    champion, alice, django_capture_on_commit_callbacks
):
    retraining = _shadowing(champion, alice, django_capture_on_commit_callbacks)
    _shadow_traffic(alice, django_capture_on_commit_callbacks, n=80, drifted=True, seed=27)
    with django_capture_on_commit_callbacks(execute=True):
        decision_services.retrainings_decide()

    _traffic(alice, n=60, drifted=True, seed=28)
    assert decision_services.champions_watch() == []

    retraining.refresh_from_db()
    assert retraining.decision == Retraining.Decision.PROMOTED
    assert retraining.figures["watch"]["n"] == 60
    assert ModelVersion.objects.get(pk=retraining.challenger_id).stage == Stage.PRODUCTION


def test_a_watch_rollback_the_quality_gate_refuses_is_recorded_and_leaves_the_champion(
    champion, alice, django_capture_on_commit_callbacks
):
    from models_registry import services as registry_services

    retraining = _shadowing(champion, alice, django_capture_on_commit_callbacks)
    _shadow_traffic(alice, django_capture_on_commit_callbacks, n=80, drifted=True, seed=25)
    with django_capture_on_commit_callbacks(execute=True):
        decision_services.retrainings_decide()
    _traffic(alice, n=60, drifted=False, random=True, seed=26)
    # The thresholds rose after the predecessor served: it no longer passes the gate.
    registry_services.registered_model_thresholds_set(
        registered_model=champion.registered_model, min_metrics={"accuracy": 0.9999}
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert decision_services.champions_watch() == []

    retraining.refresh_from_db()
    assert retraining.decision == Retraining.Decision.PROMOTED
    assert retraining.figures["watch"]["rollback_refused"]
    assert ModelVersion.objects.get(pk=retraining.challenger_id).stage == Stage.PRODUCTION
    refused = RetrainingEvent.objects.get(retraining=retraining, kind="refused")
    assert "misses the quality gate" in refused.message
    assert decision_services.champions_watch() == []
