"""Input and output serializers of the registry API."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from models_registry.models import (
    MODEL_NAME_MAX_LENGTH,
    ChallengerMode,
    ModelVersion,
    RegisteredModel,
    Stage,
    Task,
    model_name_validator,
)


class RegisteredModelOutputSerializer(serializers.ModelSerializer):
    # Null once the account is deleted (SET_NULL) or for rows no user made.
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
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
    # The pattern is in the schema so clients know it; the service checks it again (and reserved names).
    name = serializers.RegexField(
        r"^[a-z0-9][a-z0-9_-]*$",
        max_length=MODEL_NAME_MAX_LENGTH,
        error_messages={"invalid": model_name_validator.message},
    )
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
    # Null once the account is deleted (SET_NULL) or for rows no user made.
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    dataset_version = serializers.SerializerMethodField()
    # Null for an uploaded version, which no training run made.
    training_run = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
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
    force = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Roll back although the quality gate refuses the version; needs a written reason (staff).",
    )


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


class ChallengerInputSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=ChallengerMode.choices,
        help_text="off; shadow: the staging version (the challenger) scores every production prediction on "
        "a worker, never answering; canary: it answers canary_percent of production traffic, sticky by "
        "the row's key (else the user).",
    )
    canary_percent = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=100,
        help_text="Share of production traffic the canary answers (0 to 100; 0 rolls it back at once). "
        "Default: unchanged.",
    )


class ChallengerVersionSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    stage = serializers.CharField()
    algorithm = serializers.CharField()
    created_at = serializers.DateTimeField()


class ChallengerDaySerializer(serializers.Serializer):
    day = serializers.DateField(help_text="Day the predictions were made (site time zone).")
    n = serializers.IntegerField(help_text="Shared rows with an outcome that day.")
    champion = serializers.FloatField(help_text="Accuracy, or mean absolute error for regression.")
    champion_low = serializers.FloatField(allow_null=True, help_text="95% interval (Wilson for accuracy).")
    champion_high = serializers.FloatField(allow_null=True)
    challenger = serializers.FloatField()
    challenger_low = serializers.FloatField(allow_null=True)
    challenger_high = serializers.FloatField(allow_null=True)


class ChallengerComparisonSerializer(serializers.Serializer):
    task = serializers.CharField()
    test = serializers.ChoiceField(
        choices=["mcnemar", "wilcoxon"], help_text="McNemar (classification) or Wilcoxon (regression)."
    )
    n = serializers.IntegerField(help_text="Rows both scored that have an outcome.")
    champion_score = serializers.FloatField(allow_null=True)
    challenger_score = serializers.FloatField(allow_null=True)
    higher_is_better = serializers.BooleanField()
    p_value = serializers.FloatField(allow_null=True, help_text="Two-sided; null without shared rows.")
    champion_only = serializers.IntegerField(help_text="Rows only the champion got right (or nearer).")
    challenger_only = serializers.IntegerField(help_text="Rows only the challenger got right (or nearer).")
    improvement = serializers.FloatField(allow_null=True, help_text="Challenger better by (score units).")
    alpha = serializers.FloatField()
    significant = serializers.BooleanField()
    summary = serializers.CharField()
    excluded_unknown_class = serializers.IntegerField(
        help_text="Outcomes marked wrong without the true class, left out of the pairs."
    )
    days = ChallengerDaySerializer(many=True)


class ChallengerLiveSerializer(serializers.Serializer):
    champion = serializers.DictField(allow_null=True, help_text="Live quality of the production version.")
    challenger = serializers.DictField(
        allow_null=True, help_text="Live quality of the staging version: the rows it answered (canary)."
    )


class ChallengerOutputSerializer(serializers.Serializer):
    model = serializers.CharField(source="registered_model.name")
    mode = serializers.ChoiceField(choices=ChallengerMode.choices)
    canary_percent = serializers.IntegerField()
    since = serializers.DateTimeField(allow_null=True, help_text="When the current mode started.")
    active = serializers.BooleanField(help_text="The mode is on and both versions exist.")
    champion = ChallengerVersionSerializer(allow_null=True, help_text="The production version.")
    challenger = ChallengerVersionSerializer(allow_null=True, help_text="The newest staging version.")
    comparison = serializers.SerializerMethodField()
    live = ChallengerLiveSerializer()

    @extend_schema_field(ChallengerComparisonSerializer(allow_null=True))
    def get_comparison(self, state: Any) -> dict[str, Any] | None:
        return None if state.comparison is None else state.comparison.as_dict()
