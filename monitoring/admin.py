"""Admin pages of the monitoring app."""

from __future__ import annotations

import datetime as dt

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from mlops_site.admin import ReadOnlyAdmin
from monitoring.models import WorkerHeartbeat


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    """Rows only the heartbeat task writes: nobody adds or edits them.

    Deleting stays possible for whoever holds the delete permission (superusers): a worker that was
    replaced (a new container, a new hostname) leaves a row that never moves again, and its age keeps
    /readyz listing it and the MLOpsWorkerDown alert firing. A live worker's row deleted by mistake comes
    back with its next heartbeat, within a minute.
    """

    list_display = ["hostname", "last_seen", "age"]
    search_fields = ["hostname"]

    @admin.display(description="Age", ordering="-last_seen")
    def age(self, beat: WorkerHeartbeat) -> str:
        seconds = max(0, int((timezone.now() - beat.last_seen).total_seconds()))
        return f"{dt.timedelta(seconds=seconds)} ago"

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return admin.ModelAdmin.has_delete_permission(self, request, obj)
