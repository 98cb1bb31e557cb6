"""Input and output shapes of the feedback import API; the service checks the file and the model."""

from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from feedback.imports import services as import_services
from feedback.models import FeedbackImport


class FeedbackImportInputSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="A UTF-8 CSV file with a header row: prediction_id, key (with 'model') or batch_job and "
        "row; true_label or true_value; optionally correct and comment."
    )
    model = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="The registered model: required for a file of keys; with ids or batch rows, rows of "
        "other models are refused.",
    )


class FeedbackImportSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    model = serializers.SlugRelatedField(
        source="registered_model", slug_field="name", read_only=True, allow_null=True
    )
    # Null once the account is deleted (SET_NULL).
    user = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    progress = serializers.IntegerField(help_text="Percent; 100 only once succeeded.")
    errors_url = serializers.SerializerMethodField(
        help_text="The errors file (row, field, code, message), once succeeded with a failed row; else null."
    )

    class Meta:
        model = FeedbackImport
        fields = [
            "id",
            "url",
            "model",
            "user",
            "status",
            "original_filename",
            "input_size_bytes",
            "rows_total",
            "rows_done",
            "rows_failed",
            "rows_created",
            "rows_updated",
            "rows_unchanged",
            "progress",
            "error_message",
            "errors_url",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def _absolute(self, name: str, job: FeedbackImport) -> str:
        path = reverse(name, args=[job.uuid])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def get_url(self, job: FeedbackImport) -> str:
        return self._absolute("api-feedback-import-detail", job)

    def get_errors_url(self, job: FeedbackImport) -> str | None:
        if not import_services.errors_file_ready(job):
            return None
        return self._absolute("api-feedback-import-errors", job)
