"""Input and output serializers of the registry and training API."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from models_registry.models import (
    MODEL_NAME_MAX_LENGTH,
    ModelVersion,
    RegisteredModel,
    Stage,
    Task,
    TrainingRun,
)


class RegisteredModelOutputSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    version_count = serializers.IntegerField(read_only=True)
    latest_version = serializers.IntegerField(read_only=True, allow_null=True)
    production_version = serializers.IntegerField(read_only=True, allow_null=True)
    min_metrics = serializers.DictField(
        child=serializers.DictField(child=serializers.FloatField()),
        help_text='Quality gate: {"accuracy": {"min": 0.8}, "rmse": {"max": 3.0}}.',
    )
    versions_url = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = [
            "name",
            "description",
            "task",
            "target_column",
            "min_metrics",
            "version_count",
            "latest_version",
            "production_version",
            "created_by",
            "created_at",
            "versions_url",
        ]

    def get_versions_url(self, obj: RegisteredModel) -> str:
        return reverse(
            "model-version-list", kwargs={"model_name": obj.name}, request=self.context.get("request")
        )


class RegisteredModelInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=MODEL_NAME_MAX_LENGTH)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    task = serializers.ChoiceField(choices=Task.choices, required=False, allow_blank=True, default="")
    target_column = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)
    min_metrics = serializers.JSONField(
        required=False,
        default=dict,
        help_text='Thresholds per metric: a plain number ({"accuracy": 0.8, "rmse": 3}) takes the '
        "metric's direction (minimum for scores, maximum for errors).",
    )


class DatasetVersionRefSerializer(serializers.Serializer):
    dataset = serializers.CharField()
    version = serializers.IntegerField()
    sha256 = serializers.CharField()


class ModelVersionOutputSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    dataset_version = serializers.SerializerMethodField()
    training_run = serializers.PrimaryKeyRelatedField(read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "version",
            "stage",
            "source",
            "task",
            "algorithm",
            "params",
            "seed",
            "target_column",
            "classes",
            "feature_schema",
            "metrics",
            "dataset_version",
            "training_run",
            "mlflow_run_id",
            "mlflow_version",
            "skops_sha256",
            "onnx_status",
            "onnx_reason",
            "onnx_sha256",
            "created_by",
            "created_at",
            "url",
        ]

    @extend_schema_field(DatasetVersionRefSerializer(allow_null=True))
    def get_dataset_version(self, obj: ModelVersion) -> dict[str, Any] | None:
        found = obj.dataset_version
        if found is None:
            return None
        return {"dataset": found.dataset.name, "version": found.version, "sha256": found.sha256}

    def get_url(self, obj: ModelVersion) -> str:
        return reverse(
            "model-version-detail",
            kwargs={"model_name": obj.registered_model.name, "version": obj.version},
            request=self.context.get("request"),
        )


class TransitionInputSerializer(serializers.Serializer):
    to_stage = serializers.ChoiceField(choices=[Stage.STAGING, Stage.PRODUCTION, Stage.ARCHIVED])
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    force = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Promote to production although the quality gate refuses; needs a written reason (staff).",
    )


class RollbackInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class QualityGateRefusalSerializer(serializers.Serializer):
    detail = serializers.CharField()
    reasons = serializers.ListField(child=serializers.CharField())


class ModelUploadInputSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A skops (.skops) or ONNX (.onnx) file; pickle is refused.")
    task = serializers.ChoiceField(choices=Task.choices)
    feature_schema = serializers.CharField(
        help_text='JSON list of input columns: [{"name": "age", "kind": "numeric", "min": 18, "max": 90}, '
        '{"name": "city", "kind": "categorical", "categories": ["Paris"]}].'
    )
    classes = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="JSON list of class labels (classification)."
    )
    target_column = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)
    metrics = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text='JSON object of holdout metrics, e.g. {"accuracy": 0.9}.',
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name", read_only=True)
    dataset = serializers.CharField(source="dataset_version.dataset.name", read_only=True)
    dataset_version = serializers.IntegerField(source="dataset_version.version", read_only=True)
    model_version = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
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
        max_length=64, help_text="logistic_regression, random_forest, hist_gradient_boosting or ridge."
    )
    params = serializers.JSONField(
        required=False, default=dict, help_text="Hyperparameters as a JSON object."
    )
    target_column = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)
    task = serializers.ChoiceField(
        choices=Task.choices, required=False, allow_blank=True, default="", help_text="Empty: inferred."
    )
    seed = serializers.IntegerField(required=False, default=42, min_value=0)
    test_size = serializers.FloatField(required=False, default=0.2)
