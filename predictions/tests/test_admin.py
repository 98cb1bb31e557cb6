"""Tests of the predictions admin: stored predictions can be browsed but neither added nor changed."""

from __future__ import annotations

import pytest
from django.test import Client

from predictions.tests.helpers import make_predictions


@pytest.fixture
def admin_client_for(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def test_admins_browse_predictions_and_requests(admin_client_for, alice, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    assert admin_client_for.get("/admin/predictions/prediction/").status_code == 200
    assert admin_client_for.get("/admin/predictions/predictionrequest/").status_code == 200
    detail = admin_client_for.get(f"/admin/predictions/prediction/{prediction.pk}/change/")
    assert detail.status_code == 200
    assert (
        prediction.request.request_id
        in admin_client_for.get("/admin/predictions/predictionrequest/").content.decode()
    )


def test_predictions_cannot_be_added_or_changed_in_the_admin(admin_client_for, alice, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    assert admin_client_for.get("/admin/predictions/prediction/add/").status_code == 403
    response = admin_client_for.post(
        f"/admin/predictions/prediction/{prediction.pk}/change/", {"prediction": '"changed"'}
    )
    assert response.status_code == 403
    prediction.refresh_from_db()
    assert prediction.prediction != "changed"
