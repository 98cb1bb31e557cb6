"""MedianImputer: scikit-learn's medians, faster, and a plain SimpleImputer once fitted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.impute import SimpleImputer

from ml import artifacts, catalogue
from ml.imputation import MedianImputer
from ml.tests.test_train import schema_of
from ml.train import model_train

FLOATS = st.one_of(
    st.just(np.nan),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([0.0, 1.5, 1.5, 2.0, -3.25]),  # ties
)


@settings(max_examples=200, deadline=None)
@given(X=arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(1, 4)), elements=FLOATS))
@pytest.mark.parametrize("keep_empty_features", [True, False])
def test_it_finds_the_medians_simple_imputer_finds(X, keep_empty_features):
    ours = MedianImputer(strategy="median", keep_empty_features=keep_empty_features).fit(X)
    theirs = SimpleImputer(strategy="median", keep_empty_features=keep_empty_features).fit(X)

    np.testing.assert_array_equal(ours.statistics_, theirs.statistics_)
    np.testing.assert_array_equal(ours.transform(X), theirs.transform(X))


def test_once_fitted_it_is_a_simple_imputer():
    imputer = MedianImputer(strategy="median").fit(np.array([[1.0], [np.nan], [3.0]]))

    assert type(imputer) is SimpleImputer
    assert imputer.statistics_.tolist() == [2.0]


def test_other_strategies_and_text_fit_as_simple_imputer_does():
    text = np.array([["a"], [""], ["a"], ["b"]], dtype=object)
    ours = MedianImputer(missing_values="", strategy="most_frequent").fit(text)
    theirs = SimpleImputer(missing_values="", strategy="most_frequent").fit(text)

    assert ours.statistics_.tolist() == theirs.statistics_.tolist() == ["a"]


def test_a_trained_pipelines_model_file_names_only_scikit_learn_classes():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "y": rng.normal(size=200)})
    frame.loc[::7, "x"] = np.nan
    frame["label"] = np.where(frame["y"] > 0, "up", "down")

    result = model_train(
        frame=frame,
        schema_columns=schema_of(frame),
        target_column="label",
        algorithm="logistic_regression",
        task=catalogue.CLASSIFICATION,
    )

    dumped = artifacts.skops_dump(result.pipeline)
    assert not any("imputation" in name for name in skops.io.get_untrusted_types(data=dumped))
    assert "MedianImputer" not in repr(result.pipeline)
