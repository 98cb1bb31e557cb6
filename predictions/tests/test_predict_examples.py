"""The predict form fills itself with an example row: the version's holdout rows, or typical values."""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.test import Client

from ml.drift import column_spec
from ml.examples import example_rows_pick
from predictions.models import Prediction
from predictions.tests.helpers import _frame


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def input_values(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="text" name="(f\d+)" value="([^"]*)"', html))


@pytest.fixture
def mixed_examples(mixed_v1):
    frame, target = _frame("mixed")
    mixed_v1.example_rows = example_rows_pick(frame.drop(columns=target), mixed_v1.feature_schema, seed=1)
    mixed_v1.save(update_fields=["example_rows"])
    return mixed_v1


def test_the_form_fills_itself_with_each_example_in_turn_and_predicts_it(alice, mixed_examples):
    client = client_for(alice)
    page = client.get("/predict/mixed/").content.decode()
    assert 'href="?example=0#prediction-form"' in page
    assert "Fill with an example row" in page

    filled = client.get("/predict/mixed/?example=0")

    assert filled.status_code == 200
    form = filled.context["form"]
    example = mixed_examples.example_rows[0]
    initial = {name: form.initial[field] for name, field in form.field_of_feature.items()}
    for name, value in example.items():
        if value is None:
            assert initial[name] == ""
        elif isinstance(value, float):
            assert float(initial[name]) == value  # exact: the text round-trips
        else:
            assert initial[name] == value
    html = filled.content.decode()
    assert 'href="?example=1#prediction-form"' in html
    assert "Fill with another example row" in html
    assert (
        client.get("/predict/mixed/?example=4").content.decode().count('href="?example=0#prediction-form"')
        == 1
    )

    # The filled values are what a click on Predict sends: they predict without an error.
    sent = {field: form.initial[field] for field in form.fields}
    response = client.post("/predict/mixed/", sent)
    assert response.status_code == 200, response.context["form"].errors
    assert Prediction.objects.filter(user=alice).count() == 1


def test_a_version_without_examples_offers_its_typical_values(alice, cancer_v1):
    client = client_for(alice)
    assert b"?example=" not in client.get("/predict/cancer/").content
    radius = np.array([10.0, 12.0, 12.5, 13.0, 20.0])
    cancer_v1.reference_profile = {
        "features": [
            column_spec(
                radius if c["name"] == "mean radius" else np.full(5, 1.5), name=c["name"], kind="numeric"
            )
            for c in cancer_v1.feature_schema
        ]
    }
    cancer_v1.save(update_fields=["reference_profile"])

    page = client.get("/predict/cancer/").content.decode()
    assert "Fill with typical values" in page
    filled = client.get("/predict/cancer/?example=0")

    form = filled.context["form"]
    assert form.initial[form.field_of_feature["mean radius"]] == "12.5"
    assert form.initial[form.field_of_feature["mean texture"]] == "1.5"


@pytest.mark.parametrize("value", ["", "abc", "-1", "5", "1.0", "٣", "9" * 400, "0x1"])
def test_a_bad_example_number_is_refused_with_the_range(alice, mixed_examples, value):
    response = client_for(alice).get("/predict/mixed/", {"example": value})

    assert response.status_code == 400
    assert "example must be a whole number from 0 to 4" in response.content.decode()


def test_asking_for_an_example_of_a_version_with_none_is_refused(alice, cancer_v1):
    response = client_for(alice).get("/predict/cancer/?example=0")

    assert response.status_code == 400
    assert "has no example rows" in response.content.decode()


def test_the_examples_need_a_login(mixed_examples):
    response = Client().get("/predict/mixed/?example=0")

    assert response.status_code == 302
