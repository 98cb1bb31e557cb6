"""The preprocessing + estimator Pipeline.

It expects inputs prepared by ml.features (frame_prepare, columns_from_rows), which holds the feature kinds,
the preparation and the feature schema without importing scikit-learn; they are re-exported here for the
code that imports them from this module. scikit-learn itself is imported by pipeline_build, so importing
this module for those names does not load it (every web and Celery worker does, while it starts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml.errors import TrainingInputError
from ml.features import (
    CATEGORICAL,
    FEATURE_KINDS,
    KINDS,
    MISSING_CATEGORY,
    MISSING_CATEGORY_FILL,
    NUMERIC,
    TEXT,
    category_text,
    category_texts,
    columns_from_frame,
    columns_from_rows,
    distinct_values_keep_types,
    feature_columns_select,
    feature_schema_build,
    frame_prepare,
    numeric_value,
)

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

__all__ = [
    "CATEGORICAL",
    "FEATURE_KINDS",
    "KINDS",
    "MISSING_CATEGORY",
    "MISSING_CATEGORY_FILL",
    "NUMERIC",
    "TEXT",
    "category_text",
    "category_texts",
    "columns_from_frame",
    "columns_from_rows",
    "distinct_values_keep_types",
    "feature_columns_select",
    "feature_schema_build",
    "frame_prepare",
    "input_column_of_outputs",
    "numeric_value",
    "pipeline_build",
]


def pipeline_build(
    *, feature_columns: list[dict[str, str]], estimator: BaseEstimator, scale_numeric: bool
) -> Pipeline:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from ml.imputation import MedianImputer

    numeric = [c["name"] for c in feature_columns if c["kind"] == NUMERIC]
    categorical = [c["name"] for c in feature_columns if c["kind"] == CATEGORICAL]
    transformers = []
    if numeric:
        # keep_empty_features: a column empty in the training rows still yields one output, so the model
        # keeps one input per schema column and feature importances map back by position.
        steps: list[tuple[str, Any]] = [
            ("impute", MedianImputer(strategy="median", keep_empty_features=True))
        ]
        if scale_numeric:
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        (
                            "impute",
                            SimpleImputer(
                                missing_values=MISSING_CATEGORY,
                                strategy="constant",
                                fill_value=MISSING_CATEGORY_FILL,
                            ),
                        ),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            )
        )
    if not transformers:
        raise TrainingInputError("There are no numeric or categorical feature columns to train on.")
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", estimator)])


def input_column_of_outputs(pipeline: Pipeline) -> list[str]:
    """For each column the preprocessing step outputs, the input column it came from."""
    preprocess: ColumnTransformer = pipeline.named_steps["preprocess"]
    owners: list[str] = []
    for name, transformer, columns in preprocess.transformers_:
        if name == "remainder":
            continue
        if name == "categorical":
            encoder: OneHotEncoder = transformer.named_steps["onehot"]
            for column, categories in zip(columns, encoder.categories_, strict=True):
                owners.extend([column] * len(categories))
        else:
            owners.extend(columns)
    return owners
