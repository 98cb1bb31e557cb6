"""The closed loop's API: policy, retrain, retrainings and events, and the Alertmanager receiver."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.factories import make_api_client
from training.models import Retraining, RetrainingEvent
from training.tests.test_retraining import POLICY, _traffic

pytestmark = pytest.mark.django_db
TOKEN = "alert-token-0123456789"


def _url(champion, tail: str) -> str:
    return f"/api/models/{champion.registered_model.name}/{tail}/"


def test_staff_set_the_policy_and_others_may_only_read_it(champion, staff, alice):
    answer = make_api_client(alice).put(_url(champion, "retraining-policy"), {"enabled": True}, format="json")
    assert answer.status_code == 403

    answer = make_api_client(staff).put(_url(champion, "retraining-policy"), POLICY, format="json")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["enabled"] is True
    assert answer.json()["updated_by"] == staff.username
    assert make_api_client(alice).get(_url(champion, "retraining-policy")).json()["threshold"] == 0.85
    assert make_api_client(None).get(_url(champion, "retraining-policy")).status_code in (401, 403)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"threshold": "high"}, "threshold"), ({"metric": "rmse"}, "metric"), ({"margin": 5}, "margin")],
)
def test_a_bad_policy_is_a_400_naming_the_field(champion, staff, body, field):
    answer = make_api_client(staff).put(_url(champion, "retraining-policy"), body, format="json")

    assert answer.status_code == 400
    assert field in {e["field"] for e in answer.json()["errors"]}


def test_staff_start_a_retraining_and_a_second_is_refused_while_it_runs(champion, staff, alice):
    _traffic(alice, n=120, drifted=True, seed=2)
    client = make_api_client(staff)
    client.put(_url(champion, "retraining-policy"), {**POLICY, "min_labels": 50}, format="json")

    assert make_api_client(alice).post(_url(champion, "retrain"), {}, format="json").status_code == 403
    Retraining.objects.all().delete()
    with override_settings(CELERY_TASK_ALWAYS_EAGER=False):
        first = client.post(_url(champion, "retrain"), {"reason": "looks off"}, format="json")
    assert first.status_code == 202, first.json()
    assert first.json()["trigger"] == "manual"
    second = client.post(_url(champion, "retrain"), {}, format="json")
    assert second.status_code == 409
    assert second.json()["code"] == "running"

    events = make_api_client(alice).get(_url(champion, "retraining-events")).json()
    assert [e["kind"] for e in events["results"]][:2] == ["refused", "triggered"]
    listed = make_api_client(alice).get(_url(champion, "retrainings")).json()
    assert listed["results"][0]["id"] == first.json()["id"]


def _alert(name: str = "concept", status: str = "firing") -> dict:
    return {
        "version": "4",
        "status": status,
        "receiver": "mlops",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "LiveAccuracyLow", "model": name},
                "annotations": {"summary": "live accuracy below 0.85"},
            }
        ],
    }


def test_the_alertmanager_receiver_is_off_without_a_token(champion):
    answer = make_api_client(None).post("/api/alerts/alertmanager/", _alert(), format="json")
    assert answer.status_code == 403


@override_settings(ALERTMANAGER_WEBHOOK_TOKEN=TOKEN)
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Token {TOKEN}", f"Bearer {TOKEN}x"])
def test_the_alertmanager_receiver_refuses_a_wrong_token(champion, header):
    client = make_api_client(None)
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    answer = client.post("/api/alerts/alertmanager/", _alert(), format="json")

    assert answer.status_code == 401
    assert not Retraining.objects.exists()


@override_settings(ALERTMANAGER_WEBHOOK_TOKEN=TOKEN, CELERY_TASK_ALWAYS_EAGER=False)
def test_a_firing_alert_naming_a_model_starts_its_retraining_within_the_guardrails(champion, alice, staff):
    _traffic(alice, n=120, drifted=True, seed=4)
    make_api_client(staff).put(
        _url(champion, "retraining-policy"), {**POLICY, "min_labels": 50}, format="json"
    )
    client = make_api_client(None)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    body = _alert()
    body["alerts"] += [_alert("nobody")["alerts"][0], _alert(status="resolved")["alerts"][0]]
    answer = client.post("/api/alerts/alertmanager/", body, format="json")

    assert answer.status_code == 200, answer.json()
    outcomes = [r["outcome"] for r in answer.json()]
    assert outcomes == ["started", "unknown_model", "resolved"]
    retraining = Retraining.objects.get()
    assert retraining.trigger == "alert"
    assert "LiveAccuracyLow" in retraining.reason

    again = client.post("/api/alerts/alertmanager/", _alert(), format="json").json()
    assert again[0]["outcome"] == "refused"
    assert RetrainingEvent.objects.filter(kind="refused").count() == 1


@override_settings(ALERTMANAGER_WEBHOOK_TOKEN=TOKEN)
@pytest.mark.parametrize(
    "body",
    [
        {"alerts": "x"},
        {"alerts": [{"status": "firing"}]},
        {"alerts": [{}] * 1001},
        [],
        {"alerts": [{"labels": 3}]},
    ],
)
def test_a_malformed_alert_body_is_a_400(champion, body):
    client = make_api_client(None)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    answer = client.post("/api/alerts/alertmanager/", body, format="json")

    assert answer.status_code == 400
    assert not Retraining.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"params": {"n_estimators": "many"}}, "params"),
        ({"params": {"bogus": 1}}, "params"),
        ({"params": 3}, "params"),
    ],
)
def test_a_retrain_with_bad_hyperparameters_is_a_400_and_starts_nothing(champion, staff, alice, body, field):
    _traffic(alice, n=120, drifted=True, seed=2)

    answer = make_api_client(staff).post(_url(champion, "retrain"), body, format="json")

    assert answer.status_code == 400, answer.json()
    assert field in {e["field"] for e in answer.json()["errors"]}
    assert not Retraining.objects.exists()
