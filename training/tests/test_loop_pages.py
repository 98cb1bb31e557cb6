"""The closed loop's pages: the model page's retraining panel, a model's retraining page with the policy form,
and the staff actions (retrain now, approve) with their refusals."""

from __future__ import annotations

import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from datasets import services as dataset_services
from models_registry import transition_services
from models_registry.models import ModelVersion, Stage
from models_registry.tests.registry_helpers import make_model, make_version
from tests.factories import make_classification_frame, make_csv_bytes
from training import policy_services
from training.models import Retraining, RetrainingEvent, RetrainingPolicy
from training.tests.helpers import dataset_upload
from training.tests.test_retraining import _traffic

pytestmark = pytest.mark.django_db


def _result(n: int, champion: float, challenger: float, p_value: float) -> dict:
    return {
        "test": "mcnemar",
        "n": n,
        "champion_score": champion,
        "challenger_score": challenger,
        "higher_is_better": True,
        "p_value": p_value,
        "champion_only": 2,
        "challenger_only": 20,
        "improvement": challenger - champion,
    }


FIGURES = {
    "holdout": {
        "original": _result(100, 0.91, 0.9, 1.0),
        "recent": _result(60, 0.62, 0.88, 0.00021),
        "combined": _result(160, 0.8, 0.89, 0.0123),
    },
    "shadow": _result(80, 0.6, 0.85, 0.00042),
}


def _event(registered, retraining, kind: str, message: str) -> RetrainingEvent:
    return RetrainingEvent.objects.create(
        registered_model=registered, retraining=retraining, kind=kind, message=message
    )


def _retraining(registered, champion, challenger, *, decision: str, dataset_version=None) -> Retraining:
    retraining = Retraining.objects.create(
        registered_model=registered,
        trigger=Retraining.Trigger.SCHEDULE,
        reason="live accuracy 0.62 over last 200 is below the threshold 0.85",
        champion=champion,
        challenger=challenger,
        dataset_version=dataset_version,
        status=Retraining.Status.SUCCEEDED,
        step=Retraining.Step.DONE,
        decision=decision,
        figures=FIGURES,
    )
    _event(registered, retraining, "triggered", "Live metric below threshold: live accuracy 0.62")
    return retraining


@pytest.fixture
def churn(staff):
    """v1 in production, v2 (the loop's challenger) in staging and awaiting approval, with its lineage."""
    registered = make_model("churn")
    champion = make_version(registered, 1)
    challenger = make_version(registered, 2)
    transition_services.model_version_transition(
        model_version=champion, to_stage=Stage.PRODUCTION, user=staff
    )
    transition_services.model_version_transition(model_version=challenger, to_stage=Stage.STAGING, user=staff)
    policy_services.retraining_policy_set(
        registered_model=registered,
        data={"enabled": True, "threshold": 0.85, "auto_promote": False, "cooldown_minutes": 60},
        user=staff,
    )
    parent = dataset_upload(make_classification_frame(40), name="churn-data", target="label")
    derived, _ = dataset_services.dataset_version_create(
        name="churn-data",
        file=io.BytesIO(make_csv_bytes(make_classification_frame(70, seed=1))),
        target_column="label",
        created_by=None,
        parent=parent,
        lineage={
            "parent": {"dataset": "churn-data", "version": 1},
            "parent_rows": 40,
            "feedback": {
                "rows": 30,
                "duplicates_dropped": 2,
                "first_id": 11,
                "last_id": 42,
                "predicted_from": "2026-03-01T10:00:00+00:00",
                "predicted_to": "2026-03-02T09:30:00+00:00",
            },
        },
    )
    retraining = _retraining(
        registered,
        champion,
        challenger,
        decision=Retraining.Decision.AWAITING_APPROVAL,
        dataset_version=derived,
    )
    _event(
        registered, retraining, "awaiting_approval", "churn v2 beats churn v1; waiting for a staff member."
    )
    return registered


def _model_url(name: str = "churn") -> str:
    return reverse("registry:model-detail", args=[name])


def _page_url(name: str = "churn") -> str:
    return reverse("training:retraining", args=[name])


# ------------------------------------------------------------------------------
# The model page's panel
# ------------------------------------------------------------------------------


