"""Tests of the per-process predictor cache: one load per version, ONNX when verified, refusals named."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from ml.predictor import OnnxPredictor, SklearnPredictor
from mlops_site import storage
from predictions import model_cache
from predictions.model_cache import ModelArtifacts, ModelUnavailable, PredictorCache
from predictions.tests.helpers import trained_model
from predictions.validation import rows_validate


def artifacts_of(
    name: str = "cancer", *, version_id: int = 1, onnx: bool = True, **changes
) -> ModelArtifacts:
    model = trained_model(name)
    model.store()
    fields = {
        "version_id": version_id,
        "label": f"{name} v{version_id}",
        "feature_schema": model.feature_schema,
        "classes": model.classes,
        "skops_key": model.skops_key,
        "skops_sha256": model.skops_sha256,
        "onnx_key": model.onnx_key if onnx else "",
        "onnx_sha256": (model.onnx_sha256 or "") if onnx else "",
        "onnx_available": onnx,
    }
    return ModelArtifacts(**{**fields, **changes})


@pytest.fixture
def count_loads(monkeypatch):
    calls: list[int] = []
    original = model_cache.predictor_load

    def counting(artifacts):
        calls.append(artifacts.version_id)
        return original(artifacts)

    monkeypatch.setattr(model_cache, "predictor_load", counting)
    return calls


def test_it_loads_a_version_once_and_serves_it_from_memory_afterwards(count_loads):
    cache = PredictorCache()
    artifacts = artifacts_of()

    first = cache.get(artifacts)
    second = cache.get(artifacts)

    assert first is second
    assert count_loads == [1]
    assert cache.loads == 1


def test_it_keys_predictors_by_version_not_by_model(count_loads):
    cache = PredictorCache()

    one = cache.get(artifacts_of(version_id=1))
    two = cache.get(artifacts_of(version_id=2))

    assert one is not two
    assert count_loads == [1, 2]


def test_it_uses_onnxruntime_when_the_version_has_a_verified_onnx():
    predictor = PredictorCache().get(artifacts_of(onnx=True))

    assert isinstance(predictor, OnnxPredictor)


def test_it_uses_scikit_learn_when_there_is_no_verified_onnx():
    predictor = PredictorCache().get(artifacts_of(onnx=False))

    assert isinstance(predictor, SklearnPredictor)


def test_onnx_and_scikit_learn_predictors_agree_on_sample_rows():
    model = trained_model("mixed")
    rows = [*model.sample_rows, {"age": 40, "income": 48_000.0, "city": "Oslo"}]
    columns = rows_validate(rows=rows, feature_schema=model.feature_schema, max_rows=10).columns

    onnx_labels, onnx_proba = PredictorCache().get(artifacts_of("mixed", onnx=True)).predict_columns(columns)
    sk_labels, sk_proba = PredictorCache().get(artifacts_of("mixed", onnx=False)).predict_columns(columns)

    assert onnx_labels == sk_labels
    np.testing.assert_allclose(onnx_proba, sk_proba, atol=1e-4)


def test_the_onnx_path_for_one_row_builds_no_dataframe(monkeypatch):
    model = trained_model("mixed")
    onnx_predictor = PredictorCache().get(artifacts_of("mixed", onnx=True))
    sklearn_predictor = PredictorCache().get(artifacts_of("mixed", onnx=False))
    built: list[int] = []
    original_init = pd.DataFrame.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "__init__", counting_init)

    columns = rows_validate(
        rows=model.sample_rows[:1], feature_schema=model.feature_schema, max_rows=1
    ).columns
    onnx_predictor.predict_columns(columns)
    assert built == []
    # The counter works: the scikit-learn pipeline selects columns by name and needs a frame.
    sklearn_predictor.predict_columns(columns)
    assert built


def test_it_evicts_the_least_recently_used_version_beyond_its_size(count_loads):
    cache = PredictorCache(max_size=2)
    one, two, three = (artifacts_of(version_id=i, onnx=False) for i in (1, 2, 3))

    cache.get(one)
    cache.get(two)
    cache.get(one)
    cache.get(three)

    assert one in cache
    assert two not in cache
    assert len(cache) == 2
    cache.get(two)
    assert count_loads == [1, 2, 3, 2]


def test_concurrent_first_requests_for_a_version_load_it_once(monkeypatch):
    calls: list[int] = []
    original = model_cache.predictor_load

    def slow_load(artifacts):
        calls.append(artifacts.version_id)
        time.sleep(0.2)
        return original(artifacts)

    monkeypatch.setattr(model_cache, "predictor_load", slow_load)
    cache = PredictorCache()
    artifacts = artifacts_of()
    start = threading.Barrier(6)
    got: list[object] = []

    def request() -> None:
        start.wait()
        got.append(cache.get(artifacts))

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert calls == [1]
    assert len(got) == 6
    assert all(predictor is got[0] for predictor in got)


def test_it_refuses_a_skops_file_whose_checksum_does_not_match():
    artifacts = artifacts_of(onnx=False, skops_sha256="0" * 64)

    with pytest.raises(ModelUnavailable, match="checksum does not match"):
        PredictorCache().get(artifacts)


def test_it_names_a_model_file_missing_from_storage():
    artifacts = artifacts_of(onnx=False, skops_key="models/gone.skops")

    with pytest.raises(ModelUnavailable, match=r"skops file of cancer v1 is missing .*models/gone\.skops"):
        PredictorCache().get(artifacts)


def test_a_damaged_onnx_falls_back_to_the_skops_model():
    artifacts = artifacts_of(onnx=True)
    storage.delete(artifacts.onnx_key)
    storage.put_bytes(artifacts.onnx_key, b"not an onnx model")

    predictor = PredictorCache().get(artifacts)

    assert isinstance(predictor, SklearnPredictor)


def test_a_damaged_onnx_without_a_skops_file_is_unavailable():
    artifacts = artifacts_of(onnx=True, skops_key="", skops_sha256="", onnx_sha256="1" * 64)

    with pytest.raises(ModelUnavailable, match="cannot predict"):
        PredictorCache().get(artifacts)


def test_a_failed_load_is_not_cached_and_is_retried(count_loads):
    cache = PredictorCache()
    artifacts = artifacts_of(onnx=False)
    storage.delete(artifacts.skops_key)

    with pytest.raises(ModelUnavailable):
        cache.get(artifacts)
    trained_model("cancer").store()

    assert isinstance(cache.get(artifacts), SklearnPredictor)
    assert count_loads == [1, 1]
