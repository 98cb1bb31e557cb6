"""Fixtures of the predictions tests: registered model versions (the root conftest empties the caches)."""

from __future__ import annotations

import pytest

from predictions.tests.helpers import make_model_version, trained_model


@pytest.fixture
def cancer_v1(db):
    """Version 1 of 'cancer' in production, with a verified ONNX file."""
    return make_model_version(trained=trained_model("cancer"), name="cancer", version=1)


@pytest.fixture
def mixed_v1(db):
    """Version 1 of 'mixed' (numeric and categorical features) in production."""
    return make_model_version(trained=trained_model("mixed"), name="mixed", version=1)


@pytest.fixture(autouse=True)
def _small_batch_chunks(settings):
    """Batch jobs cut files into chunks of 10 rows, so small test files still span several chunks."""
    settings.BATCH_CHUNK_ROWS = 10


@pytest.fixture
def new_batch_objects():
    """Returns a function listing the objects stored under batch/ since the test started.

    A function rather than a snapshot of an empty folder: the S3 bucket of a service run is shared by
    every test.
    """
    from predictions.tests.batch_helpers import storage_keys

    before = storage_keys()
    return lambda: storage_keys() - before
