"""Tests of prediction_make: version resolution, validation before storage, one bulk insert, the cache."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml import artifacts
from ml.predictor import OnnxPredictor, SklearnPredictor
from models_registry import mlflow_gateway, transition_services
from models_registry.models import ModelVersion, RegisteredModel
from predictions import model_cache, selectors, services
from predictions.errors import InputInvalid, ModelNotFound, NoVersionInStage
from predictions.models import Channel, Prediction, PredictionRequest
from predictions.tests.helpers import make_model_version, trained_model
from predictions.validation import RowsInvalid

CANCER = trained_model("cancer")
CANCER_ROW = CANCER.sample_rows[0]


def predict(rows, user, **options):
    return services.prediction_make(
        registered_model_name=options.pop("name", "cancer"),
        rows=rows,
        user=user,
        channel=Channel.API,
        **options,
    )


def assert_nothing_stored():
    assert PredictionRequest.objects.count() == 0
    assert Prediction.objects.count() == 0


def test_it_predicts_one_row_with_the_production_version_and_stores_it(alice, cancer_v1):
    outcome = predict([CANCER_ROW], alice, request_id="client-42")

    (prediction,) = outcome.predictions
    stored = Prediction.objects.get()
    assert stored.pk == prediction.pk
    assert stored.model_version == cancer_v1
    assert stored.user == alice
    assert stored.channel == "api"
    assert stored.row_index == 0
    assert stored.inputs == {name: float(value) for name, value in CANCER_ROW.items()}
    assert stored.prediction in CANCER.classes
    assert set(stored.probabilities) == set(CANCER.classes)
    assert math.isclose(sum(stored.probabilities.values()), 1.0, rel_tol=1e-5)
    assert stored.warnings == []
    request = PredictionRequest.objects.get()
    assert (request.request_id, request.n_rows, request.stage, request.user) == (
        "client-42",
        1,
        "production",
        alice,
    )
    assert request.latency_ms > 0
    assert stored.created_at == request.created_at


def test_its_predictions_match_the_scikit_learn_pipeline(alice, cancer_v1):
    rows = [*CANCER.sample_rows, {**CANCER_ROW, "mean radius": 9.0}]

    outcome = predict(rows, alice)

    pipeline = artifacts.skops_load(CANCER.skops_bytes, sha256=CANCER.skops_sha256)
    frame = pd.DataFrame(rows)
    expected_labels = pipeline.predict(frame).tolist()
    expected_proba = pipeline.predict_proba(frame)
    assert [p.prediction for p in outcome.predictions] == expected_labels
    got = [[p.probabilities[str(c)] for c in CANCER.classes] for p in outcome.predictions]
    np.testing.assert_allclose(got, expected_proba, atol=1e-4)
    assert [p.row_index for p in outcome.predictions] == [0, 1, 2, 3]


def test_it_uses_onnxruntime_for_a_version_with_a_verified_onnx(alice, cancer_v1):
    predict([CANCER_ROW], alice)

    (predictor,) = model_cache.predictors._entries.values()
    assert isinstance(predictor, OnnxPredictor)


def test_it_uses_scikit_learn_for_a_version_without_onnx(alice, db):
    make_model_version(trained=CANCER, name="cancer", onnx=False)

    predict([CANCER_ROW], alice)

    (predictor,) = model_cache.predictors._entries.values()
    assert isinstance(predictor, SklearnPredictor)


def test_it_inserts_all_rows_of_a_request_in_one_bulk_insert(alice, cancer_v1, django_assert_num_queries):
    predict([CANCER_ROW], alice)  # load the model and resolve the version first

    # The request row, one INSERT for all predictions, the hourly count, the hourly latency histogram, and
    # the savepoint pair of the test's transaction.
    with django_assert_num_queries(6) as captured:
        predict(CANCER.sample_rows * 10, alice)

    inserts = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 4
    assert "predictions_predictionrequest" in inserts[0]
    assert "predictions_prediction" in inserts[1]
    assert "predictions_predictionhourly" in inserts[2]
    assert "predictions_latencyhourly" in inserts[3]
    assert Prediction.objects.count() == 31


def test_it_loads_the_model_once_for_many_requests(alice, cancer_v1):
    for _ in range(5):
        predict([CANCER_ROW], alice)

    assert model_cache.predictors.loads == 1


def test_a_pinned_version_is_used_whatever_its_stage(alice, cancer_v1):
    other = make_model_version(
        trained=trained_model("cancer", algorithm="logistic_regression"),
        name="cancer",
        version=2,
        stage="none",
    )

    outcome = predict([CANCER_ROW], alice, version=2)

    assert outcome.model_version == other
    assert outcome.request.stage == ""
    assert Prediction.objects.get().model_version == other


def test_stage_staging_uses_the_newest_staging_version(alice, cancer_v1):
    make_model_version(trained=CANCER, name="cancer", version=2, stage="staging")
    newest = make_model_version(trained=CANCER, name="cancer", version=3, stage="staging", onnx=False)

    outcome = predict([CANCER_ROW], alice, stage="staging")

    assert outcome.model_version == newest
    assert outcome.request.stage == "staging"


@pytest.fixture
def no_mlflow(monkeypatch):
    """These versions are not in MLflow: the alias sync after a transition finds no model there."""

    def not_found(**kwargs):
        raise mlflow_gateway.ModelNotFound()

    monkeypatch.setattr(mlflow_gateway, "aliases_get", not_found)


def test_a_promotion_and_a_rollback_are_seen_by_the_next_request(alice, staff, db, no_mlflow):
    current = make_model_version(trained=CANCER, name="cancer", version=1, stage="none")
    candidate = make_model_version(
        trained=trained_model("cancer", algorithm="logistic_regression"),
        name="cancer",
        version=2,
        stage="staging",
    )
    transition_services.model_version_transition(model_version=current, to_stage="production", user=staff)
    assert predict([CANCER_ROW], alice).model_version == current

    transition_services.model_version_transition(model_version=candidate, to_stage="production", user=staff)
    assert predict([CANCER_ROW], alice).model_version == candidate

    transition_services.model_version_rollback(registered_model=current.registered_model, user=staff)
    assert predict([CANCER_ROW], alice).model_version == current
    # Each version was loaded once; the rollback found version 1 still in the cache.
    assert model_cache.predictors.loads == 2


def test_an_unknown_model_is_not_found(alice, cancer_v1):
    with pytest.raises(ModelNotFound, match="no registered model named 'nope'"):
        predict([CANCER_ROW], alice, name="nope")
    assert_nothing_stored()


def test_an_unknown_version_is_not_found(alice, cancer_v1):
    with pytest.raises(ModelNotFound, match="has no version 7"):
        predict([CANCER_ROW], alice, version=7)


def test_a_model_without_a_production_version_says_so(alice, db):
    make_model_version(trained=CANCER, name="cancer", stage="staging")

    with pytest.raises(NoVersionInStage, match="no production version"):
        predict([CANCER_ROW], alice)
    assert_nothing_stored()


def test_a_model_without_any_version_has_no_production_version(alice, db):
    RegisteredModel.objects.create(name="cancer")

    with pytest.raises(NoVersionInStage):
        predict([CANCER_ROW], alice)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"stage": "archived"}, "stage"),
        ({"stage": "none"}, "stage"),
        ({"version": 0}, "version"),
        ({"version": "2"}, "version"),
        ({"version": True}, "version"),
        ({"request_id": "has spaces"}, "request_id"),
        ({"request_id": "x" * 65}, "request_id"),
        ({"version": 1, "stage": "staging"}, "stage"),
    ],
)
def test_it_refuses_bad_options_and_stores_nothing(alice, cancer_v1, options, field):
    with pytest.raises(InputInvalid) as caught:
        predict([CANCER_ROW], alice, **options)

    assert [(e["row"], e["field"], e["code"]) for e in caught.value.errors] == [
        (None, field, "invalid_option")
    ]
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"mean radius": "big"}, "wrong_type"),
        ({"mean radius": math.nan}, "not_finite"),
        ({"mean radius": "inf"}, "not_finite"),
        ({"radius": 3.0}, "unknown_field"),
        ({"mean radius": None, "mean texture": True}, "wrong_type"),
    ],
)
def test_an_invalid_row_among_valid_ones_stores_nothing(alice, cancer_v1, change, code):
    rows = [CANCER_ROW, {**CANCER_ROW, **change}]

    with pytest.raises(RowsInvalid) as caught:
        predict(rows, alice)

    assert [(e["row"], e["code"]) for e in caught.value.errors] == [(2, code)]
    assert_nothing_stored()


def test_a_row_missing_a_feature_stores_nothing(alice, cancer_v1):
    row = dict(CANCER_ROW)
    del row["mean area"]

    with pytest.raises(RowsInvalid) as caught:
        predict([row], alice)

    assert caught.value.errors == [
        {"row": 1, "field": "mean area", "code": "missing_feature", "message": "'mean area' is missing."}
    ]
    assert_nothing_stored()


def test_it_refuses_more_rows_than_the_setting_allows(alice, cancer_v1, settings):
    settings.PREDICTION_MAX_ROWS = 2

    with pytest.raises(RowsInvalid, match="at most 2 rows"):
        predict([CANCER_ROW] * 3, alice)
    assert_nothing_stored()
    assert len(predict([CANCER_ROW] * 2, alice).predictions) == 2


def test_it_stores_warnings_for_unknown_categories_and_out_of_range_values(alice, mixed_v1):
    rows = [{"age": 150, "income": 50_000, "city": "Atlantis"}, {"age": 40, "income": 50_000, "city": "Rome"}]

    outcome = predict(rows, alice, name="mixed")

    first, second = (p.warnings for p in outcome.predictions)
    assert [(w["field"], w["code"]) for w in first] == [("age", "out_of_range"), ("city", "unknown_category")]
    assert second == []
    assert Prediction.objects.get(row_index=0).warnings == first
    assert Prediction.objects.get(row_index=0).inputs == {
        "age": 150.0,
        "income": 50_000.0,
        "city": "Atlantis",
    }


def test_a_page_prediction_records_its_channel(alice, cancer_v1):
    services.prediction_make(
        registered_model_name="cancer", rows=[CANCER_ROW], user=alice, channel=Channel.PAGE
    )

    assert Prediction.objects.get().channel == "page"
    assert PredictionRequest.objects.get().channel == "page"


def test_a_single_row_with_a_verified_onnx_builds_no_dataframe(alice, cancer_v1, monkeypatch):
    predict([CANCER_ROW], alice)  # the first call loads the model
    built: list[int] = []
    original_init = pd.DataFrame.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "__init__", counting_init)

    outcome = predict([CANCER_ROW], alice)

    assert outcome.predictions[0].prediction in CANCER.classes
    assert built == []


def test_a_regression_model_predicts_numbers_without_probabilities(alice, db):
    diabetes = trained_model("diabetes", algorithm="ridge")
    make_model_version(trained=diabetes, name="diabetes")

    outcome = predict(diabetes.sample_rows, alice, name="diabetes")

    pipeline = artifacts.skops_load(diabetes.skops_bytes, sha256=diabetes.skops_sha256)
    expected = pipeline.predict(pd.DataFrame(diabetes.sample_rows)).tolist()
    np.testing.assert_allclose([p.prediction for p in outcome.predictions], expected, rtol=1e-4)
    assert all(p.probabilities is None for p in Prediction.objects.all())


def test_the_production_version_is_looked_up_again_after_half_a_second(alice, cancer_v1, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(model_cache.resolutions, "clock", lambda: now[0])
    other = make_model_version(trained=CANCER, name="cancer", version=2, stage="none")
    assert predict([CANCER_ROW], alice).model_version == cancer_v1
    # What another process does: change stages without this process's post_save signal.
    ModelVersion.objects.filter(pk=cancer_v1.pk).update(stage="archived")
    ModelVersion.objects.filter(pk=other.pk).update(stage="production")

    now[0] += 0.4
    assert predict([CANCER_ROW], alice).model_version == cancer_v1
    now[0] += 0.11
    assert predict([CANCER_ROW], alice).model_version == other


def test_a_version_saved_in_this_process_is_seen_by_the_next_request(
    alice, cancer_v1, django_assert_num_queries
):
    predict([CANCER_ROW], alice)
    with django_assert_num_queries(6):
        predict([CANCER_ROW], alice)

    cancer_v1.stage = "archived"
    cancer_v1.save(update_fields=["stage"])

    with pytest.raises(NoVersionInStage):
        predict([CANCER_ROW], alice)


def test_a_failed_lookup_is_not_remembered(alice, db, monkeypatch):
    with pytest.raises(ModelNotFound):
        predict([CANCER_ROW], alice)
    # As if the version were registered by another process: no signal clears this process's lookups.
    monkeypatch.setattr(model_cache.resolutions, "clear", lambda: None)
    make_model_version(trained=CANCER, name="cancer")

    assert predict([CANCER_ROW], alice).model_version.version == 1


@pytest.mark.parametrize(
    ("options", "stage"),
    [({}, "production"), ({"stage": "staging"}, "staging"), ({"version": 3}, "production")],
)
def test_the_target_check_names_the_stage_to_resolve(options, stage):
    assert selectors.prediction_target_check(**options) == stage


def test_the_target_check_refuses_a_version_with_a_stage_for_single_and_batch_predictions_alike():
    with pytest.raises(InputInvalid) as caught:
        selectors.prediction_target_check(version=1, stage="production")

    assert caught.value.problems == ['Give either "version" (pin a version) or "stage", not both.']
    assert caught.value.errors[0]["field"] == "stage"
