"""Admin pages of the monitoring app."""

from django.contrib import admin

from monitoring.models import WorkerHeartbeat


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["hostname", "last_seen"]
    search_fields = ["hostname"]
    readonly_fields = ["hostname", "last_seen"]
