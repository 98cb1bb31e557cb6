"""Tests for model_train: catalogue algorithms, holdout metrics, artifacts, bad input, reproducibility."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.inspection import permutation_importance
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from ml import figures as holdout_figures
from ml import metrics
from ml.errors import TrainingInputError
from ml.holdout import minimum_rows
from ml.pipeline import category_text, frame_prepare, pipeline_build
from ml.train import TrainingResult, model_train
from tests.factories import make_classification_frame

FAST = {
    "random_forest": {"n_estimators": 20},
    "hist_gradient_boosting": {"max_iter": 30},
    "logistic_regression": {},
    "ridge": {},
}


def schema_of(frame: pd.DataFrame, text: tuple[str, ...] = ()) -> list[dict[str, str]]:
    return [
        {
            "name": name,
            "kind": "text"
            if name in text
            else "numeric"
            if pd.api.types.is_numeric_dtype(frame[name])
            else "categorical",
        }
        for name in frame.columns
    ]


def mixed_frame(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    frame = make_classification_frame(rows=rows, seed=seed)
    frame.loc[::9, "age"] = np.nan
    frame.loc[::13, "city"] = np.nan
    return frame


def train(frame: pd.DataFrame, target: str, algorithm: str, **kwargs) -> TrainingResult:
    kwargs.setdefault("params", FAST.get(algorithm, {}))
    return model_train(
        frame=frame,
        schema_columns=kwargs.pop("schema_columns", schema_of(frame)),
        target_column=target,
        algorithm=algorithm,
        **kwargs,
    )


@pytest.fixture(scope="module")
def breast_cancer() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).frame


@pytest.fixture(scope="module")
def iris() -> pd.DataFrame:
    frame = load_iris(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "setosa", 1: "versicolor", 2: "virginica"})
    return frame


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).frame


CLASSIFIERS = ["logistic_regression", "random_forest", "hist_gradient_boosting"]
REGRESSORS = ["ridge", "random_forest", "hist_gradient_boosting"]


@pytest.mark.parametrize("algorithm", CLASSIFIERS)
def test_each_classifier_trains_on_breast_cancer_with_sane_metrics(breast_cancer, algorithm):
    result = train(breast_cancer, "target", algorithm)
    assert result.task == "classification"
    assert result.classes == [0, 1]
    assert set(result.metrics) == {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss"}
    assert result.metrics["accuracy"] > 0.85
    assert result.metrics["roc_auc"] > 0.9
    assert 0 < result.metrics["log_loss"] < 1
    assert all(isinstance(v, float) for v in result.metrics.values())
    assert result.n_train + result.n_test == len(breast_cancer)
    assert result.n_test == 114
    assert result.stratified


@pytest.mark.parametrize("algorithm", CLASSIFIERS)
def test_each_classifier_handles_three_text_classes(iris, algorithm):
    result = train(iris, "target", algorithm)
    assert result.classes == ["setosa", "versicolor", "virginica"]
    assert result.metrics["accuracy"] > 0.8
    assert 0.5 < result.metrics["roc_auc"] <= 1
    confusion = result.artifacts["confusion_matrix"]
    assert confusion["labels"] == result.classes
    assert sum(map(sum, confusion["matrix"])) == result.n_test
    assert [sum(row) for row in confusion["matrix"]] == [10, 10, 10]


@pytest.mark.parametrize("algorithm", REGRESSORS)
def test_each_regressor_trains_on_diabetes_with_sane_metrics(diabetes, algorithm):
    result = train(diabetes, "target", algorithm)
    assert result.task == "regression"
    assert result.classes is None
    assert set(result.metrics) == {"rmse", "mae", "r2"}
    assert 0 < result.metrics["mae"] <= result.metrics["rmse"] < 80
    assert 0.2 < result.metrics["r2"] < 1
    residuals = result.artifacts["residuals"]
    assert residuals["n_points"] == result.n_test
    assert np.allclose(np.array(residuals["actual"]) - residuals["predicted"], residuals["residual"])
    assert not result.stratified


@pytest.mark.parametrize("algorithm", CLASSIFIERS)
def test_each_classifier_trains_on_mixed_columns_with_missing_values(algorithm):
    result = train(mixed_frame(), "label", algorithm)
    assert result.classes == ["no", "yes"]
    assert [c["name"] for c in result.feature_schema] == ["age", "income", "city"]
    city = result.feature_schema[2]
    assert city["kind"] == "categorical"
    assert city["categories"] == ["Berlin", "Paris", "Rome"]
    age = result.feature_schema[0]
    assert 18 <= age["min"] < age["max"] < 80
    assert age["missing_count"] > 0
    names = [f["name"] for f in result.artifacts["feature_importances"]["features"]]
    assert sorted(names) == ["age", "city", "income"]


@pytest.mark.parametrize("algorithm", REGRESSORS)
def test_each_regressor_trains_on_mixed_columns(algorithm):
    frame = mixed_frame().drop(columns="label")
    result = train(frame, "income", algorithm)
    assert result.task == "regression"
    assert [c["name"] for c in result.feature_schema] == ["age", "city"]


def test_importances_are_native_for_forests_coefficients_for_linear_and_permutation_otherwise(breast_cancer):
    methods = {
        algorithm: train(breast_cancer, "target", algorithm).artifacts["feature_importances"]["method"]
        for algorithm in CLASSIFIERS
    }
    assert methods == {
        "logistic_regression": "coefficients",
        "random_forest": "native",
        "hist_gradient_boosting": "permutation",
    }


def test_one_hot_importances_are_summed_back_to_their_column():
    frame = mixed_frame(rows=200)
    # The label depends only on the city, so the city must carry the importance.
    frame["label"] = np.where(frame["city"].fillna("Rome") == "Berlin", "yes", "no")
    result = train(frame, "label", "random_forest")
    ranked = result.artifacts["feature_importances"]["features"]
    assert ranked[0]["name"] == "city"
    native = result.pipeline.named_steps["model"].feature_importances_
    assert sum(f["importance"] for f in ranked) == pytest.approx(float(native.sum()))


def _permutation_case(task: str, estimator: Any = None) -> tuple[Pipeline, pd.DataFrame, np.ndarray]:
    """A fitted HGB pipeline over numeric and categorical inputs with gaps, and held-out rows."""
    frame = mixed_frame(rows=160, seed=4)
    frame["zone"] = np.random.default_rng(4).choice(["a", "b", "c", "d"], len(frame))
    features = [c for c in schema_of(frame) if c["name"] != "label"]
    X = frame_prepare(frame, features)
    if task == "classification":
        y = frame["label"].to_numpy(dtype=object)
        estimator = estimator or HistGradientBoostingClassifier(max_iter=20, random_state=0)
    else:
        y = X["income"].fillna(0).to_numpy() / 1000 + (X["city"] == "Rome").to_numpy() * 5.0
        estimator = estimator or HistGradientBoostingRegressor(max_iter=20, random_state=0)
    pipeline = pipeline_build(feature_columns=features, estimator=estimator, scale_numeric=False)
    pipeline.fit(X.iloc[:100], y[:100])
    return pipeline, X.iloc[100:], y[100:]


def _importances_against_scikit_learn(
    pipeline: Pipeline, X_holdout: pd.DataFrame, y_holdout: np.ndarray, *, seed: int, rows: int
) -> tuple[dict[str, Any], dict[str, float]]:
    ours = metrics.feature_importances_compute(
        pipeline=pipeline, X_holdout=X_holdout, y_holdout=y_holdout, seed=seed
    )
    keep = np.arange(len(X_holdout))
    if rows < len(keep):
        keep = np.sort(np.random.default_rng(seed).choice(len(keep), rows, replace=False))
    reference = permutation_importance(
        pipeline,
        X_holdout.iloc[keep],
        y_holdout[keep],
        n_repeats=metrics.PERMUTATION_REPEATS,
        random_state=seed,
    )
    return ours, dict(zip(X_holdout.columns, reference.importances_mean.tolist(), strict=True))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_permutation_importance_on_the_transformed_holdout_equals_scikit_learns_on_the_pipeline(
    task, monkeypatch
):
    pipeline, X_holdout, y_holdout = _permutation_case(task)
    if task == "classification":
        # A holdout label the model never saw only ever counts as a miss, in both computations.
        y_holdout = y_holdout.copy()
        y_holdout[3] = "maybe"
    # Fewer rows than the holdout, so the seeded sample is exercised too.
    monkeypatch.setattr(metrics, "PERMUTATION_MAX_ROWS", 45)

    ours, expected = _importances_against_scikit_learn(pipeline, X_holdout, y_holdout, seed=7, rows=45)

    assert ours["method"] == "permutation"
    got = {f["name"]: f["importance"] for f in ours["features"]}
    assert got == pytest.approx(expected, rel=0, abs=1e-12)
    # Not a vacuous match: shuffling the columns the target depends on must cost score.
    assert max(expected.values()) > 0.05
    transformed = pipeline[:-1].transform(X_holdout)
    given = metrics.feature_importances_compute(
        pipeline=pipeline, X_holdout=X_holdout, y_holdout=y_holdout, seed=7, X_transformed=transformed
    )
    assert given == ours


class _BalancedScoring(HistGradientBoostingClassifier):
    def score(self, X, y, sample_weight=None):
        return skm.balanced_accuracy_score(y, self.predict(X))


def test_permutation_importance_uses_a_model_s_own_score_when_it_has_one():
    estimator = _BalancedScoring(max_iter=20, random_state=0)
    pipeline, X_holdout, y_holdout = _permutation_case("classification", estimator)

    ours, expected = _importances_against_scikit_learn(pipeline, X_holdout, y_holdout, seed=2, rows=60)

    got = {f["name"]: f["importance"] for f in ours["features"]}
    assert got == pytest.approx(expected, rel=0, abs=1e-12)


def test_model_train_keeps_the_pipeline_s_predictions_on_the_holdout(iris, diabetes):
    classified = train(iris, "target", "hist_gradient_boosting")
    assert np.array_equal(classified.holdout_predictions, classified.pipeline.predict(classified.X_holdout))
    assert np.array_equal(
        classified.holdout_probabilities, classified.pipeline.predict_proba(classified.X_holdout)
    )
    regressed = train(diabetes, "target", "ridge")
    assert np.array_equal(regressed.holdout_predictions, regressed.pipeline.predict(regressed.X_holdout))
    assert regressed.holdout_probabilities is None


def test_artifacts_and_figures_are_plain_json(iris, diabetes):
    for result in (train(iris, "target", "logistic_regression"), train(diabetes, "target", "ridge")):
        text = json.dumps(result.artifacts)
        assert "bdata" not in text
        json.dumps(result.metrics)
        json.dumps(result.params)
        json.dumps(result.feature_schema)
        json.dumps(result.split)
        figures = result.artifacts["figures"]
        assert figures["feature_importances"]["data"][0]["type"] == "bar"
    assert set(figures) == {"residuals", "feature_importances"}
    assert figures["residuals"]["data"][0]["type"] == "scatter"


def test_the_confusion_matrix_figure_is_a_heatmap_of_the_counts(iris):
    result = train(iris, "target", "logistic_regression")
    figure = result.artifacts["figures"]["confusion_matrix"]
    assert figure["data"][0]["type"] == "heatmap"
    assert figure["data"][0]["z"] == result.artifacts["confusion_matrix"]["matrix"]


def test_the_same_seed_gives_identical_predictions(breast_cancer):
    for algorithm in CLASSIFIERS:
        first = train(breast_cancer, "target", algorithm, seed=3)
        second = train(breast_cancer, "target", algorithm, seed=3)
        assert first.holdout_sha256 == second.holdout_sha256
        assert first.X_holdout.index.equals(second.X_holdout.index)
        assert np.array_equal(
            first.pipeline.predict_proba(first.X_holdout), second.pipeline.predict_proba(first.X_holdout)
        )
        assert first.metrics == second.metrics


def test_a_different_seed_gives_a_different_recorded_split(diabetes):
    first = train(diabetes, "target", "random_forest", seed=1)
    second = train(diabetes, "target", "random_forest", seed=2)
    assert first.split["seed"] == 1
    assert second.split["seed"] == 2
    assert first.split["holdout_sha256"] != second.split["holdout_sha256"]
    assert not first.X_holdout.index.equals(second.X_holdout.index)


def test_the_recorded_split_does_not_depend_on_the_frame_index(diabetes):
    shifted = diabetes.set_index(diabetes.index + 1000)
    assert (
        train(diabetes, "target", "ridge").holdout_sha256 == train(shifted, "target", "ridge").holdout_sha256
    )


def test_the_task_can_be_overridden():
    frame = mixed_frame(rows=80)
    frame["score"] = np.arange(len(frame)) % 3
    assert train(frame, "score", "ridge", task="regression").task == "regression"
    result = train(frame, "score", "random_forest")
    assert result.task == "classification"
    assert result.classes == [0, 1, 2]


def test_numeric_class_labels_with_missing_targets_stay_whole_numbers():
    frame = mixed_frame(rows=80)
    frame["flag"] = (frame["income"] > 50_000).astype(float)
    frame.loc[[3, 7, 11], "flag"] = np.nan
    result = train(frame.drop(columns="label"), "flag", "logistic_regression")
    assert result.classes == [0, 1]
    assert result.n_dropped_missing_target == 3
    assert result.n_train + result.n_test == 77


def test_boolean_targets_become_text_labels():
    frame = mixed_frame(rows=80)
    frame["rich"] = frame["income"] > 50_000
    result = train(frame.drop(columns="label"), "rich", "logistic_regression")
    assert result.classes == ["False", "True"]


def test_text_columns_are_excluded_with_a_reason():
    frame = mixed_frame(rows=60)
    frame["note"] = [f"free text {i}" for i in range(len(frame))]
    result = train(frame, "label", "random_forest", schema_columns=schema_of(frame, text=("note",)))
    assert "note" not in [c["name"] for c in result.feature_schema]
    assert result.excluded_columns == [{"name": "note", "reason": "text columns are not used as features"}]


def test_an_empty_numeric_column_is_excluded_with_a_reason():
    frame = mixed_frame(rows=60)
    frame["blank"] = np.nan
    result = train(frame, "label", "logistic_regression")
    assert result.excluded_columns == [{"name": "blank", "reason": "the column has no numeric values"}]


def test_categories_are_canonical_text_whatever_their_type():
    frame = mixed_frame(rows=60)
    frame["zone"] = np.where(np.arange(60) % 2 == 0, 1.0, 2.0)
    frame.loc[5, "zone"] = np.nan
    columns = [*schema_of(frame.drop(columns="zone")), {"name": "zone", "kind": "categorical"}]
    result = train(frame, "label", "logistic_regression", schema_columns=columns)
    zone = next(c for c in result.feature_schema if c["name"] == "zone")
    assert zone["categories"] == ["1", "2"]


def test_convergence_warnings_are_recorded_not_printed(breast_cancer):
    result = train(breast_cancer, "target", "logistic_regression", params={"max_iter": 2})
    assert any("ConvergenceWarning" in w for w in result.warnings)


# Bad input: each gives a TrainingInputError that says what is wrong.


def test_it_names_an_unknown_target_and_lists_the_columns():
    frame = mixed_frame(rows=40)
    with pytest.raises(TrainingInputError) as caught:
        train(frame, "lable", "random_forest")
    assert "'lable' is not in the dataset" in str(caught.value)
    assert "age, income, city, label" in str(caught.value)


def test_it_refuses_a_target_with_one_class():
    frame = mixed_frame(rows=40)
    frame["label"] = "yes"
    with pytest.raises(TrainingInputError, match=r"only one class \('yes'\)"):
        train(frame, "label", "random_forest")


def test_it_says_how_many_rows_the_split_needs():
    frame = mixed_frame(rows=6)
    with pytest.raises(TrainingInputError) as caught:
        train(frame, "label", "logistic_regression")
    message = str(caught.value)
    assert "Too few rows: 6 usable" in message
    assert f"at least {minimum_rows(0.2)} rows" in message
    assert minimum_rows(0.2) == 7
    assert minimum_rows(0.5) == 10


def test_it_counts_dropped_targets_when_too_few_rows_remain():
    frame = mixed_frame(rows=10)
    frame["label"] = [None] * 6 + ["yes", "no", "yes", "no"]
    with pytest.raises(TrainingInputError, match="4 usable after dropping 6 without a target"):
        train(frame, "label", "logistic_regression")


def test_it_refuses_a_target_without_values():
    frame = mixed_frame(rows=20)
    frame["label"] = np.nan
    with pytest.raises(TrainingInputError, match="'label' has no values"):
        train(frame, "label", "logistic_regression")


def test_it_refuses_regression_on_a_text_target():
    with pytest.raises(TrainingInputError, match="Regression needs a numeric target"):
        train(mixed_frame(rows=40), "label", "ridge", task="regression")


def test_it_refuses_classification_on_fractional_numbers():
    with pytest.raises(TrainingInputError, match="fractional numbers like"):
        train(mixed_frame(rows=40), "income", "random_forest", task="classification")


def test_it_refuses_an_unknown_algorithm_or_task():
    with pytest.raises(TrainingInputError, match="Unknown algorithm 'xgboost'"):
        train(mixed_frame(rows=40), "label", "xgboost")
    with pytest.raises(TrainingInputError, match="Unknown task 'ranking'"):
        train(mixed_frame(rows=40), "label", "random_forest", task="ranking")


def test_it_refuses_a_bad_hyperparameter_before_training():
    with pytest.raises(TrainingInputError, match="Unknown hyperparameter 'trees'"):
        train(mixed_frame(rows=40), "label", "random_forest", params={"trees": 10})


def test_it_refuses_a_numeric_column_holding_text():
    frame = mixed_frame(rows=40)
    frame["age"] = frame["age"].astype(object)
    frame.loc[4, "age"] = "forty"
    columns = [
        {"name": "age", "kind": "numeric"},
        {"name": "city", "kind": "categorical"},
        {"name": "label", "kind": "categorical"},
    ]
    with pytest.raises(TrainingInputError, match="Numeric column 'age' holds a value that is not a number"):
        train(frame, "label", "random_forest", schema_columns=columns)


def test_it_refuses_a_schema_column_missing_from_the_data():
    frame = mixed_frame(rows=40)
    columns = [*schema_of(frame), {"name": "height", "kind": "numeric"}]
    with pytest.raises(TrainingInputError, match="not in the data: height"):
        train(frame, "label", "random_forest", schema_columns=columns)


def test_it_refuses_when_only_text_columns_remain():
    frame = pd.DataFrame({"note": [f"n{i}" for i in range(30)], "label": ["a", "b"] * 15})
    with pytest.raises(TrainingInputError, match="no numeric or categorical columns"):
        train(frame, "label", "random_forest", schema_columns=schema_of(frame, text=("note",)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed must be a whole number"),
        ({"seed": "7"}, "seed"),
        ({"test_size": 1.5}, "between 0 and 1"),
        ({"threads": 0}, "thread count"),
    ],
)
def test_it_refuses_a_bad_seed_or_holdout_fraction(kwargs, message):
    with pytest.raises(TrainingInputError, match=message):
        train(mixed_frame(rows=40), "label", "random_forest", **kwargs)


def test_it_refuses_an_unknown_column_kind():
    frame = mixed_frame(rows=40)
    columns = [{"name": "age", "kind": "date"}, {"name": "label", "kind": "categorical"}]
    with pytest.raises(TrainingInputError, match="kind 'date'"):
        train(frame, "label", "random_forest", schema_columns=columns)


def test_it_does_not_stratify_when_a_class_has_a_single_row():
    frame = mixed_frame(rows=40)
    frame.loc[0, "label"] = "maybe"
    result = train(frame, "label", "random_forest")
    assert not result.stratified
    assert result.classes == ["maybe", "no", "yes"]


# Metric helpers on hand-made values, where the right answer is known.


def test_roc_auc_is_omitted_with_a_reason_when_a_class_is_missing_from_the_holdout():
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    values, omitted = metrics.classification_metrics_compute(
        y_true=["a", "b", "a"], y_pred=["a", "b", "a"], proba=proba, classes=["a", "b", "c"]
    )
    assert "roc_auc" not in values
    assert omitted["roc_auc"] == "class(es) missing from the holdout: c"
    assert values["accuracy"] == 1.0
    assert values["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.6])))


def test_probability_metrics_are_omitted_without_probabilities():
    values, omitted = metrics.classification_metrics_compute(
        y_true=[0, 1, 1, 0], y_pred=[0, 1, 0, 0], proba=None, classes=[0, 1]
    )
    assert values["accuracy"] == 0.75
    assert values["balanced_accuracy"] == 0.75
    assert set(omitted) == {"roc_auc", "log_loss"}


def test_binary_roc_auc_uses_the_second_class_as_positive():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    values, _ = metrics.classification_metrics_compute(
        y_true=["no", "yes", "no", "yes"],
        y_pred=["no", "yes", "yes", "no"],
        proba=proba,
        classes=["no", "yes"],
    )
    assert values["roc_auc"] == 0.75


def test_regression_metrics_match_hand_computed_values():
    values = metrics.regression_metrics_compute(y_true=[1.0, 2.0, 3.0], y_pred=[1.0, 2.0, 5.0])
    assert values["mae"] == pytest.approx(2 / 3)
    assert values["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert values["r2"] == pytest.approx(1 - 4 / 2)


def test_the_confusion_matrix_appends_labels_the_model_never_saw():
    confusion = metrics.confusion_matrix_build(
        y_true=["a", "z", "b"], y_pred=["a", "a", "b"], classes=["a", "b"]
    )
    assert confusion == {"labels": ["a", "b", "z"], "matrix": [[1, 0, 0], [0, 1, 0], [1, 0, 0]]}


def test_large_residual_sets_are_sampled_for_the_plot():
    data = metrics.residuals_build(y_true=np.arange(5000.0), y_pred=np.zeros(5000), seed=0)
    assert data["n_points"] == metrics.RESIDUALS_MAX_POINTS
    assert data["n_total"] == 5000
    assert data["residual"] == data["actual"]


def test_probability_metrics_are_omitted_when_the_holdout_has_an_unseen_label():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    values, omitted = metrics.classification_metrics_compute(
        y_true=["no", "yes", "maybe"], y_pred=["no", "yes", "no"], proba=proba, classes=["no", "yes"]
    )
    assert values["accuracy"] == pytest.approx(2 / 3)
    assert omitted["log_loss"] == "the holdout has label(s) the model never saw in training: maybe"
    assert "roc_auc" in omitted


@pytest.mark.parametrize("n_classes", [2, 3])
def test_classification_metrics_equal_scikit_learns_on_the_text_labels(n_classes):
    rng = np.random.default_rng(n_classes)
    classes = ["cat", "dog", "emu"][:n_classes]
    proba = rng.dirichlet(np.ones(n_classes), 500)
    y_pred = np.array(classes, dtype=object)[proba.argmax(axis=1)]
    y_true = np.where(rng.random(500) < 0.8, y_pred, rng.choice(classes, 500)).astype(object)

    values, omitted = metrics.classification_metrics_compute(
        y_true=pd.Series(y_true), y_pred=y_pred, proba=proba, classes=classes
    )

    roc_auc = (
        skm.roc_auc_score(y_true == classes[1], proba[:, 1])
        if n_classes == 2
        else skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)
    )
    assert omitted == {}
    assert values == {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "f1_macro": skm.f1_score(y_true, y_pred, average="macro", zero_division=0),
        "roc_auc": roc_auc,
        "log_loss": skm.log_loss(y_true, proba, labels=classes),
    }
    confusion = metrics.confusion_matrix_build(y_true=y_true, y_pred=y_pred, classes=classes)
    assert confusion["matrix"] == skm.confusion_matrix(y_true, y_pred, labels=classes).tolist()


def test_classification_metrics_equal_scikit_learns_when_the_holdout_has_a_label_the_model_never_saw():
    y_true = ["b", "a", "c", "b", "b", "a"]
    y_pred = ["b", "a", "a", "c", "b", "a"]
    values, _ = metrics.classification_metrics_compute(
        y_true=y_true, y_pred=y_pred, proba=None, classes=["a", "c"]
    )
    assert values["balanced_accuracy"] == skm.balanced_accuracy_score(y_true, y_pred)
    assert values["f1_macro"] == skm.f1_score(y_true, y_pred, average="macro", zero_division=0)


def test_prepared_categories_are_the_canonical_text_of_each_value_whatever_the_column_type():
    columns = {
        "text": pd.Series(["a", None, "b", "a", np.nan], dtype=object),
        "str": pd.Series(["a", None, "b", "a", "c"], dtype="str"),
        "floats": pd.Series([1.0, 2.5, np.nan, -0.0, 3.0]),
        "ints": pd.Series([3, 1, 3, 2, 1]),
        "nullable": pd.Series([1, None, 2, 2, 1], dtype="Int64"),
        "bools": pd.Series([True, False, True, True, False]),
        "category": pd.Series(pd.Categorical(["x", None, "y", "x", "y"])),
        # Equal but not alike: one distinct value for pandas, three texts for category_text.
        "mixed": pd.Series([1, True, 1.0, "1", None], dtype=object),
        "dates": pd.Series(pd.to_datetime(["2024-01-02", None, "2024-01-02", "2024-03-04", None])),
    }
    frame = pd.DataFrame(columns)
    prepared = frame_prepare(frame, [{"name": name, "kind": "categorical"} for name in columns])
    for name in columns:
        assert prepared[name].dtype == object
        assert prepared[name].tolist() == [category_text(v) for v in frame[name].tolist()], name
    assert prepared["mixed"].tolist() == ["1", "True", "1", "1", ""]


def test_figures_carry_plotly_s_own_white_template(iris):
    figure = train(iris, "target", "logistic_regression").artifacts["figures"]["confusion_matrix"]
    reference = go.Figure(layout={"template": holdout_figures.FIGURE_TEMPLATE}).to_json()
    assert figure["layout"]["template"] == json.loads(reference)["layout"]["template"]
    assert figure["layout"]["title"]["text"] == "Confusion matrix (holdout)"


def test_the_holdout_is_scikit_learns_stratified_split_of_the_text_labels():
    frame = mixed_frame(rows=90)
    frame["label"] = np.random.default_rng(3).choice(["b", "B", "a", "é", "a b"], 90)
    result = train(frame, "label", "logistic_regression", seed=11, test_size=0.3)

    _, expected = train_test_split(
        np.arange(90), test_size=27, random_state=11, stratify=frame["label"].to_numpy(dtype=object)
    )
    assert result.stratified
    assert result.X_holdout.index.tolist() == expected.tolist()


def test_text_labels_keep_the_text_of_each_value_even_when_values_compare_equal():
    frame = mixed_frame(rows=60)
    # 1, True and "1" are equal to pandas' hashing but read "1", "True" and "1".
    frame["label"] = pd.Series(([1, True, "1", "x"] * 15), dtype=object)
    result = train(frame, "label", "logistic_regression")
    assert result.classes == ["1", "True", "x"]
