"""The feedback import API (staff only): upload a CSV file of true outcomes, follow the imports, download
an import's errors file."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from feedback import selectors
from feedback.imports import services as import_services
from feedback.imports import views as import_views
from feedback.imports.serializers import FeedbackImportInputSerializer, FeedbackImportSerializer
from feedback.models import FeedbackImport
from mlops_site import pagination

TAGS = ["feedback imports"]


class FeedbackImportPagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


@extend_schema_view(list=extend_schema(tags=TAGS), retrieve=extend_schema(tags=TAGS))
class FeedbackImportViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Feedback imports: every staff member sees them all; others get 403."""

    permission_classes = [permissions.IsAdminUser]
    parser_classes = [MultiPartParser, FormParser]
    serializer_class = FeedbackImportSerializer
    pagination_class = FeedbackImportPagination
    lookup_field = "uuid"
    lookup_url_kwarg = "import_uuid"
    lookup_value_regex = r"[0-9a-fA-F-]{32,36}"

    def get_queryset(self) -> QuerySet[FeedbackImport]:
        return selectors.feedback_import_list(user=self.request.user)

    def get_object(self) -> FeedbackImport:
        return selectors.feedback_import_get(user=self.request.user, import_uuid=self.kwargs["import_uuid"])

    @extend_schema(
        operation_id="feedback_imports_create",
        description="Upload a CSV file of true outcomes (staff only). The file's size, encoding and header "
        "are checked before anything is stored; a worker then checks every row and stores the valid ones. "
        "Follow the import at `url`.",
        request={"multipart/form-data": FeedbackImportInputSerializer},
        responses={
            202: FeedbackImportSerializer,
            400: OpenApiResponse(description="Every problem with the file or the model; nothing was stored."),
            503: OpenApiResponse(description="Object storage is unavailable."),
        },
        tags=TAGS,
    )
    def create(self, request: Request) -> Response:
        given = FeedbackImportInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        job = import_services.feedback_import_start(
            user=request.user,
            file=given.validated_data["file"],
            filename=given.validated_data["file"].name,
            registered_model_name=given.validated_data.get("model") or None,
        )
        job = selectors.feedback_import_get(user=request.user, import_uuid=job.uuid)
        body = FeedbackImportSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @extend_schema(
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="No such import, or the file is missing."),
            409: OpenApiResponse(description="The import has not succeeded, or no row failed."),
            503: OpenApiResponse(description="Object storage is unavailable."),
        },
        tags=TAGS,
    )
    @action(detail=True, methods=["get"])
    def errors(self, request: Request, import_uuid: str) -> HttpResponseBase:
        """The errors file: row (data rows from 1, the header not counted), field, code, message."""
        return import_views.errors_file_response(self.get_object())
