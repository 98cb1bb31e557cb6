"""Tests for model files: skops round trip, checksums, trusted types, refusing pickles and unknown uploads."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from ml import artifacts, catalogue
from ml.errors import ArtifactError
from ml.onnx_export import onnx_convert
from ml.train import TrainingResult, model_train
from tests.factories import make_classification_frame

SCHEMA = [
    {"name": "age", "kind": "numeric"},
    {"name": "income", "kind": "numeric"},
    {"name": "city", "kind": "categorical"},
    {"name": "label", "kind": "categorical"},
]
FAST = {"random_forest": {"n_estimators": 10}, "hist_gradient_boosting": {"max_iter": 10}}


def frame_for(task: str) -> pd.DataFrame:
    frame = make_classification_frame(rows=90, seed=1)
    frame.loc[::7, "age"] = np.nan
    frame.loc[::11, "city"] = np.nan
    if task == "classification":
        # Three classes so multiclass models (several trees per iteration) are covered too.
        frame["label"] = np.select(
            [frame["income"] < 45_000, frame["income"] < 55_000], ["low", "mid"], "high"
        )
    return frame


def train(task: str, algorithm: str) -> TrainingResult:
    frame = frame_for(task)
    target = "label" if task == "classification" else "income"
    return model_train(
        frame=frame,
        schema_columns=SCHEMA,
        target_column=target,
        algorithm=algorithm,
        params=FAST.get(algorithm, {}),
        task=task,
    )


@pytest.fixture(scope="module")
def trained() -> dict[tuple[str, str], TrainingResult]:
    return {(a.task, a.key): train(a.task, a.key) for a in catalogue.algorithm_list()}


class _RunsACommandWhenUnpickled:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_trusted_types_cover_every_catalogue_pipeline_and_nothing_more(trained):
    # The only place the untrusted list is read from a file: here, to keep TRUSTED_TYPES honest.
    needed: set[str] = set()
    for result in trained.values():
        needed |= set(skops.io.get_untrusted_types(data=artifacts.skops_dump(result.pipeline)))
    assert needed == set(artifacts.TRUSTED_TYPES)


def test_a_skops_round_trip_gives_the_same_predictions(trained):
    for result in trained.values():
        data = artifacts.skops_dump(result.pipeline)
        loaded = artifacts.skops_load(data, sha256=artifacts.sha256_hex(data))
        assert np.array_equal(loaded.predict(result.X_holdout), result.pipeline.predict(result.X_holdout))
        if result.task == "classification":
            assert np.array_equal(
                loaded.predict_proba(result.X_holdout), result.pipeline.predict_proba(result.X_holdout)
            )


def test_loading_refuses_a_file_whose_checksum_does_not_match(trained):
    data = artifacts.skops_dump(trained[("regression", "ridge")].pipeline)
    with pytest.raises(ArtifactError, match="checksum does not match"):
        artifacts.skops_load(data, sha256=artifacts.sha256_hex(data + b"x"))
    with pytest.raises(ArtifactError, match="not a sha256"):
        artifacts.skops_load(data, sha256="abc")


def test_loading_refuses_a_pickle_without_running_it(tmp_path):
    marker = tmp_path / "pickle-ran"
    payload = pickle.dumps(_RunsACommandWhenUnpickled(str(marker)))
    assert payload.startswith(b"\x80")
    with pytest.raises(ArtifactError, match="Python pickle"):
        artifacts.skops_load(payload, sha256=artifacts.sha256_hex(payload))
    with pytest.raises(ArtifactError, match="never accepted"):
        artifacts.uploaded_model_validate(data=payload, filename="model.skops")
    assert not marker.exists()
    # The payload is live: unpickling it really would run the command.
    pickle.loads(payload)  # noqa: S301
    assert marker.exists()


def test_uploads_refuse_a_joblib_file_of_a_real_pipeline(trained, tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(trained[("classification", "logistic_regression")].pipeline, path)
    with pytest.raises(ArtifactError, match="pickle"):
        artifacts.uploaded_model_validate(data=path.read_bytes(), filename="model.joblib")
    compressed = tmp_path / "model.joblib.gz"
    joblib.dump(trained[("classification", "logistic_regression")].pipeline, compressed, compress=("gzip", 3))
    with pytest.raises(ArtifactError, match="gzip-compressed"):
        artifacts.uploaded_model_validate(data=compressed.read_bytes(), filename="model.joblib.gz")


def test_loading_refuses_a_skops_file_naming_an_untrusted_type(tmp_path):
    frame = pd.DataFrame({"x": np.arange(20.0)})
    pipeline = Pipeline([("f", FunctionTransformer(np.log1p)), ("m", LogisticRegression())])
    pipeline.fit(frame, np.arange(20) % 2)
    pipeline.named_steps["f"].func = os.system
    data = skops.io.dumps(pipeline)
    with pytest.raises(ArtifactError, match=r"does not trust.*posix\.system"):
        artifacts.skops_load(data, sha256=artifacts.sha256_hex(data))
    with pytest.raises(ArtifactError, match="does not trust"):
        artifacts.uploaded_model_validate(data=data, filename="model.skops")


def test_uploads_accept_skops_and_onnx_files(trained):
    result = trained[("classification", "random_forest")]
    data = artifacts.skops_dump(result.pipeline)
    uploaded = artifacts.uploaded_model_validate(data=data, filename="Forest.SKOPS")
    assert uploaded == artifacts.UploadedModel(
        kind="skops", sha256=artifacts.sha256_hex(data), size=len(data)
    )
    conversion = onnx_convert(
        pipeline=result.pipeline,
        feature_schema=result.feature_schema,
        X_holdout=result.X_holdout,
        classes=result.classes,
    )
    assert conversion.data is not None
    assert artifacts.uploaded_model_validate(data=conversion.data, filename="forest.onnx").kind == "onnx"


def test_uploads_must_be_named_after_their_content(trained):
    data = artifacts.skops_dump(trained[("regression", "ridge")].pipeline)
    with pytest.raises(ArtifactError, match=r"named \.onnx but contains a skops model"):
        artifacts.uploaded_model_validate(data=data, filename="model.onnx")
    with pytest.raises(ArtifactError, match=r"must be named \.skops or \.onnx"):
        artifacts.uploaded_model_validate(data=data, filename="model.zip")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"not a model at all", "neither a skops file nor a valid ONNX model"),
        (b"\x08\x07", "neither a skops file nor a valid ONNX model"),
        (b"\x93NUMPY\x01\x00", "NumPy array"),
        (b"PK\x03\x04broken", "damaged zip"),
    ],
)
def test_uploads_refuse_anything_else_with_a_reason(data, message):
    with pytest.raises(ArtifactError, match=message):
        artifacts.uploaded_model_validate(data=data, filename="model.onnx")


def test_uploads_refuse_a_zip_that_is_not_a_skops_file():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.pkl", b"\x80\x04.")
    with pytest.raises(ArtifactError, match=r"no schema\.json"):
        artifacts.uploaded_model_validate(data=buffer.getvalue(), filename="model.skops")


def test_uploads_refuse_a_skops_file_without_a_predict_method():
    data = skops.io.dumps({"weights": [1, 2, 3]})
    with pytest.raises(ArtifactError, match="no predict method"):
        artifacts.uploaded_model_validate(data=data, filename="weights.skops")


def test_onnx_load_verifies_the_checksum(trained):
    result = trained[("regression", "ridge")]
    conversion = onnx_convert(
        pipeline=result.pipeline, feature_schema=result.feature_schema, X_holdout=result.X_holdout
    )
    assert conversion.data is not None
    assert conversion.sha256 == artifacts.sha256_hex(conversion.data)
    session = artifacts.onnx_load(conversion.data, sha256=conversion.sha256)
    assert [i.name for i in session.get_inputs()] == ["age", "city", "label"]
    with pytest.raises(ArtifactError, match="checksum does not match"):
        artifacts.onnx_load(conversion.data, sha256="0" * 64)
