"""Read-only admin for outcomes, their history and file imports: only the services write them, so the
rollups of live quality stay equal to the rows."""

from __future__ import annotations

from django.contrib import admin

from feedback.models import Feedback, FeedbackChange, FeedbackImport
from mlops_site.admin import ReadOnlyAdmin, ReadOnlyInline


class FeedbackChangeInline(ReadOnlyInline):
    model = FeedbackChange
    fields = ["changed_at", "changed_by", "source", "old", "new"]
    readonly_fields = fields


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyAdmin):
    list_display = [
        "prediction_id",
        "model_version",
        "predicted_label",
        "predicted_value",
        "correct",
        "true_label",
        "true_value",
        "source",
        "labelled_by",
        "updated_at",
    ]
    list_filter = ["correct", "source", "updated_at"]
    list_select_related = ["model_version__registered_model", "labelled_by"]
    search_fields = ["=prediction__id", "labelled_by__username", "model_version__registered_model__name"]
    raw_id_fields = ["prediction", "model_version", "labelled_by"]
    date_hierarchy = "updated_at"
    inlines = [FeedbackChangeInline]


@admin.register(FeedbackImport)
class FeedbackImportAdmin(ReadOnlyAdmin):
    list_display = [
        "uuid",
        "original_filename",
        "registered_model",
        "user",
        "status",
        "rows_done",
        "rows_failed",
        "rows_created",
        "rows_updated",
        "attempts",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "created_at"]
    list_select_related = ["registered_model", "user"]
    search_fields = ["uuid", "original_filename", "user__username"]
    raw_id_fields = ["user", "registered_model"]
    date_hierarchy = "created_at"
