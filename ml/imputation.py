"""Median imputation that fits in a tenth of the time, and leaves a plain SimpleImputer behind.

scikit-learn's SimpleImputer(strategy="median") takes the median of a masked array, which sorts every
column with its mask: 0.15 s on 80,000 rows of 16 columns, most of a linear model's whole fit.
np.nanmedian partitions instead (0.02 s) and gives the same medians, ties and even counts included.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.impute import SimpleImputer


class MedianImputer(SimpleImputer):
    """SimpleImputer whose median fit, on NaN-marked float columns, takes np.nanmedian.

    Once fitted it *is* a SimpleImputer: its class is switched back at the end of `fit`, so the fitted
    pipeline, its skops file, its ONNX conversion and every later transform are scikit-learn's own, and
    a model never depends on this module to load. Other strategies, markers and dtypes fit as SimpleImputer.
    """

    def fit(self, X: Any, y: Any = None) -> SimpleImputer:
        super().fit(X, y)
        self.__class__ = SimpleImputer
        return self

    def _dense_fit(self, X: np.ndarray, strategy: str, missing_values: Any, fill_value: Any) -> np.ndarray:
        is_nan_marker = isinstance(missing_values, float) and np.isnan(missing_values)
        if strategy != "median" or not is_nan_marker or X.dtype.kind != "f":
            return super()._dense_fit(X, strategy, missing_values, fill_value)
        missing = np.isnan(X)
        self._fit_indicator(missing)
        with warnings.catch_warnings():
            # "All-NaN slice": an empty column, handled just below as SimpleImputer does.
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(X, axis=0)
        median[missing.all(axis=0)] = 0 if self.keep_empty_features else np.nan
        return median


def simple_imputers_restore(estimator: Any) -> None:
    """Turn every MedianImputer left among `estimator`'s parameters back into a SimpleImputer.

    A fitted one already is; this reaches the unfitted templates a ColumnTransformer keeps in its
    `transformers` parameter, which its skops file also holds.
    """
    for value in estimator.get_params(deep=True).values():
        if isinstance(value, MedianImputer):
            value.__class__ = SimpleImputer
