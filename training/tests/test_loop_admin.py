"""The closed loop in Django admin: policies saved through the policy service, read-only retrainings and
events with an approve action, and "Retrain now" on registered models."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from models_registry import transition_services
from models_registry.models import ModelVersion, Stage
from models_registry.tests.registry_helpers import make_model, make_version
from tests.admin_helpers import messages_of, run_action
from training.models import Retraining, RetrainingEvent, RetrainingPolicy
from training.tests.test_retraining import _traffic

pytestmark = pytest.mark.django_db

POLICY_FORM = {
    "metric": "accuracy",
    "threshold": "0.8",
    "window": "last",
    "auto_promote": "on",
    "min_labels": "50",
    "last_n": "200",
    "cooldown_minutes": "30",
    "margin": "0.01",
    "alpha": "0.05",
    "max_per_day": "3",
    "recent_holdout_share": "0.3",
    "recent_weight": "1",
    "feedback_rows": "10000",
    "shadow_min_labels": "100",
    "rollback_labels": "200",
}


@pytest.fixture
def churn(staff):
    """v1 in production, v2 in staging: a challenger the loop could have trained."""
    registered = make_model("churn")
    champion = make_version(registered, 1)
    challenger = make_version(registered, 2)
    transition_services.model_version_transition(
        model_version=champion, to_stage=Stage.PRODUCTION, user=staff
    )
    transition_services.model_version_transition(model_version=challenger, to_stage=Stage.STAGING, user=staff)
    return registered


def _retraining(registered, *, decision: str) -> Retraining:
    return Retraining.objects.create(
        registered_model=registered,
        trigger=Retraining.Trigger.SCHEDULE,
        reason="live accuracy below the threshold",
        champion=registered.versions.get(version=1),
        challenger=registered.versions.get(version=2),
        status=Retraining.Status.SUCCEEDED,
        step=Retraining.Step.DONE,
        decision=decision,
    )


def test_a_policy_added_and_changed_in_admin_goes_through_the_service(client, admin_user, churn):
    client.force_login(admin_user)

    added = client.post(
        reverse("admin:training_retrainingpolicy_add"),
        {"registered_model": churn.pk, "enabled": "on", **POLICY_FORM},
    )

    assert added.status_code == 302, added.context["adminform"].form.errors
    policy = RetrainingPolicy.objects.get(registered_model=churn)
    assert (policy.enabled, policy.threshold, policy.cooldown_minutes, policy.updated_by) == (
        True,
        0.8,
        30,
        admin_user,
    )

    changed = client.post(
        reverse("admin:training_retrainingpolicy_change", args=[policy.pk]),
        {**POLICY_FORM, "metric": "f1_macro", "threshold": "0.7"},
    )

    assert changed.status_code == 302, changed.context["adminform"].form.errors
    policy.refresh_from_db()
    assert (policy.enabled, policy.metric, policy.threshold) == (False, "f1_macro", 0.7)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("threshold", "x", "Enter a number."),
        ("threshold", "1.5", "'threshold' must be from 0 to 1; got 1.5."),
        ("metric", "rmse", "Choose a live metric of classification: accuracy, f1_macro."),
        ("margin", "5", "'margin' must be from 0 to 0.99; got 5."),
    ],
)
def test_the_policy_admin_shows_the_services_refusal_on_the_field_and_saves_nothing(
    client, admin_user, churn, field, value, message
):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:training_retrainingpolicy_add"),
        {"registered_model": churn.pk, "enabled": "on", **POLICY_FORM, field: value},
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert not RetrainingPolicy.objects.exists()


def test_the_approve_action_promotes_a_challenger_awaiting_approval_and_refuses_others(
    client, admin_user, churn
):
    awaiting = _retraining(churn, decision=Retraining.Decision.AWAITING_APPROVAL)
    held_back = Retraining.objects.create(
        registered_model=churn,
        trigger=Retraining.Trigger.MANUAL,
        champion=churn.versions.get(version=1),
        status=Retraining.Status.SUCCEEDED,
        decision=Retraining.Decision.HELD_BACK,
    )
    client.force_login(admin_user)

    # First a confirmation page: what serves production now and after, the gate, and what is refused.
    confirm = run_action(client, "training_retraining", "approve_and_promote", [awaiting.pk, held_back.pk])
    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "Approve and promote: confirm" in page
    rows = re.findall(r"<tr>(.*?)</tr>", page.split('id="production-changes"')[1], re.S)
    assert re.findall(r"<td>(.*?)</td>", rows[1])[2:] == ["v1", "v2", "passes"]
    assert f"Retraining {held_back.pk} is not awaiting approval (held back)." in rows[2]
    assert 'value="Yes, approve and promote"' in page
    assert Retraining.objects.get(pk=awaiting.pk).decision == Retraining.Decision.AWAITING_APPROVAL
    assert ModelVersion.objects.get(registered_model=churn, version=1).stage == Stage.PRODUCTION

    response = run_action(
        client, "training_retraining", "approve_and_promote", [awaiting.pk, held_back.pk], apply="1"
    )

    assert messages_of(response) == [
        f"Retraining {awaiting.pk}: churn v2 promoted to production.",
        f"Retraining {held_back.pk} is not awaiting approval (held back).",
    ]
    awaiting.refresh_from_db()
    assert awaiting.decision == Retraining.Decision.PROMOTED
    assert ModelVersion.objects.get(registered_model=churn, version=2).stage == Stage.PRODUCTION
    assert RetrainingEvent.objects.get(kind="promoted").retraining == awaiting


def test_retrainings_and_events_are_read_only_and_listed(client, admin_user, churn):
    retraining = _retraining(churn, decision=Retraining.Decision.HELD_BACK)
    RetrainingEvent.objects.create(
        registered_model=churn, retraining=retraining, kind="held_back", message="no"
    )
    client.force_login(admin_user)

    assert client.get(reverse("admin:training_retraining_changelist")).status_code == 200
    listed = client.get(reverse("admin:training_retrainingevent_changelist") + "?kind__exact=held_back")
    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == list(RetrainingEvent.objects.all())
    detail = client.get(reverse("admin:training_retraining_change", args=[retraining.pk])).content.decode()
    assert 'name="_save"' not in detail
    assert client.get(reverse("admin:training_retraining_add")).status_code == 403
    assert client.get(reverse("admin:training_retrainingevent_add")).status_code == 403


def test_retrain_now_on_registered_models_starts_one_each_and_reports_refusals(
    client, admin_user, alice, champion, django_capture_on_commit_callbacks
):
    uploaded = make_model("uploaded")
    transition_services.model_version_transition(
        model_version=make_version(uploaded, 1), to_stage=Stage.PRODUCTION, user=admin_user
    )
    _traffic(alice, n=120, drifted=True, seed=41)
    client.force_login(admin_user)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = run_action(
            client,
            "models_registry_registeredmodel",
            "retrain_now",
            [champion.registered_model_id, uploaded.pk],
        )

    retraining = Retraining.objects.get()
    assert (retraining.registered_model, retraining.trigger, retraining.requested_by) == (
        champion.registered_model,
        "manual",
        admin_user,
    )
    # One retraining sent to the worker; the metrics' on-commit counters aside.
    assert len([callback for callback in queued if callback.__module__ != "monitoring.prometheus"]) == 1
    url = reverse("training:retraining", args=["concept"]) + f"#retraining-{retraining.pk}"
    assert messages_of(response) == [
        f'concept: <a href="{url}">retraining {retraining.pk}</a> started.',
        "uploaded: uploaded v1 was uploaded, not trained here: the loop has no training data to extend.",
    ]
