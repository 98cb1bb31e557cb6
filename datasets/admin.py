"""Django admin for datasets and their versions; versions are read-only (uploads go through the service).

Deleting goes through the datasets services too: what something uses is refused, naming what uses it, and
the stored files are removed after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from datasets import selectors, services
from datasets.models import Dataset, DatasetVersion
from mlops_site import errors
from mlops_site.admin import ReadOnlyAdmin, ReadOnlyInline


class _Refused(Exception):
    """A deletion the service refused on the delete page: rolls back the page's log entry."""


class ServiceDeletionAdmin(admin.ModelAdmin):
    """Deletion through a datasets service, for the delete page and the "delete selected" action.

    Django's own deletion refuses anything a PROTECT relation holds and asks for the delete permission of
    every related admin, so it refused every dataset. Here a row is refused only when something outside it
    uses its data (named in the refusal); the action deletes the others.
    """

    def _versions_of(self, obj: Any) -> list[DatasetVersion]:
        raise NotImplementedError

    def _service_delete(self, obj: Any) -> None:
        raise NotImplementedError

    def _refusal(self, obj: Any) -> str:
        versions = self._versions_of(obj)
        references = selectors.dataset_version_references(versions=versions, among=versions)
        return selectors.deletion_refusal(label=str(obj), references=references)

    def get_deleted_objects(
        self, objs: Iterable[Any], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[str]]:
        """What the delete page lists; what uses the data is listed as the protected objects."""
        rows = list(objs)
        to_delete: list[Any] = []
        for obj in rows:
            to_delete += [str(obj), [str(version) for version in self._versions_of(obj) if version != obj]]
        options = self.model._meta
        allowed = self.has_delete_permission(request)
        perms_needed = set() if allowed else {str(options.verbose_name)}
        protected = [refusal for refusal in (self._refusal(obj) for obj in rows) if refusal]
        return to_delete, {str(options.verbose_name_plural): len(rows)}, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        try:
            self._service_delete(obj)
        except (services.DatasetInUse, errors.NotFound) as exc:
            # Something started using the data after the page was shown.
            raise _Refused(exc.detail) from exc

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except _Refused as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.path)

    @admin.action(description="Delete selected %(verbose_name_plural)s", permissions=["delete"])
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        """A confirmation page listing what goes and what is refused; then deletes what it may."""
        rows = list(queryset)
        refusals = {obj.pk: self._refusal(obj) for obj in rows}
        if request.POST.get("post") != "yes":
            options = self.model._meta
            return TemplateResponse(
                request,
                "datasets/admin_delete_selected.html",
                {
                    **self.admin_site.each_context(request),
                    "title": f"Delete {options.verbose_name_plural}",
                    "opts": options,
                    "deletable": [
                        (obj, [str(v) for v in self._versions_of(obj) if v != obj])
                        for obj in rows
                        if not refusals[obj.pk]
                    ],
                    "refused": [refusal for refusal in refusals.values() if refusal],
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                },
            )
        deleted = []
        for obj in rows:
            try:
                self._service_delete(obj)
            except (services.DatasetInUse, errors.NotFound) as exc:
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                deleted.append(str(obj))
        if deleted:
            self.message_user(request, f"Deleted {', '.join(deleted)}.", messages.SUCCESS)
        return None


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
class DatasetAdmin(ServiceDeletionAdmin):
    actions = ["delete_selected"]
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

    def _versions_of(self, obj: Dataset) -> list[DatasetVersion]:
        return list(obj.versions.select_related("dataset").order_by("version"))

    def _service_delete(self, obj: Dataset) -> None:
        services.dataset_delete(dataset=obj)


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ServiceDeletionAdmin, ReadOnlyAdmin):
    actions = ["delete_selected"]
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

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # Read-only otherwise: deletion goes through the service, which refuses what something uses.
        return admin.ModelAdmin.has_delete_permission(self, request, obj)

    def _versions_of(self, obj: DatasetVersion) -> list[DatasetVersion]:
        return [obj]

    def _service_delete(self, obj: DatasetVersion) -> None:
        services.dataset_version_delete(version=obj)

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
