"""Serializers of the closed loop's API: policies, retrainings, their events, and Alertmanager's alerts."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from training.models import Retraining, RetrainingEvent, RetrainingPolicy, Window

#: Alerts one Alertmanager notification may carry (it groups alerts; thousands would be a misconfiguration).
MAX_ALERTS = 1000


class RetrainingPolicySerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name", read_only=True)
    updated_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    # Null until the policy is first saved (the defaults are shown before that).
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = RetrainingPolicy
        fields = [
            "model",
            "enabled",
            "metric",
            "threshold",
            "min_labels",
            "window",
            "last_n",
            "cooldown_minutes",
            "margin",
            "alpha",
            "auto_promote",
            "max_per_day",
            "recent_holdout_share",
            "recent_weight",
            "feedback_rows",
            "shadow_min_labels",
            "rollback_labels",
            "trigger_on_drift",
            "updated_by",
            "updated_at",
        ]
        read_only_fields = fields


class RetrainingPolicyInputSerializer(serializers.Serializer):
    """Every field optional: a PUT changes the fields it names (the service checks them all at once)."""

    enabled = serializers.BooleanField(required=False)
    metric = serializers.CharField(required=False, max_length=20)
    threshold = serializers.FloatField(required=False)
    min_labels = serializers.IntegerField(required=False)
    window = serializers.ChoiceField(choices=Window.choices, required=False)
    last_n = serializers.IntegerField(required=False)
    cooldown_minutes = serializers.IntegerField(required=False)
    margin = serializers.FloatField(required=False)
    alpha = serializers.FloatField(required=False)
    auto_promote = serializers.BooleanField(required=False)
    max_per_day = serializers.IntegerField(required=False)
    recent_holdout_share = serializers.FloatField(required=False)
    recent_weight = serializers.FloatField(required=False)
    feedback_rows = serializers.IntegerField(required=False)
    shadow_min_labels = serializers.IntegerField(required=False)
    rollback_labels = serializers.IntegerField(required=False)
    trigger_on_drift = serializers.BooleanField(required=False)


class RetrainingEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RetrainingEvent
        fields = ["id", "retraining", "kind", "message", "figures", "created_at"]
        read_only_fields = fields


class RetrainingSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name", read_only=True)
    champion = serializers.IntegerField(source="champion.version", read_only=True)
    challenger = serializers.IntegerField(source="challenger.version", read_only=True, allow_null=True)
    dataset_version = serializers.SerializerMethodField()
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Retraining
        fields = [
            "id",
            "model",
            "status",
            "step",
            "decision",
            "trigger",
            "reason",
            "requested_by",
            "champion",
            "challenger",
            "dataset_version",
            "training_run",
            "figures",
            "error_message",
            "created_at",
            "finished_at",
            "decided_at",
        ]
        read_only_fields = fields

    def get_dataset_version(self, retraining: Retraining) -> dict[str, Any] | None:
        version = retraining.dataset_version
        if version is None:
            return None
        return {"dataset": version.dataset.name, "version": version.version, "lineage": version.lineage}


class RetrainInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    # Replaces the champion's hyperparameters for this retraining (checked like a training run's).
    params = serializers.DictField(required=False, allow_empty=True)


class AlertSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["firing", "resolved"])
    labels = serializers.DictField(child=serializers.CharField(max_length=500, allow_blank=True))
    annotations = serializers.DictField(
        child=serializers.CharField(max_length=2000, allow_blank=True), required=False, default=dict
    )


class AlertmanagerInputSerializer(serializers.Serializer):
    """Alertmanager's webhook body (version 4); the fields the receiver does not need are ignored."""

    alerts = serializers.ListField(child=AlertSerializer(), max_length=MAX_ALERTS)


class AlertResultSerializer(serializers.Serializer):
    model = serializers.CharField()
    outcome = serializers.ChoiceField(
        choices=["started", "refused", "unknown_model", "resolved", "no_model_label"]
    )
    detail = serializers.CharField()
    retraining = serializers.IntegerField(allow_null=True)