def test_the_model_page_shows_the_policy_the_latest_retraining_its_figures_and_the_events(
    client, alice, churn
):
    client.force_login(alice)

    html = client.get(_model_url()).content.decode()

    panel = html[html.index('id="retraining"') :]
    assert "<strong>On</strong>: retrain when live accuracy &lt; 0.85 over the last 200 labelled" in panel
    assert "promoted after a staff member approves" in panel
    assert 'data-decision="awaiting_approval">Awaiting approval<' in panel
    assert (
        '<tr data-figures="recent"><td>Holdout: recent outcomes</td><td class="num" data-n>60</td>' in panel
    )
    assert '<td class="num">0.6200</td><td class="num">0.8800</td><td class="num">+0.2600</td>' in panel
    assert "data-p-value>0.00021<" in panel
    assert '<tr data-figures="shadow"><td>Shadow predictions</td><td class="num" data-n>80</td>' in panel
    assert 'data-kind="awaiting_approval">Awaiting approval</span>' in panel
    assert "waiting for a staff member." in panel
    assert f'href="{_page_url()}" id="retraining-page-link">All retrainings and events</a>' in panel
    # Buttons are for staff only.
    assert "Retrain now" not in panel
    assert "Approve and promote" not in panel


def test_staff_see_retrain_now_and_approve_on_the_model_page(client, staff, churn):
    client.force_login(staff)

    html = client.get(_model_url()).content.decode()

    retraining = Retraining.objects.get()
    assert f'action="{reverse("training:retraining-retrain", args=["churn"])}"' in html
    assert f'action="{reverse("training:retraining-approve", args=[retraining.pk])}"' in html
    assert "Approve and promote v2</button>" in html


def test_a_held_back_retraining_says_why_and_a_model_without_a_policy_is_off(client, alice, staff, churn):
    retraining = Retraining.objects.get()
    Retraining.objects.filter(pk=retraining.pk).update(decision=Retraining.Decision.HELD_BACK)
    _event(
        churn, retraining, "held_back", "churn v2 held back in staging: not better on its shadow predictions."
    )
    fresh = make_model("fresh")
    client.force_login(alice)

    html = client.get(_model_url()).content.decode()
    assert 'id="retraining-why">churn v2 held back in staging: not better on its shadow predictions.<' in html

    make_version(fresh, 1)
    html = client.get(_model_url("fresh")).content.decode()
    assert "<strong>Off</strong>: nothing retrains this model automatically (no policy set yet)" in html
    assert "This model has not been retrained yet." in html


def test_the_model_page_needs_the_same_queries_however_many_retrainings_and_events(
    client, staff, churn, django_assert_num_queries
):
    client.force_login(staff)
    client.get(_model_url())
    with CaptureQueriesContext(connection) as few:
        client.get(_model_url())
    expected = len(few)
    registered = churn
    champion, challenger = ModelVersion.objects.get(version=1), ModelVersion.objects.get(version=2)
    Retraining.objects.update(decision=Retraining.Decision.HELD_BACK)
    for _ in range(3):
        older = _retraining(registered, champion, challenger, decision=Retraining.Decision.HELD_BACK)
        for number in range(8):
            _event(registered, None, "refused", f"Refused {number}.")
        _event(registered, older, "held_back", "held back")
    newest = _retraining(registered, champion, challenger, decision=Retraining.Decision.AWAITING_APPROVAL)
    _event(registered, newest, "awaiting_approval", "waiting")

    with django_assert_num_queries(expected):
        response = client.get(_model_url())

    assert len(response.context["retraining_panel"]["events"]) == 10


# ------------------------------------------------------------------------------
# The retraining page
# ------------------------------------------------------------------------------


def test_everyone_signed_in_sees_the_policy_retrainings_lineage_figures_and_events(client, alice, churn):
    client.force_login(alice)

    response = client.get(_page_url())

    assert response.status_code == 200
    html = response.content.decode()
    retraining = Retraining.objects.get()
    assert "<strong>On</strong>: retrain when live accuracy &lt; 0.85" in html
    assert '<dl class="facts" id="policy-facts">' in html
    assert ">Cooldown (minutes)</dt><dd>60</dd>" in html
    assert 'id="policy-form"' not in html
    row = html[html.index(f'id="retraining-{retraining.pk}"') :]
    assert "Live metric below threshold" in row
    assert 'data-decision="awaiting_approval"' in row
    assert "data-challenger>v2</a> (challenger)" in row
    assert "churn-data v2 · 70 rows" in row
    assert (
        "from v1 (40 rows) + 30 outcomes, ids 11 to 42, predicted 2026-03-01 10:00 to 2026-03-02 09:30; "
        "2 repeats dropped" in row
    )
    combined = row[row.index('data-figures="combined"') :]
    assert "data-p-value>0.0123<" in combined
    assert html.count("<tr data-event=") == 2
    assert "Approve and promote" not in html


