"""Tests of reference profiles: made when a version is trained, and rebuilt for versions without one."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from ml import drift
from models_registry.models import ModelVersion
from training.tests.helpers import cancer_frame, dataset_upload, run_train, version_of


@pytest.fixture
def trained_version(staff) -> ModelVersion:
    dataset = dataset_upload(cancer_frame(200), name="cancer", target="diagnosis", user=staff)
    return version_of(run_train(dataset, model_name="cancer"))


@pytest.mark.django_db
def test_a_training_run_stores_the_reference_profile_of_its_training_rows(trained_version) -> None:
    profile = trained_version.reference_profile
    assert profile["format"] == drift.PROFILE_FORMAT
    split = trained_version.training_summary["split"]
    assert profile["rows"] == split["n_train"]
    assert [f["name"] for f in profile["features"]] == [c["name"] for c in trained_version.feature_schema]
    assert all(sum(f["counts"]) + f["missing"] == split["n_train"] for f in profile["features"])
    assert profile["prediction"]["categories"] == trained_version.classes
    assert sum(profile["prediction"]["counts"]) == split["n_test"]
    assert sum(profile["confidence"]["counts"]) == split["n_test"]


@pytest.mark.django_db
def test_the_command_rebuilds_a_missing_profile_equal_to_the_one_made_at_training(trained_version) -> None:
    made_at_training = trained_version.reference_profile
    ModelVersion.objects.filter(pk=trained_version.pk).update(reference_profile=None)

    call_command("reference_profiles_build")

    trained_version.refresh_from_db()
    rebuilt = dict(trained_version.reference_profile)
    assert rebuilt.pop("source") == "rebuilt"
    # The same rows in another order: only float sums and deviations may differ, in their last digits.
    sums = {"sums", "std"}
    for again, before in zip(rebuilt["features"], made_at_training["features"], strict=True):
        assert {k: v for k, v in again.items() if k not in sums} == {
            k: v for k, v in before.items() if k not in sums
        }
        assert again["std"] == pytest.approx(before["std"])
        assert again["sums"] == pytest.approx(before["sums"])
    assert rebuilt["prediction"] == made_at_training["prediction"]
    assert rebuilt["confidence"]["counts"] == made_at_training["confidence"]["counts"]
    assert rebuilt["confidence"]["correct"] == made_at_training["confidence"]["correct"]


@pytest.mark.django_db
def test_the_command_keeps_existing_profiles(trained_version, capsys) -> None:
    call_command("reference_profiles_build")
    assert "Built 0 reference profile(s)" in capsys.readouterr().out
