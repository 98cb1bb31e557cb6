"""Download a version as a Triton model repository (.tar.gz), from the version page and the API (staff).

The archive's root is the repository: `<model>/config.pbtxt` and `<model>/<version>/model.onnx` (and
`model.py` with backend=python). Extract it into Triton's model repository folder and load the model.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from mlops_site import errors, pages
from mlops_site.pages import staff_required
from models_registry import selectors
from models_registry.triton import model_config, services

CONTENT_TYPE = "application/gzip"


class TritonExportQuerySerializer(serializers.Serializer):
    backend = serializers.ChoiceField(
        choices=[model_config.ONNX_BACKEND, model_config.PYTHON_BACKEND],
        required=False,
        default=model_config.ONNX_BACKEND,
        help_text="onnxruntime: Triton's ONNX Runtime backend. python: a model.py serving the same "
        "model.onnx with onnxruntime, for a Triton with only the Python backend.",
    )
    max_batch_size = serializers.IntegerField(
        required=False, default=model_config.DEFAULT_MAX_BATCH_SIZE, min_value=1, max_value=1 << 20
    )


def _archive_response(*, name: str, version: int, data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type=CONTENT_TYPE)
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=f"{name}-v{version}-triton.tar.gz"
    )
    return response


@require_GET
@staff_required
@pages.domain_errors
def version_triton_download(request: HttpRequest, name: str, version: int) -> HttpResponse:
    """The version page's "Triton repository" link; a refusal goes back to the page with its reason."""
    found = selectors.model_version_get(model_name=name, version=version)
    query = TritonExportQuerySerializer(data=request.GET)
    if not query.is_valid():
        raise errors.Invalid("; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in query.errors.items()))
    try:
        data = services.triton_repository_archive(model_version=found, **query.validated_data)
    except services.ExportRefused as exc:
        for message in exc.messages:
            messages.error(request, message)
        return redirect(reverse("registry:version-detail", args=[name, version]))
    return _archive_response(name=name, version=version, data=data)


class TritonRepositoryView(APIView):
    """GET /api/models/{name}/versions/{version}/triton/: the version as a Triton repository (staff)."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        operation_id="models_versions_triton",
        summary="Download a version as a Triton model repository, .tar.gz (staff)",
        description="The archive holds <model>/config.pbtxt for Triton's ONNX Runtime backend (inputs and "
        "outputs read from the ONNX graph, dynamic batching, a CPU instance group) and "
        "<model>/<version>/model.onnx with ZipMap outputs replaced by tensors. The config is parsed back "
        "and checked against the graph before it is sent.",
        parameters=[
            OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH),
            OpenApiParameter("version", OpenApiTypes.INT, OpenApiParameter.PATH),
            TritonExportQuerySerializer,
        ],
        responses={
            (200, CONTENT_TYPE): OpenApiResponse(OpenApiTypes.BINARY, description="The repository."),
            400: OpenApiResponse(description="An unknown backend or a bad max_batch_size."),
            404: OpenApiResponse(description="No such model version."),
            409: OpenApiResponse(
                description="The version has no usable ONNX file, its stored file no longer matches its "
                "sha256, or its graph cannot be served by Triton (code triton_export_refused)."
            ),
            503: OpenApiResponse(description="Object storage is unavailable."),
        },
    )
    def get(self, request: Request, name: str, version: int) -> HttpResponse:
        query = TritonExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        found = selectors.model_version_get(model_name=name, version=version)
        try:
            data = services.triton_repository_archive(model_version=found, **query.validated_data)
        except services.ExportRefused as exc:
            raise errors.Conflict(" ".join(exc.messages), code="triton_export_refused") from None
        return _archive_response(name=name, version=version, data=data)
