"""Read-only admin for stored predictions, batch jobs and shadow scoring: records of what a model answered,
never edited.

Nor deleted here: the hourly counts and live-quality rollups are kept by the services that write rows,
and a delete from the admin would leave them counting rows that are gone.
"""

from __future__ import annotations

from django.contrib import admin

from mlops_site.admin import ReadOnlyAdmin
from predictions.models import (
    BatchPredictionJob,
    Prediction,
    PredictionRequest,
    ShadowBatch,
    ShadowPrediction,
)


@admin.register(PredictionRequest)
class PredictionRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "request_id",
        "model_version",
        "user",
        "channel",
        "stage",
        "n_rows",
        "latency_ms",
        "created_at",
    ]
    list_filter = ["channel", "created_at"]
    list_select_related = ["model_version__registered_model", "user"]
    search_fields = ["request_id", "user__username", "model_version__registered_model__name"]
    date_hierarchy = "created_at"


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = ["id", "model_version", "user", "channel", "prediction", "created_at"]
    list_filter = ["channel", "created_at"]
    list_select_related = ["model_version__registered_model", "user"]
    search_fields = ["request__request_id", "user__username", "model_version__registered_model__name"]
    raw_id_fields = ["request", "user", "model_version"]
    date_hierarchy = "created_at"


@admin.register(BatchPredictionJob)
class BatchPredictionJobAdmin(ReadOnlyAdmin):
    list_display = [
        "uuid",
        "original_filename",
        "model_version",
        "user",
        "status",
        "rows_done",
        "rows_failed",
        "store_predictions",
        "attempts",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "store_predictions", "created_at"]
    list_select_related = ["model_version__registered_model", "user"]
    search_fields = ["uuid", "original_filename", "user__username", "model_version__registered_model__name"]
    raw_id_fields = ["user", "registered_model", "model_version", "prediction_request"]
    date_hierarchy = "created_at"


@admin.register(ShadowBatch)
class ShadowBatchAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "registered_model",
        "champion",
        "challenger",
        "first_id",
        "last_id",
        "status",
        "rows_scored",
        "attempts",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "created_at"]
    list_select_related = ["registered_model", "champion__registered_model", "challenger__registered_model"]
    search_fields = ["registered_model__name"]
    raw_id_fields = ["registered_model", "champion", "challenger"]
    date_hierarchy = "created_at"


@admin.register(ShadowPrediction)
class ShadowPredictionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "prediction",
        "model_version",
        "champion",
        "prediction_value",
        "prediction_created_at",
    ]
    list_select_related = ["model_version__registered_model", "champion__registered_model"]
    search_fields = ["model_version__registered_model__name"]
    raw_id_fields = ["prediction", "model_version", "champion"]
    date_hierarchy = "prediction_created_at"
