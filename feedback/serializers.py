"""Input and output shapes of the feedback API; the services check every value."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from feedback import services
from feedback.models import Feedback, FeedbackChange

OUTCOME_HELP = (
    "Classification: 'correct' (true/false) and/or 'true_label' (one of the version's classes). "
    "Regression: 'true_value' (a number); 'correct': true alone means the prediction was exact."
)


class OutcomeInputSerializer(serializers.Serializer):
    """One outcome; its values keep their JSON types so the service can name a wrong type."""

    correct = serializers.BooleanField(required=False, allow_null=True, help_text="Was the prediction right?")
    true_label = serializers.JSONField(required=False, help_text="The true class (classification).")
    true_value = serializers.JSONField(required=False, help_text="The observed number (regression).")
    comment = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, help_text="At most 1000 characters."
    )


class BulkItemSerializer(OutcomeInputSerializer):
    prediction = serializers.IntegerField(required=False, help_text="Our id of the prediction.")
    model = serializers.CharField(required=False, help_text="With 'key': the registered model's name.")
    key = serializers.CharField(required=False, help_text="With 'model': your key sent when predicting.")
    batch_job = serializers.UUIDField(required=False, help_text="With 'row': the batch job's id.")
    row = serializers.IntegerField(required=False, help_text="With 'batch_job': the row of its file, from 1.")


class BulkInputSerializer(serializers.Serializer):
    items = serializers.ListField(child=serializers.JSONField(), help_text="Objects like BulkItem.")


class ChangeOutputSerializer(serializers.ModelSerializer):
    changed_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = FeedbackChange
        fields = ["changed_at", "changed_by", "source", "old", "new"]


class FeedbackOutputSerializer(serializers.ModelSerializer):
    prediction = serializers.IntegerField(source="prediction_id")
    labelled_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Feedback
        fields = [
            "prediction",
            "correct",
            "true_label",
            "true_value",
            "comment",
            "source",
            "labelled_by",
            "created_at",
            "updated_at",
        ]


class FeedbackDetailOutputSerializer(FeedbackOutputSerializer):
    history = ChangeOutputSerializer(source="changes", many=True, read_only=True)

    class Meta(FeedbackOutputSerializer.Meta):
        fields = [*FeedbackOutputSerializer.Meta.fields, "history"]


class GivenOutputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=services.STORED_STATUSES,
        help_text="unchanged: the same outcome was already stored (idempotent).",
    )
    feedback = FeedbackOutputSerializer()


class BulkResultSerializer(serializers.Serializer):
    row = serializers.IntegerField(help_text="The item's position, from 1.")
    prediction = serializers.IntegerField()
    status = serializers.ChoiceField(choices=services.STORED_STATUSES)


class BulkOutputSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    results = BulkResultSerializer(many=True)


class IntervalField(serializers.ListField):
    child = serializers.FloatField()


class LiveOutputSerializer(serializers.Serializer):
    """Live figures; which appear depends on the task."""

    n = serializers.IntegerField(help_text="Labelled predictions in the window.")
    correct = serializers.IntegerField(required=False)
    accuracy = serializers.FloatField(required=False, allow_null=True)
    accuracy_interval = IntervalField(
        required=False, allow_null=True, help_text="95% Wilson interval of the accuracy: [low, high]."
    )
    f1_macro = serializers.FloatField(required=False, allow_null=True)
    per_class = serializers.ListField(child=serializers.DictField(), required=False)
    unknown_true_class = serializers.IntegerField(
        required=False, help_text="Marked wrong without naming the true class."
    )
    confusion = serializers.DictField(
        required=False, help_text="{labels, matrix}: rows are predicted classes, columns true classes."
    )
    mae = serializers.FloatField(required=False, allow_null=True)
    rmse = serializers.FloatField(required=False, allow_null=True)
    coverage = serializers.DictField(
        allow_null=True, help_text="{labelled, predicted, ratio}; null for the 'last' window."
    )
    label_delay_median_seconds = serializers.FloatField(allow_null=True)


class VersionQualityOutputSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    stage = serializers.CharField()
    task = serializers.CharField()
    window = serializers.CharField()
    last_n = serializers.IntegerField(allow_null=True)
    holdout = serializers.DictField(help_text="The holdout metrics the live ones compare with.")
    live = LiveOutputSerializer()


class ModelQualityOutputSerializer(serializers.Serializer):
    model = serializers.CharField()
    versions = VersionQualityOutputSerializer(many=True)


def given(stored: Any) -> dict[str, Any]:
    return {"status": stored.status, "feedback": stored.feedback}