def test_the_event_log_is_paginated(client, alice, churn):
    for number in range(60):
        _event(churn, None, "refused", f"Refused number {number}.")
    client.force_login(alice)

    first = client.get(_page_url()).content.decode()
    second = client.get(_page_url() + "?page=2").content.decode()

    assert first.count("<tr data-event=") == 50
    assert "Refused number 59." in first
    assert "Page 1 of 2 (62 events)" in first
    assert second.count("<tr data-event=") == 12
    assert "churn v2 beats churn v1" in second


def test_the_retraining_page_needs_the_same_queries_however_many_retrainings(
    client, staff, churn, django_assert_num_queries
):
    client.force_login(staff)
    client.get(_page_url())
    with CaptureQueriesContext(connection) as few:
        client.get(_page_url())
    expected = len(few)
    champion, challenger = ModelVersion.objects.get(version=1), ModelVersion.objects.get(version=2)
    Retraining.objects.update(decision=Retraining.Decision.HELD_BACK)
    for _ in range(4):
        _retraining(churn, champion, challenger, decision=Retraining.Decision.HELD_BACK)

    with django_assert_num_queries(expected):
        response = client.get(_page_url())

    assert len(response.context["retrainings"]) == 5


def test_anonymous_visitors_are_sent_to_sign_in(client, churn):
    response = client.get(_page_url())

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


# ------------------------------------------------------------------------------
# The policy form
# ------------------------------------------------------------------------------


def _policy_post(**changes) -> dict:
    data = {
        "enabled": "on",
        "metric": "f1_macro",
        "threshold": "0.8",
        "window": "7d",
        "last_n": "300",
        "min_labels": "50",
        "cooldown_minutes": "120",
        "max_per_day": "2",
        "feedback_rows": "5000",
        "recent_weight": "2",
        "recent_holdout_share": "0.25",
        "margin": "0.02",
        "alpha": "0.01",
        "shadow_min_labels": "40",
        "rollback_labels": "150",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def test_staff_save_the_policy_from_the_form(client, staff, churn):
    client.force_login(staff)
    form = client.get(_page_url()).content.decode()
    assert 'id="policy-form"' in form
    assert 'value="0.85"' in form
    assert "Default: 360." in form
    assert "Default: Last N labelled." in form

    response = client.post(reverse("training:retraining-policy", args=["churn"]), _policy_post())

    assert response.status_code == 302
    assert response.url == _page_url()
    policy = RetrainingPolicy.objects.get(registered_model=churn)
    assert (policy.metric, policy.threshold, policy.window, policy.last_n, policy.auto_promote) == (
        "f1_macro",
        0.8,
        "7d",
        300,
        False,  # an unticked checkbox
    )
    assert (policy.recent_weight, policy.alpha, policy.rollback_labels, policy.updated_by) == (
        2.0,
        0.01,
        150,
        staff,
    )
    page = client.get(response.url).content.decode()
    assert "Retraining policy of churn saved." in page
    assert "retrain when live macro F1 &lt; 0.8 over the last 7 days" in page


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("threshold", "x", "&#x27;threshold&#x27; must be a number; got &#x27;x&#x27;."),
        ("metric", "rmse", "Choose a live metric of classification: accuracy, f1_macro."),
        ("margin", "5", "&#x27;margin&#x27; must be from 0 to 0.99; got 5."),
    ],
)
def test_a_bad_policy_value_is_shown_on_its_field_and_nothing_is_saved(
    client, staff, churn, field, value, message
):
    before = RetrainingPolicy.objects.values().get(registered_model=churn)
    client.force_login(staff)

    response = client.post(
        reverse("training:retraining-policy", args=["churn"]), _policy_post(**{field: value})
    )

    assert response.status_code == 400
    html = response.content.decode()
    errors = html[html.index(f'data-errors-for="{field}"') :]
    assert errors[: errors.index("</ul>")].endswith(f"<li>{message}</li>")
    assert html.count("data-errors-for=") == 1
    assert RetrainingPolicy.objects.values().get(registered_model=churn) == before


