"""Tests for ONNX conversion and the two predictors: agreement with scikit-learn, row handling, refusals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from skl2onnx import to_onnx
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LogisticRegression, Ridge

from ml import artifacts, catalogue
from ml.errors import ArtifactError, PredictionInputError
from ml.onnx_export import OnnxConversion, onnx_convert
from ml.pipeline import feature_schema_build, frame_prepare, pipeline_build
from ml.predictor import OnnxPredictor, SklearnPredictor, predictor_from_artifacts
from ml.train import TrainingResult, model_train

INCOME = "monthly income (EUR)"  # a name the converter has to rewrite into an identifier
SCHEMA = [
    {"name": "age", "kind": "numeric"},
    {"name": INCOME, "kind": "numeric"},
    {"name": "city", "kind": "categorical"},
    {"name": "zone", "kind": "categorical"},
    {"name": "label", "kind": "categorical"},
    {"name": "spend", "kind": "numeric"},
]
FAST = {"random_forest": {"n_estimators": 15}, "hist_gradient_boosting": {"max_iter": 20}}


def raw_frame(rows: int = 150) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    income = rng.normal(4_000, 1_000, rows).round(2)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, rows).astype(float),
            INCOME: income,
            "city": rng.choice(["Berlin", "Paris", "Rome", "Oslo"], rows),
            # Whole numbers used as categories: canonical text must make 2 and 2.0 one category.
            "zone": rng.choice([1, 2, 3], rows),
            "label": np.select([income < 3_600, income < 4_400], ["low", "mid"], "high"),
            "spend": income * 0.3 + rng.normal(0, 50, rows),
        }
    )
    frame.loc[::8, "age"] = np.nan
    frame.loc[::10, "city"] = np.nan
    return frame


def rows_of(frame: pd.DataFrame) -> list[dict]:
    return [
        {
            key: (None if isinstance(value, float) and math.isnan(value) else value)
            for key, value in row.items()
        }
        for row in frame.to_dict("records")
    ]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return raw_frame()


@pytest.fixture(scope="module")
def trained(frame) -> dict[tuple[str, str], tuple[TrainingResult, OnnxConversion]]:
    results = {}
    for algorithm in catalogue.algorithm_list():
        target = "label" if algorithm.task == "classification" else "spend"
        result = model_train(
            frame=frame,
            schema_columns=SCHEMA,
            target_column=target,
            algorithm=algorithm.key,
            params=FAST.get(algorithm.key, {}),
            task=algorithm.task,
        )
        conversion = onnx_convert(
            pipeline=result.pipeline,
            feature_schema=result.feature_schema,
            X_holdout=result.X_holdout,
            classes=result.classes,
        )
        results[(algorithm.task, algorithm.key)] = (result, conversion)
    return results


def predictors(result: TrainingResult, conversion: OnnxConversion) -> tuple[SklearnPredictor, OnnxPredictor]:
    data = artifacts.skops_dump(result.pipeline)
    sklearn_predictor = SklearnPredictor(
        data, sha256=artifacts.sha256_hex(data), feature_schema=result.feature_schema
    )
    assert conversion.data is not None
    assert conversion.sha256 is not None
    onnx_predictor = OnnxPredictor(
        conversion.data, sha256=conversion.sha256, feature_schema=result.feature_schema
    )
    return sklearn_predictor, onnx_predictor


@pytest.mark.parametrize(("task", "algorithm"), [(a.task, a.key) for a in catalogue.algorithm_list()])
def test_every_catalogue_algorithm_converts_to_an_onnx_model_that_agrees_on_the_holdout(
    trained, task, algorithm
):
    _, conversion = trained[(task, algorithm)]
    assert conversion.available, conversion.reason
    assert conversion.reason is None
    if task == "classification":
        assert conversion.max_probability_diff is not None
        assert conversion.max_probability_diff <= 1e-4
    else:
        assert conversion.max_value_diff is not None


@pytest.mark.parametrize(("task", "algorithm"), [(a.task, a.key) for a in catalogue.algorithm_list()])
def test_the_onnx_predictor_equals_the_sklearn_predictor_on_raw_holdout_rows(trained, frame, task, algorithm):
    result, conversion = trained[(task, algorithm)]
    sklearn_predictor, onnx_predictor = predictors(result, conversion)
    rows = rows_of(frame.loc[result.X_holdout.index])
    sk_labels, sk_proba = sklearn_predictor.predict(rows)
    onnx_labels, onnx_proba = onnx_predictor.predict(rows)
    assert sk_labels == np.asarray(result.pipeline.predict(result.X_holdout)).tolist()
    if task == "classification":
        assert onnx_labels == sk_labels
        assert onnx_predictor.classes == sklearn_predictor.classes == ["high", "low", "mid"]
        assert np.allclose(onnx_proba, sk_proba, atol=1e-4)
        assert np.allclose(np.sum(onnx_proba, axis=1), 1, atol=1e-5)
    else:
        assert sk_proba is None
        assert onnx_proba is None
        assert np.allclose(onnx_labels, sk_labels, rtol=1e-4)


def test_both_predictors_treat_missing_unknown_and_loosely_typed_values_alike(trained):
    result, conversion = trained[("classification", "logistic_regression")]
    sklearn_predictor, onnx_predictor = predictors(result, conversion)
    rows = [
        {"age": 40, INCOME: 4200.5, "city": "Berlin", "zone": 2},
        {"age": "40", INCOME: "4200.5", "city": "Berlin", "zone": "2"},
        {"age": 40, INCOME: 4200.5, "city": "Berlin", "zone": 2.0},
        {"age": None, INCOME: 3000, "city": "Atlantis", "zone": 9},
        {INCOME: 5000, "unrelated": "ignored"},
        {"age": float("inf"), INCOME: 3900, "city": "", "zone": None},
    ]
    sk_labels, sk_proba = sklearn_predictor.predict(rows)
    onnx_labels, onnx_proba = onnx_predictor.predict(rows)
    assert onnx_labels == sk_labels
    assert np.allclose(onnx_proba, sk_proba, atol=1e-4)
    assert sk_proba[0] == sk_proba[1] == sk_proba[2]


def test_the_onnx_predictor_builds_no_dataframe(trained, monkeypatch):
    result, conversion = trained[("classification", "hist_gradient_boosting")]
    sklearn_predictor, onnx_predictor = predictors(result, conversion)
    rows = [{"age": 33, INCOME: 4100, "city": "Rome", "zone": 1}]

    def no_frames(*args, **kwargs):
        raise AssertionError("a DataFrame was built")

    monkeypatch.setattr(pd, "DataFrame", no_frames)
    labels, proba = onnx_predictor.predict(rows)
    assert len(labels) == 1
    assert proba is not None
    # The trap is live: the scikit-learn path does need a DataFrame.
    with pytest.raises(AssertionError, match="a DataFrame was built"):
        sklearn_predictor.predict(rows)


def test_the_onnx_model_carries_its_classes_and_input_names(trained):
    result, conversion = trained[("classification", "random_forest")]
    _, onnx_predictor = predictors(result, conversion)
    assert onnx_predictor.classes == result.classes
    session = artifacts.onnx_load(conversion.data, sha256=conversion.sha256)
    assert "monthly_income__EUR_" in [i.name for i in session.get_inputs()]


def test_the_factory_prefers_a_verified_onnx_model(trained):
    result, conversion = trained[("regression", "ridge")]
    data = artifacts.skops_dump(result.pipeline)
    chosen = predictor_from_artifacts(
        feature_schema=result.feature_schema,
        skops_bytes=data,
        skops_sha256=artifacts.sha256_hex(data),
        onnx_bytes=conversion.data,
        onnx_sha256=conversion.sha256,
    )
    assert isinstance(chosen, OnnxPredictor)
    fallback = predictor_from_artifacts(
        feature_schema=result.feature_schema, skops_bytes=data, skops_sha256=artifacts.sha256_hex(data)
    )
    assert isinstance(fallback, SklearnPredictor)
    with pytest.raises(ArtifactError, match="No model file"):
        predictor_from_artifacts(feature_schema=result.feature_schema)
    with pytest.raises(ArtifactError, match="checksum does not match"):
        predictor_from_artifacts(
            feature_schema=result.feature_schema, onnx_bytes=conversion.data, onnx_sha256="f" * 64
        )


def test_a_bad_row_is_refused_naming_the_row_and_column(trained):
    result, conversion = trained[("regression", "random_forest")]
    sklearn_predictor, onnx_predictor = predictors(result, conversion)
    for predictor in (sklearn_predictor, onnx_predictor):
        with pytest.raises(PredictionInputError, match="Row 2, column 'age': could not convert string"):
            predictor.predict([{"age": 30}, {"age": "forty"}])
        with pytest.raises(PredictionInputError, match="Row 1, column 'age': expected a number, got True"):
            predictor.predict([{"age": True}])
        with pytest.raises(PredictionInputError, match="at least one row"):
            predictor.predict([])
        with pytest.raises(PredictionInputError, match="Row 1 must be a mapping"):
            predictor.predict([["age", 30]])


def test_an_unsupported_estimator_is_marked_unavailable_with_the_reason():
    frame = frame_prepare(raw_frame(60), SCHEMA[:3])
    pipeline = pipeline_build(feature_columns=SCHEMA[:3], estimator=KernelRidge(), scale_numeric=True)
    pipeline.fit(frame, np.arange(60.0))
    conversion = onnx_convert(
        pipeline=pipeline, feature_schema=feature_schema_build(frame, SCHEMA[:3]), X_holdout=frame
    )
    assert not conversion.available
    assert conversion.sha256 is None
    assert conversion.reason.startswith("ONNX conversion failed: MissingShapeCalculator")
    assert "KernelRidge" in conversion.reason


def test_a_model_that_disagrees_after_conversion_is_marked_unavailable():
    # float32 inputs cannot tell 1e9 from 1e9 + 30, so the ONNX model cannot match scikit-learn here.
    columns = [{"name": "big", "kind": "numeric"}]
    frame = frame_prepare(pd.DataFrame({"big": 1e9 + np.arange(60.0)}), columns)
    pipeline = pipeline_build(feature_columns=columns, estimator=Ridge(alpha=1e-6), scale_numeric=True)
    pipeline.fit(frame, np.arange(60.0))
    conversion = onnx_convert(
        pipeline=pipeline, feature_schema=feature_schema_build(frame, columns), X_holdout=frame
    )
    assert conversion.data is None
    assert conversion.reason.startswith("ONNX predictions differ from scikit-learn on the holdout")
    assert conversion.max_value_diff > 1


def test_an_external_onnx_model_with_one_matrix_input_and_zipmap_output_is_served():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 2)).astype(np.float32)
    y = np.where(X[:, 0] + X[:, 1] > 0, "up", "down")
    model = LogisticRegression().fit(X, y)
    data = to_onnx(model, X[:1]).SerializeToString()
    schema = [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"}]
    assert artifacts.uploaded_model_validate(data=data, filename="external.onnx").kind == "onnx"
    predictor = OnnxPredictor(data, sha256=artifacts.sha256_hex(data), feature_schema=schema)
    rows = [{"a": float(a), "b": float(b)} for a, b in X[:10]]
    labels, proba = predictor.predict(rows)
    assert labels == model.predict(X[:10]).tolist()
    assert predictor.classes == ["down", "up"]
    assert np.allclose(proba, model.predict_proba(X[:10]), atol=1e-5)


def test_an_onnx_model_whose_inputs_do_not_match_the_schema_is_refused(trained):
    _, conversion = trained[("regression", "ridge")]
    schema = [{"name": "height", "kind": "numeric"}, {"name": "city", "kind": "categorical"}]
    with pytest.raises(ArtifactError, match="do not match the feature schema"):
        OnnxPredictor(conversion.data, sha256=conversion.sha256, feature_schema=schema)


def test_the_onnx_check_compares_with_the_predictions_model_train_kept(trained):
    result, conversion = trained[("classification", "hist_gradient_boosting")]
    given = onnx_convert(
        pipeline=result.pipeline,
        feature_schema=result.feature_schema,
        X_holdout=result.X_holdout,
        classes=result.classes,
        sklearn_predictions=result.holdout_predictions,
        sklearn_probabilities=result.holdout_probabilities,
    )
    assert given == conversion

    # Predictions that are not scikit-learn's must fail the check, so the given ones are what it compares.
    wrong = np.array(result.holdout_predictions, dtype=object)
    wrong[0] = next(c for c in result.classes if c != wrong[0])
    refused = onnx_convert(
        pipeline=result.pipeline,
        feature_schema=result.feature_schema,
        X_holdout=result.X_holdout,
        classes=result.classes,
        sklearn_predictions=wrong,
        sklearn_probabilities=result.holdout_probabilities,
    )
    assert refused.data is None
    assert refused.reason == (
        f"ONNX labels differ from scikit-learn on 1 of {len(result.X_holdout)} holdout rows."
    )
    with pytest.raises(ValueError, match="predictions for"):
        onnx_convert(
            pipeline=result.pipeline,
            feature_schema=result.feature_schema,
            X_holdout=result.X_holdout,
            classes=result.classes,
            sklearn_predictions=result.holdout_predictions[:-1],
        )
