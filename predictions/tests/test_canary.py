"""Tests of the canary: a share of production traffic answered by the challenger, sticky by key or user, set
through challenger_mode_set, the API (GET/PUT /api/models/{name}/challenger/), the model page and the
admin."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from rest_framework.test import APIClient

from mlops_site.tests.helpers import error_body
from models_registry import challenger_services
from models_registry.models import RegisteredModel
from predictions import model_cache, routing, services
from predictions.models import Prediction, PredictionHourly, PredictionKey, PredictionRequest
from predictions.tests.helpers import make_model_version, trained_model

CANCER = trained_model("cancer")
CHALLENGER = trained_model("cancer", algorithm="logistic_regression")
ROWS = CANCER.sample_rows
PREDICT_URL = "/api/models/cancer/predict/"
CHALLENGER_URL = "/api/models/cancer/challenger/"


@pytest.fixture
def cancer_v2(cancer_v1):
    """Version 2 of 'cancer' in staging: the challenger of v1."""
    return make_model_version(trained=CHALLENGER, name="cancer", version=2, stage="staging")


def canary(percent: int) -> RegisteredModel:
    registered = RegisteredModel.objects.get(name="cancer")
    return challenger_services.challenger_mode_set(
        registered_model=registered, mode="canary", canary_percent=percent, user=None
    )


def predict(user, *, count: int = 1, **options):
    rows = (ROWS * count)[:count]
    return services.prediction_make(
        registered_model_name="cancer", rows=rows, user=user, channel="api", **options
    )


def versions(outcome) -> list[int]:
    return [p.model_version.version for p in outcome.predictions]


def challenger_bound(key: str) -> bool:
    return routing.canary_bucket(model_name="cancer", routing_key=key)


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def put(client, body):
    return client.put(CHALLENGER_URL, json.dumps(body), content_type="application/json")


# ------------------------------------------------------------------------------
# Routing
# ------------------------------------------------------------------------------
def test_the_bucket_of_a_key_is_stable_and_raising_the_percent_only_moves_more_keys_over():
    keys = [f"key:order-{i}" for i in range(2000)]
    buckets = [routing.canary_bucket(model_name="cancer", routing_key=k) for k in keys]

    assert buckets == [routing.canary_bucket(model_name="cancer", routing_key=k) for k in keys]
    assert set(buckets) == set(range(100))
    at_10 = {k for k, b in zip(keys, buckets, strict=True) if b < 10}
    at_50 = {k for k, b in zip(keys, buckets, strict=True) if b < 50}
    assert at_10 < at_50
    assert 0.4 < len(at_50) / len(keys) < 0.6
    # Another model's canary draws its own share of the same keys.
    assert buckets != [routing.canary_bucket(model_name="churn", routing_key=k) for k in keys]


def test_rows_with_keys_go_to_the_challenger_by_their_key_s_bucket(alice, cancer_v2):
    canary(50)
    keys = [f"order-{i}" for i in range(40)]

    outcome = predict(alice, count=40, keys=keys)

    expected = [2 if challenger_bound(f"key:{k}") < 50 else 1 for k in keys]
    assert versions(outcome) == expected
    assert {1, 2} == set(expected)
    assert [p.row_index for p in outcome.predictions] == list(range(40))
    assert [p.key.key for p in outcome.predictions] == keys


def test_every_request_of_a_user_goes_the_same_way(alice, bob, charlie, cancer_v2):
    canary(50)

    for user in (alice, bob, charlie):
        expected = 2 if challenger_bound(f"user:{user.pk}") < 50 else 1
        assert {v for _ in range(4) for v in versions(predict(user, count=2))} == {expected}


def test_without_a_key_or_a_user_the_request_id_decides(cancer_v2):
    canary(50)
    ids = [f"req-{i}" for i in range(30)]

    routed = [versions(predict(None, count=2, request_id=i)) for i in ids]

    assert routed == [[2, 2] if challenger_bound(f"request:{i}") < 50 else [1, 1] for i in ids]


def test_at_100_percent_the_challenger_answers_everything(alice, bob, cancer_v2):
    canary(100)

    assert versions(predict(alice, count=3)) + versions(predict(bob, count=2)) == [2] * 5
    assert set(PredictionRequest.objects.values_list("stage", flat=True)) == {"production"}


def test_setting_the_share_to_0_or_the_mode_off_rolls_back_at_the_next_request(alice, cancer_v2):
    canary(100)
    assert versions(predict(alice)) == [2]

    canary(0)
    assert versions(predict(alice)) == [1]

    canary(100)
    assert versions(predict(alice)) == [2]
    challenger_services.challenger_mode_set(
        registered_model=RegisteredModel.objects.get(name="cancer"), mode="off", user=None
    )
    assert versions(predict(alice)) == [1]


def test_another_process_s_change_is_seen_once_the_resolution_expires(alice, cancer_v2, monkeypatch):
    canary(100)
    assert versions(predict(alice)) == [2]
    # As another process would: the row changes without this process's signal.
    RegisteredModel.objects.filter(name="cancer").update(canary_percent=0)
    assert versions(predict(alice)) == [2]

    monkeypatch.setattr(model_cache.resolutions, "clock", lambda: 1e12)

    assert versions(predict(alice)) == [1]


@pytest.mark.parametrize(("options", "version"), [({"version": 1}, 1), ({"stage": "staging"}, 2)])
def test_a_pinned_version_or_the_staging_stage_is_never_rerouted(alice, cancer_v2, options, version):
    canary(100)

    outcome = predict(alice, count=3, **options)

    assert versions(outcome) == [version] * 3
    assert not outcome.challenger_rows


def test_shadow_mode_and_mode_off_leave_production_traffic_to_the_champion(alice, cancer_v2):
    registered = RegisteredModel.objects.get(name="cancer")
    registered.canary_percent = 100
    registered.save()
    for mode in ("off", "shadow"):
        challenger_services.challenger_mode_set(registered_model=registered, mode=mode, user=None)
        assert versions(predict(alice, count=2)) == [1, 1]


def test_a_split_request_stores_two_requests_in_row_order_with_their_counts(alice, cancer_v2):
    canary(50)
    keys = [f"order-{i}" for i in range(20)]

    outcome = predict(alice, count=20, keys=keys, request_id="split-1")

    by_challenger = [challenger_bound(f"key:{k}") < 50 for k in keys]
    assert outcome.split
    assert [outcome.served_by(p) for p in outcome.predictions] == [
        "challenger" if c else "champion" for c in by_challenger
    ]
    requests = PredictionRequest.objects.filter(request_id="split-1").order_by("model_version__version")
    assert [(r.model_version.version, r.n_rows) for r in requests] == [
        (1, by_challenger.count(False)),
        (2, by_challenger.count(True)),
    ]
    assert {p.request_id for p in outcome.predictions} == {r.pk for r in requests}
    assert dict(PredictionHourly.objects.values_list("model_version__version", "n")) == {
        1: by_challenger.count(False),
        2: by_challenger.count(True),
    }
    assert PredictionKey.objects.count() == 20
    assert outcome.champion_version.version == 1


def test_a_challenger_whose_model_file_is_missing_leaves_its_rows_to_the_champion(alice, cancer_v2):
    from mlops_site import storage

    canary(100)
    storage.delete(cancer_v2.skops_key)
    storage.delete(cancer_v2.onnx_key)

    outcome = predict(alice, count=2)

    assert versions(outcome) == [1, 1]
    assert not outcome.challenger_rows


def test_rows_the_challenger_s_own_schema_refuses_are_answered_by_the_champion(alice, cancer_v2):
    from models_registry.models import ModelVersion

    # The challenger reads a feature the production schema (which the rows follow) does not have.
    schema = [*CHALLENGER.feature_schema, {"name": "extra", "kind": "numeric"}]
    ModelVersion.objects.filter(pk=cancer_v2.pk).update(feature_schema=schema)
    model_cache.resolutions.clear()
    canary(100)
    rows = [dict(ROWS[0]), {**ROWS[1], "extra": 1.5}]

    outcome = services.prediction_make(
        registered_model_name="cancer", rows=rows[:1], user=alice, channel="api"
    )

    assert versions(outcome) == [1]
    assert not outcome.challenger_rows


def test_the_canary_bucket_of_a_user_is_kept_when_a_different_share_still_covers_it(alice, cancer_v2):
    bucket = challenger_bound(f"user:{alice.pk}")
    canary(bucket + 1)
    assert versions(predict(alice)) == [2]
    canary(min(100, bucket + 30))
    assert versions(predict(alice)) == [2]
    canary(bucket)
    assert versions(predict(alice)) == [1]


# ------------------------------------------------------------------------------
# The predict API
# ------------------------------------------------------------------------------
def test_the_predict_api_names_the_version_that_answered_and_that_it_was_the_challenger(alice, cancer_v2):
    canary(100)

    body = (
        api(alice).post(PREDICT_URL, json.dumps({"rows": ROWS[:2]}), content_type="application/json").json()
    )

    assert (body["model_version"], body["stage"], body["served_by"]) == (2, "staging", "challenger")
    assert [(r["model_version"], r["served_by"]) for r in body["predictions"]] == [(2, "challenger")] * 2


def test_a_split_answer_says_so_and_names_each_row_s_version(alice, cancer_v2):
    canary(50)
    keys = [f"order-{i}" for i in range(20)]

    response = api(alice).post(
        PREDICT_URL, json.dumps({"rows": (ROWS * 7)[:20], "keys": keys}), content_type="application/json"
    )

    body = response.json()
    assert response.status_code == 200, body
    assert (body["model_version"], body["stage"], body["served_by"]) == (1, "production", "split")
    expected = [(2, "challenger") if challenger_bound(f"key:{k}") < 50 else (1, "champion") for k in keys]
    assert [(r["model_version"], r["served_by"]) for r in body["predictions"]] == expected
    assert [r["key"] for r in body["predictions"]] == keys
    stored = {p.pk: p.model_version.version for p in Prediction.objects.select_related("model_version")}
    assert [stored[r["id"]] for r in body["predictions"]] == [v for v, _ in expected]


# ------------------------------------------------------------------------------
# The service
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("percent", [101, -1, "x", 2.5, True])
def test_the_service_refuses_a_share_that_is_not_a_whole_number_from_0_to_100(cancer_v2, percent):
    registered = RegisteredModel.objects.get(name="cancer")

    with pytest.raises(ValidationError) as raised:
        challenger_services.challenger_mode_set(
            registered_model=registered, mode="canary", canary_percent=percent, user=None
        )

    assert list(raised.value.message_dict) == ["canary_percent"]


def test_the_service_refuses_an_unknown_mode_and_a_user_who_is_not_staff(cancer_v2, alice):
    registered = RegisteredModel.objects.get(name="cancer")

    with pytest.raises(ValidationError) as raised:
        challenger_services.challenger_mode_set(registered_model=registered, mode="bogus", user=None)
    assert list(raised.value.message_dict) == ["mode"]
    with pytest.raises(PermissionDenied):
        challenger_services.challenger_mode_set(registered_model=registered, mode="off", user=alice)


def test_shadow_and_canary_need_a_production_and_a_staging_version(cancer_v1):
    registered = RegisteredModel.objects.get(name="cancer")

    for mode in ("shadow", "canary"):
        with pytest.raises(challenger_services.ChallengerUnavailable) as raised:
            challenger_services.challenger_mode_set(registered_model=registered, mode=mode, user=None)
        assert raised.value.errors[0]["field"] == "mode"
        assert "no staging version" in raised.value.detail
    registered.refresh_from_db()
    assert (registered.challenger_mode, registered.challenger_since) == ("off", None)


def test_the_mode_s_start_moves_with_the_mode_or_a_new_challenger_but_not_with_the_share(cancer_v2, staff):
    from models_registry import transition_services

    registered = canary(10)
    started = registered.challenger_since
    assert started is not None

    assert canary(40).challenger_since == started
    moved = challenger_services.challenger_mode_set(
        registered_model=registered, mode="shadow", user=staff
    ).challenger_since
    assert moved > started
    assert registered.canary_percent == 40
    assert (
        challenger_services.challenger_mode_set(
            registered_model=registered, mode="shadow", user=staff
        ).challenger_since
        == moved
    )
    newer = make_model_version(trained=CHALLENGER, name="cancer", version=3, stage="none")
    transition_services.model_version_transition(model_version=newer, to_stage="staging", user=staff)
    again = challenger_services.challenger_mode_set(registered_model=registered, mode="shadow", user=staff)
    assert again.challenger_since > moved


# ------------------------------------------------------------------------------
# GET/PUT /api/models/{name}/challenger/
# ------------------------------------------------------------------------------
def test_staff_set_the_canary_through_the_api_and_everyone_signed_in_reads_it(staff, alice, cancer_v2):
    response = put(api(staff), {"mode": "canary", "canary_percent": 25})

    body = response.json()
    assert response.status_code == 200, body
    assert (body["model"], body["mode"], body["canary_percent"], body["active"]) == (
        "cancer",
        "canary",
        25,
        True,
    )
    assert (body["champion"]["version"], body["challenger"]["version"]) == (1, 2)
    assert body["since"] is not None
    assert body["comparison"]["n"] == 0
    assert body["comparison"]["p_value"] is None
    assert set(body["live"]) == {"champion", "challenger"}
    read = api(alice).get(CHALLENGER_URL)
    assert read.status_code == 200
    assert read.json()["canary_percent"] == 25
    assert put(api(staff), {"mode": "canary"}).json()["canary_percent"] == 25


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "canary", "canary_percent": 101}, "canary_percent"),
        ({"mode": "canary", "canary_percent": -1}, "canary_percent"),
        ({"mode": "canary", "canary_percent": "x"}, "canary_percent"),
        ({"mode": "bogus"}, "mode"),
        ({"canary_percent": 5}, "mode"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(staff, cancer_v2, body, field):
    response = put(api(staff), body)

    assert [e["field"] for e in error_body(response, 400, "invalid")["errors"]] == [field]
    assert RegisteredModel.objects.get(name="cancer").challenger_mode == "off"


def test_canary_without_a_staging_version_is_a_409_naming_the_mode(staff, cancer_v1):
    response = put(api(staff), {"mode": "canary", "canary_percent": 10})

    body = error_body(response, 409, "no_version_in_stage")
    assert [(e["field"], e["code"]) for e in body["errors"]] == [("mode", "no_version_in_stage")]


def test_only_staff_change_the_mode_and_only_signed_in_users_read_it(alice, cancer_v2):
    assert put(api(alice), {"mode": "canary", "canary_percent": 10}).status_code == 403
    assert put(api(), {"mode": "canary", "canary_percent": 10}).status_code == 401
    assert api().get(CHALLENGER_URL).status_code == 401
    assert api(alice).get("/api/models/nothing/challenger/").status_code == 404
    assert RegisteredModel.objects.get(name="cancer").challenger_mode == "off"


# ------------------------------------------------------------------------------
# The model page and the admin
# ------------------------------------------------------------------------------
def test_staff_set_the_mode_from_the_model_page(client, staff, cancer_v2):
    client.force_login(staff)
    url = reverse("registry:model-challenger", args=["cancer"])

    response = client.post(url, {"mode": "canary", "canary_percent": "30"})

    assert response.status_code == 302
    registered = RegisteredModel.objects.get(name="cancer")
    assert (registered.challenger_mode, registered.canary_percent) == ("canary", 30)
    page = client.get(reverse("registry:model-detail", args=["cancer"])).content.decode()
    assert 'id="challenger"' in page
    assert "30% of production traffic" in page
    assert 'id="challenger-form"' in page


def test_the_page_form_names_what_it_refuses_and_keeps_the_mode(client, staff, cancer_v1):
    client.force_login(staff)
    url = reverse("registry:model-challenger", args=["cancer"])

    page = client.post(url, {"mode": "canary", "canary_percent": "30"}, follow=True).content.decode()
    assert "no staging version" in page
    page = client.post(url, {"mode": "canary", "canary_percent": "101"}, follow=True).content.decode()
    assert "less than or equal to 100" in page
    assert RegisteredModel.objects.get(name="cancer").challenger_mode == "off"


def test_users_who_are_not_staff_see_the_panel_without_the_form_and_cannot_post(client, alice, cancer_v2):
    client.force_login(alice)

    page = client.get(reverse("registry:model-detail", args=["cancer"])).content.decode()
    assert 'id="challenger"' in page
    assert 'id="challenger-form"' not in page
    response = client.post(reverse("registry:model-challenger", args=["cancer"]), {"mode": "off"})
    assert response.status_code == 403


def test_the_admin_sets_the_mode_through_the_service_and_refuses_what_it_refuses(
    client, admin_user, cancer_v2
):
    client.force_login(admin_user)
    registered = RegisteredModel.objects.get(name="cancer")
    url = reverse("admin:models_registry_registeredmodel_change", args=[registered.pk])
    page = client.get(url)
    assert page.status_code == 200
    form = {
        "description": "",
        "min_metrics": "{}",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        "webhooks-TOTAL_FORMS": "0",
        "webhooks-INITIAL_FORMS": "0",
    }

    refused = client.post(url, {**form, "challenger_mode": "canary", "canary_percent": "101"})
    assert refused.status_code == 200
    assert "from 0 to 100" in refused.content.decode()
    saved = client.post(url, {**form, "challenger_mode": "canary", "canary_percent": "15"})
    assert saved.status_code == 302
    registered.refresh_from_db()
    assert (registered.challenger_mode, registered.canary_percent) == ("canary", 15)
    assert registered.challenger_since is not None
