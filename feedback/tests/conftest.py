"""Fixtures of the feedback tests: model versions of each kind in production and users who predicted."""

from __future__ import annotations

import pytest

from predictions.tests.helpers import make_model_version, trained_model
from tests.factories import make_user


@pytest.fixture
def cancer_v1(db):
    """Binary classification: version 1 of 'cancer' in production."""
    return make_model_version(trained=trained_model("cancer"), name="cancer", version=1)


@pytest.fixture
def iris_v1(db):
    """Three classes: version 1 of 'iris' in production."""
    return make_model_version(trained=trained_model("iris"), name="iris", version=1)


@pytest.fixture
def diabetes_v1(db):
    """Regression: version 1 of 'diabetes' in production."""
    return make_model_version(trained=trained_model("diabetes"), name="diabetes", version=1)


@pytest.fixture
def staff(db):
    """Named plainly: commands and files in these tests name the importing user."""
    return make_user("staff", staff=True)
