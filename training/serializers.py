"""Input and output serializers of the training-run API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from datasets import selectors as dataset_selectors
from ml import catalogue
from ml.train import MAX_SEED, TEST_SIZE_MAX, TEST_SIZE_MIN
from mlops_site import errors
from models_registry.models import MODEL_NAME_MAX_LENGTH, ModelVersion, Task
from training.models import TrainingRun


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_name", read_only=True)
    dataset = serializers.CharField(source="dataset_version.dataset.name", read_only=True)
    dataset_version = serializers.IntegerField(source="dataset_version.version", read_only=True)
    model_version = serializers.SerializerMethodField()
    # Null once the account is deleted (SET_NULL) or for rows no user made.
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    duration_seconds = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "key",
            "status",
            "progress",
            "progress_message",
            "error_message",
            "model",
            "dataset",
            "dataset_version",
            "target_column",
            "task",
            "algorithm",
            "params",
            "seed",
            "test_size",
            "attempts",
            "mlflow_run_id",
            "model_version",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
        ]

    def get_model_version(self, obj: TrainingRun) -> int | None:
        try:
            return obj.model_version.version
        except ModelVersion.DoesNotExist:
            return None

    def get_duration_seconds(self, obj: TrainingRun) -> float | None:
        return None if obj.duration is None else round(obj.duration.total_seconds(), 3)


class TrainingRunInputSerializer(serializers.Serializer):
    dataset = serializers.CharField(help_text="Dataset name.")
    dataset_version = serializers.IntegerField(min_value=1, help_text="Version number of that dataset.")
    model_name = serializers.CharField(
        max_length=MODEL_NAME_MAX_LENGTH, help_text="A new name registers a new model."
    )
    algorithm = serializers.CharField(
        max_length=64,
        help_text=f"One of: {', '.join(sorted({a.key for a in catalogue.algorithm_list()}))}.",
    )
    params = serializers.JSONField(
        required=False, default=dict, help_text="Hyperparameters as a JSON object."
    )
    target_column = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)
    task = serializers.ChoiceField(
        choices=Task.choices, required=False, allow_blank=True, default="", help_text="Empty: inferred."
    )
    seed = serializers.IntegerField(required=False, default=42, min_value=0, max_value=MAX_SEED)
    test_size = serializers.FloatField(
        required=False,
        default=0.2,
        min_value=TEST_SIZE_MIN,
        max_value=TEST_SIZE_MAX,
        help_text=f"The holdout share, from {TEST_SIZE_MIN} to {TEST_SIZE_MAX}.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Parsing a reference into the row it names, as the page's choice field does.
        found = (
            dataset_selectors.dataset_version_list(dataset_name=attrs["dataset"])
            .filter(version=attrs["dataset_version"])
            .first()
        )
        if found is None:
            name, number = attrs["dataset"], attrs["dataset_version"]
            # Well-formed but naming nothing: the referenced version is not found, as in its own URL.
            message = f"Dataset {name!r} has no version {number}."
            raise errors.NotFound(message, errors=[errors.problem(message, field="dataset_version")])
        attrs["dataset_version"] = found
        return attrs
