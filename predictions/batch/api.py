"""The batch prediction API: submit a CSV file for a model, follow one's jobs, download their files."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpResponseBase
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.fields import empty
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mlops_site import pagination
from predictions import selectors
from predictions.batch import services as batch_services
from predictions.batch import views as batch_views
from predictions.models import BatchPredictionJob


class _FormBoolean(serializers.BooleanField):
    """A boolean whose absence from a multipart form means its default, not false (DRF's HTML rule)."""

    default_empty_html = empty


class BatchSubmitSerializer(serializers.Serializer):
    """The form fields' shape; the service checks the options and the file itself."""

    file = serializers.FileField(help_text="A UTF-8 CSV file with a header row naming every feature.")
    version = serializers.IntegerField(
        required=False, help_text="Pin this version number (1, 2, ...); instead of stage."
    )
    # Text, not a choice: the service names the allowed stages, and a second enum of the same two stages
    # would leave drf-spectacular without a clean name for either.
    stage = serializers.CharField(
        required=False, help_text=f"One of: {', '.join(selectors.SERVABLE_STAGES)}. Default: production."
    )
    store_predictions = _FormBoolean(
        required=False,
        default=True,
        help_text="false: the result file is the only record of the rows (faster; they cannot get "
        "feedback, nor show in the prediction list). Default: true.",
    )


class BatchJobSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    model = serializers.CharField(source="model_version.registered_model.name")
    model_version = serializers.IntegerField(source="model_version.version")
    # Null once the account is deleted (SET_NULL) or for rows no user made.
    user = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    progress = serializers.IntegerField(help_text="Percent; 100 only once succeeded.")
    rows_predicted = serializers.IntegerField()
    url = serializers.SerializerMethodField()
    result_url = serializers.SerializerMethodField()
    errors_url = serializers.SerializerMethodField()

    class Meta:
        model = BatchPredictionJob
        fields = [
            "id",
            "url",
            "model",
            "model_version",
            "stage",
            "user",
            "status",
            "original_filename",
            "input_size_bytes",
            "rows_total",
            "rows_done",
            "rows_failed",
            "rows_predicted",
            "progress",
            "error_message",
            "store_predictions",
            "result_url",
            "errors_url",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def _absolute(self, name: str, job: BatchPredictionJob) -> str:
        path = reverse(name, args=[job.uuid])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def get_url(self, job: BatchPredictionJob) -> str:
        return self._absolute("api-batch-job-detail", job)

    def get_result_url(self, job: BatchPredictionJob) -> str | None:
        if job.status != BatchPredictionJob.Status.SUCCEEDED:
            return None
        return self._absolute("api-batch-job-result", job)

    def get_errors_url(self, job: BatchPredictionJob) -> str | None:
        if job.status != BatchPredictionJob.Status.SUCCEEDED:
            return None
        return self._absolute("api-batch-job-errors", job)


class ModelBatchView(APIView):
    """POST /api/models/{name}/batch/: any signed-in user; the file is checked before anything is stored."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="model_batch_submit",
        request={"multipart/form-data": BatchSubmitSerializer},
        responses={
            202: BatchJobSerializer,
            400: OpenApiResponse(description="Every problem with the file or options; nothing was stored."),
            404: OpenApiResponse(description="No such model or version."),
            409: OpenApiResponse(description="The model has no version in the requested stage."),
            503: OpenApiResponse(description="Object storage is unavailable."),
        },
        tags=["batch predictions"],
    )
    def post(self, request: Request, name: str) -> Response:
        options = BatchSubmitSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        data = options.validated_data
        job = batch_services.batch_prediction_start(
            registered_model_name=name,
            input_file=data["file"],
            filename=data["file"].name,
            requested_by=request.user,
            # Only what the client gave: the service applies the default and refuses version with stage.
            **{key: data[key] for key in ("version", "stage") if key in data},
            store_predictions=data["store_predictions"],
        )
        job = selectors.batch_job_get(user=request.user, job_uuid=job.uuid)
        body = BatchJobSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class BatchJobPagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


_download = extend_schema(
    responses={
        (200, "text/csv"): OpenApiTypes.BINARY,
        404: OpenApiResponse(description="No such job, or the file is missing."),
        409: OpenApiResponse(description="The job has not succeeded."),
        503: OpenApiResponse(description="Object storage is unavailable."),
    },
    tags=["batch predictions"],
)


@extend_schema_view(
    list=extend_schema(tags=["batch predictions"]),
    retrieve=extend_schema(tags=["batch predictions"]),
)
class BatchJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your batch jobs (staff: everyone's); another user's job answers 404, as if it did not exist."""

    serializer_class = BatchJobSerializer
    pagination_class = BatchJobPagination
    lookup_field = "uuid"
    lookup_url_kwarg = "job_uuid"
    lookup_value_regex = r"[0-9a-fA-F-]{32,36}"

    def get_queryset(self) -> QuerySet[BatchPredictionJob]:
        return selectors.batch_job_list(user=self.request.user)

    def get_object(self) -> BatchPredictionJob:
        return selectors.batch_job_get(user=self.request.user, job_uuid=self.kwargs["job_uuid"])

    @_download
    @action(detail=True, methods=["get"])
    def result(self, request: Request, job_uuid: str) -> HttpResponseBase:
        return batch_views.job_file_response(self.get_object(), batch_views.RESULT)

    @_download
    @action(detail=True, methods=["get"])
    def errors(self, request: Request, job_uuid: str) -> HttpResponseBase:
        return batch_views.job_file_response(self.get_object(), batch_views.ERRORS)
