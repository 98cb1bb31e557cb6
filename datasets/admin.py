"""Django admin for datasets and their versions; versions are read-only (uploads go through the service)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from datasets.models import Dataset, DatasetVersion
from mlops_site.admin import ReadOnlyAdmin, ReadOnlyInline


class ReadOnlyVersionInline(ReadOnlyInline):
    model = DatasetVersion
    fk_name = "dataset"
    fields = ["version", "row_count", "column_count", "size", "sha256", "created_by", "created_at"]
    readonly_fields = fields
    show_change_link = True
    ordering = ["-version"]

    @admin.display(description="Size")
    def size(self, obj: DatasetVersion) -> str:
        return filesizeformat(obj.size_bytes)


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "target_column", "version_count", "created_by", "created_at"]
    list_select_related = ["created_by"]
    search_fields = ["name", "description"]
    readonly_fields = ["name", "created_by", "created_at"]
    fields = ["name", "description", "target_column", "created_by", "created_at"]
    inlines = [ReadOnlyVersionInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dataset]:
        return super().get_queryset(request).annotate(version_total=Count("versions"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A dataset only exists together with its first uploaded file: use the upload page.
        return False

    @admin.display(description="Versions", ordering="version_total")
    def version_count(self, obj: Dataset) -> int:
        return obj.version_total


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    list_display = [
        "__str__",
        "dataset",
        "version",
        "row_count",
        "column_count",
        "size",
        "short_sha256",
        "created_by",
        "created_at",
    ]
    list_select_related = ["dataset", "created_by"]
    list_filter = ["dataset"]
    search_fields = ["dataset__name", "sha256", "original_filename"]
    ordering = ["dataset__name", "-version"]
    fields = [
        "dataset",
        "version",
        "target",
        "parent",
        "row_count",
        "column_count",
        "size",
        "sha256",
        "object_key",
        "original_filename",
        "created_by",
        "created_at",
        "schema_table",
        "page_link",
    ]
    readonly_fields = fields

    @admin.display(description="Size", ordering="size_bytes")
    def size(self, obj: DatasetVersion) -> str:
        return filesizeformat(obj.size_bytes)

    @admin.display(description="SHA-256")
    def short_sha256(self, obj: DatasetVersion) -> str:
        return obj.sha256[:12]

    @admin.display(description="Target column")
    def target(self, obj: DatasetVersion) -> str:
        return obj.target_column

    @admin.display(description="Page")
    def page_link(self, obj: DatasetVersion) -> SafeString:
        url = reverse("datasets:version-detail", args=[obj.dataset.name, obj.version])
        return format_html('<a href="{}">Open the version page</a>', url)

    @admin.display(description="Schema")
    def schema_table(self, obj: DatasetVersion) -> SafeString:
        rows = format_html_join(
            "",
            "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    column["name"],
                    " (target)" if column["is_target"] else "",
                    column["kind"],
                    column["dtype"],
                    "—" if column["missing_percent"] is None else f"{column['missing_percent']}%",
                )
                for column in obj.columns
            ),
        )
        return format_html(
            "<table><thead><tr><th>Column</th><th>Kind</th><th>Type</th><th>Missing</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )
