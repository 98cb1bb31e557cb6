"""A prediction's request, user and version have no database constraint (migration 0007): Django's own
on_delete keeps the rows consistent, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
from django.db.models import ProtectedError

from predictions import services
from predictions.models import Channel, Prediction, PredictionRequest
from predictions.tests.helpers import trained_model

ROWS = trained_model("cancer").sample_rows[:2]

pytestmark = pytest.mark.django_db


def predict(user):
    return services.prediction_make(registered_model_name="cancer", rows=ROWS, user=user, channel=Channel.API)


def test_a_deleted_users_predictions_stay_with_no_user(alice, bob, cancer_v1):
    mine, theirs = predict(alice), predict(bob)

    alice.delete()

    assert set(Prediction.objects.filter(request=mine.request).values_list("user_id", flat=True)) == {None}
    assert Prediction.objects.filter(user=bob).count() == len(theirs.predictions)


def test_deleting_a_request_deletes_its_rows_only(alice, cancer_v1):
    gone, kept = predict(alice), predict(alice)

    PredictionRequest.objects.filter(pk=gone.request.pk).delete()

    assert not Prediction.objects.filter(request_id=gone.request.pk).exists()
    assert Prediction.objects.filter(request=kept.request).count() == len(ROWS)


def test_a_version_with_predictions_cannot_be_deleted(alice, cancer_v1):
    outcome = predict(alice)

    with pytest.raises(ProtectedError):
        cancer_v1.delete()

    assert Prediction.objects.filter(request=outcome.request).count() == len(ROWS)
    assert Prediction.objects.get(pk=outcome.predictions[0].pk).model_version == cancer_v1
