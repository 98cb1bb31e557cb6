"""Triton from the pages and the API (staff): download a version as a Triton model repository (.tar.gz),
and opt a model in to (or out of) serving its production version with the Triton at TRITON_URL.

The archive's root is the repository: `<model>/config.pbtxt` and `<model>/<version>/model.onnx` (and
`model.py` with backend=python). Extract it into Triton's model repository folder and load the model.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_http_methods
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import parsers, permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mlops_site import errors, pages
from mlops_site.pages import staff_required
from models_registry import selectors
from models_registry.triton import deployment, model_config, services

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

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # DRF reads an empty query parameter as an absent one (its default); say it is empty instead.
        empty = [name for name in self.fields if self.initial_data.get(name) == ""]
        if empty:
            raise serializers.ValidationError(dict.fromkeys(empty, "Empty: give a value, or leave it out."))
        return attrs


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


# --- Serving with Triton ------------------------------------------------------------------------------
def _state_message(name: str, state: deployment.TritonState) -> str:
    if not state.serve_with_triton:
        return f"{name} is served in-process; Triton unloads it shortly."
    if not state.configured:
        return f"{name} is opted in to Triton, but TRITON_URL is empty: it is served in-process."
    return f"{name} is opted in to Triton: its production version is loaded there shortly."


@require_http_methods(["GET", "POST"])
@staff_required
@pages.domain_errors
def model_triton(request: HttpRequest, name: str) -> HttpResponse:
    """The model's Triton page: what Triton serves, and the opt-in switch."""
    registered = selectors.registered_model_get(name=name)
    if request.method == "POST":
        enabled = request.POST.get("serve_with_triton") in ("on", "true", "1")
        deployment.triton_serving_set(registered_model=registered, enabled=enabled)
        messages.success(request, _state_message(name, deployment.triton_state(registered_model=registered)))
        return redirect(reverse("registry:model-triton", args=[name]))
    return render(
        request,
        "models_registry/model_triton.html",
        {"model": registered, "triton": deployment.triton_state(registered_model=registered)},
    )


class JsonBooleanField(serializers.BooleanField):
    """true or false, nothing else: DRF's BooleanField also takes 0, 1, "yes" and "off"."""

    def to_internal_value(self, data: object) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class TritonServingSerializer(serializers.Serializer):
    serve_with_triton = JsonBooleanField(
        help_text="Whether Triton serves the model's production version (loaded through its repository "
        "API after every promotion) and the API's predictions of it go through Triton."
    )
    configured = serializers.BooleanField(read_only=True, help_text="Whether TRITON_URL is set.")
    backend = serializers.CharField(read_only=True, help_text="TRITON_BACKEND: onnxruntime or python.")
    production_version = serializers.IntegerField(read_only=True, allow_null=True)
    triton_version = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="The version Triton was last seen serving (null: none)."
    )
    served_by_triton = serializers.BooleanField(
        read_only=True, help_text="Whether predictions of the production version go through Triton now."
    )
    synced_at = serializers.DateTimeField(read_only=True, allow_null=True)
    error = serializers.CharField(
        read_only=True, help_text="Why the last sync failed; empty when it did not."
    )


class TritonServingView(APIView):
    """GET/PUT /api/models/{name}/triton/: whether Triton serves the model (staff)."""

    permission_classes = [permissions.IsAdminUser]
    # JSON only: in a form, a missing checkbox reads as false, so an empty form would opt the model out.
    parser_classes = [parsers.JSONParser]

    @extend_schema(
        operation_id="models_triton_retrieve",
        summary="Whether Triton serves the model's production version (staff)",
        parameters=[OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={200: TritonServingSerializer, 404: OpenApiResponse(description="No such model.")},
    )
    def get(self, request: Request, name: str) -> Response:
        registered = selectors.registered_model_get(name=name)
        return Response(TritonServingSerializer(deployment.triton_state(registered_model=registered)).data)

    @extend_schema(
        operation_id="models_triton_update",
        summary="Opt the model in to, or out of, serving with Triton (staff)",
        description="Opted in, the model's production version is loaded into the Triton at TRITON_URL "
        "through its repository API once this commits, and after every promotion or rollback; opted out, "
        "it is unloaded. Predictions of the version Triton serves go through Triton, with the same "
        "validation, storage and latency split; they run in-process while Triton is loading or failing.",
        parameters=[OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH)],
        request=TritonServingSerializer,
        responses={
            200: TritonServingSerializer,
            400: OpenApiResponse(description="serve_with_triton missing or not a boolean."),
            404: OpenApiResponse(description="No such model."),
            415: OpenApiResponse(description="The body is not JSON."),
        },
    )
    def put(self, request: Request, name: str) -> Response:
        registered = selectors.registered_model_get(name=name)
        given = TritonServingSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        deployment.triton_serving_set(
            registered_model=registered, enabled=given.validated_data["serve_with_triton"]
        )
        return Response(TritonServingSerializer(deployment.triton_state(registered_model=registered)).data)