# ------------------------------------------------------------------------------
# Staff only
# ------------------------------------------------------------------------------


def test_non_staff_posts_are_forbidden_and_change_nothing(client, alice, churn):
    retraining = Retraining.objects.get()
    before = RetrainingPolicy.objects.values().get(registered_model=churn)
    client.force_login(alice)

    posts = [
        (reverse("training:retraining-policy", args=["churn"]), _policy_post()),
        (reverse("training:retraining-retrain", args=["churn"]), {"next": "model"}),
        (reverse("training:retraining-approve", args=[retraining.pk]), {"next": "model"}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url

    assert RetrainingPolicy.objects.values().get(registered_model=churn) == before
    assert Retraining.objects.get().decision == Retraining.Decision.AWAITING_APPROVAL
    assert Retraining.objects.count() == 1


def test_staff_approve_a_challenger_awaiting_approval_from_the_model_page(client, staff, churn):
    retraining = Retraining.objects.get()
    client.force_login(staff)

    url = reverse("training:retraining-approve", args=[retraining.pk])
    asked = client.post(url, {"next": "model"})
    # The button opens a confirmation page: what serves now and after, the gate; nothing changed yet.
    assert asked.status_code == 200
    page = asked.content.decode()
    assert "Promote v2 to production" in page
    assert '<input type="hidden" name="next" value="model">' in page
    assert ModelVersion.objects.get(version=2).stage != Stage.PRODUCTION

    response = client.post(url, {"next": "model", "confirm": "on"})

    assert response.status_code == 302
    assert response.url == _model_url() + "#retraining"
    retraining.refresh_from_db()
    assert retraining.decision == Retraining.Decision.PROMOTED
    assert ModelVersion.objects.get(version=2).stage == Stage.PRODUCTION
    assert ModelVersion.objects.get(version=1).stage == Stage.ARCHIVED
    html = client.get(response.url).content.decode()
    assert f"churn v2 promoted to production (retraining {retraining.pk})." in html
    assert 'data-kind="promoted">Promoted</span>' in html

    again = client.post(reverse("training:retraining-approve", args=[retraining.pk]))
    assert again.url == _page_url()
    assert (
        f"Retraining {retraining.pk} is not awaiting approval (promoted)."
        in client.get(again.url).content.decode()
    )


# ------------------------------------------------------------------------------
# Retrain now, on a model trained here
# ------------------------------------------------------------------------------


def test_retrain_now_shows_a_guardrails_refusal_then_runs_and_shows_the_retraining(
    client, staff, alice, champion, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    retrain = reverse("training:retraining-retrain", args=["concept"])

    refused = client.post(retrain, {"next": "model"})

    assert refused.url == _model_url("concept") + "#retraining"
    assert not Retraining.objects.exists()
    html = client.get(refused.url).content.decode()
    message = "Model &#x27;concept&#x27; has 0 labelled predictions; the policy needs 100."
    assert f'<li class="message error">{message}</li>' in html
    assert 'data-kind="refused">Refused</span>' in html

    _traffic(alice, n=160, drifted=True, seed=31)
    with django_capture_on_commit_callbacks(execute=True):
        started = client.post(retrain, {"next": "retraining", "reason": "labels look off"})

    retraining = Retraining.objects.get()
    assert retraining.status == Retraining.Status.SUCCEEDED, retraining.error_message
    assert (retraining.trigger, retraining.reason, retraining.requested_by) == (
        "manual",
        "labels look off",
        staff,
    )
    assert started.url == _page_url("concept")
    page = client.get(started.url).content.decode()
    assert f"Retraining {retraining.pk} of concept started." in page
    row = page[page.index(f'id="retraining-{retraining.pk}"') :]
    assert f"data-challenger>v{retraining.challenger.version}</a>" in row
    assert f"+ {retraining.dataset_version.lineage['feedback']['rows']} outcomes" in row
    for key in ("original", "recent", "combined"):
        assert f'data-figures="{key}"' in row
    for kind in ("triggered", "dataset_derived", "trained"):
        assert f'data-kind="{kind}"' in page
