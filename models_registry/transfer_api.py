"""The transfer API (staff): download a version's export archive, and import one made on another site."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

from django.http import HttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mlops_site import errors
from models_registry import mlflow_gateway, selectors, transfer
from models_registry.serializers import ModelVersionOutputSerializer

ARCHIVE_CONTENT_TYPES = {"tar": "application/x-tar", "tar.gz": "application/gzip", "zip": "application/zip"}
ARCHIVE_EXTENSIONS = {"tar": "tar", "tar.gz": "tar.gz", "zip": "zip"}


class ArchiveFormatNegotiation(DefaultContentNegotiation):
    """DRF reads ?format= as a renderer's name; here it picks the archive kind, so it is not read."""

    settings = SimpleNamespace(URL_FORMAT_OVERRIDE=None)


class ModelExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(
        choices=list(transfer.ARCHIVE_KINDS), required=False, default="tar", help_text="The archive kind."
    )
    with_dataset = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Also carry the dataset version the model was trained on (dataset.csv).",
    )


class ModelImportInputSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="A .tar, .tar.gz, .tgz or .zip archive made by an export on another site."
    )


class ModelVersionExportView(APIView):
    """GET /api/models/{name}/versions/{version}/export/: the version as one archive (staff)."""

    permission_classes = [permissions.IsAdminUser]
    content_negotiation_class = ArchiveFormatNegotiation

    @extend_schema(
        operation_id="models_versions_export",
        summary="Download a version as an archive another site imports (staff)",
        description="The archive holds manifest.json (the version's fields, its lineage and the sha256 of "
        "every other member), model.skops and/or model.onnx, and with with_dataset dataset.csv. Every file "
        "is read back from storage and checked against its recorded sha256 first.",
        parameters=[
            OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH),
            OpenApiParameter("version", OpenApiTypes.INT, OpenApiParameter.PATH),
            ModelExportQuerySerializer,
        ],
        responses={
            (200, "application/x-tar"): OpenApiResponse(OpenApiTypes.BINARY, description="The archive."),
            (200, "application/gzip"): OpenApiResponse(OpenApiTypes.BINARY, description="The archive."),
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The archive."),
            400: OpenApiResponse(description="An unknown format, or a bad with_dataset."),
            409: OpenApiResponse(
                description="A stored file is missing or no longer matches its sha256, or with_dataset "
                "for a version that records no dataset version (code export_refused)."
            ),
            503: OpenApiResponse(description="Object storage is unavailable."),
        },
    )
    def get(self, request: Request, name: str, version: int) -> HttpResponse:
        query = ModelExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        kind, with_dataset = query.validated_data["format"], query.validated_data["with_dataset"]
        found = selectors.model_version_get(model_name=name, version=version)
        buffer = io.BytesIO()
        try:
            transfer.model_version_export(
                model_version=found, output=buffer, archive_kind=kind, with_dataset=with_dataset
            )
        except transfer.ExportRefused as exc:
            raise errors.Conflict(" ".join(exc.messages), code="export_refused") from None
        response = HttpResponse(buffer.getvalue(), content_type=ARCHIVE_CONTENT_TYPES[kind])
        response["Content-Disposition"] = content_disposition_header(
            as_attachment=True, filename=f"{name}-v{version}.{ARCHIVE_EXTENSIONS[kind]}"
        )
        return response


class ModelVersionImportView(APIView):
    """POST /api/models/{name}/import/: an archive from another site as the next version of {name} (staff)."""

    permission_classes = [permissions.IsAdminUser]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="models_import",
        summary="Import a version archive made on another site as the next version of a model (staff)",
        description="Everything is checked before anything is written: the members (no paths, links or "
        "extra files) and their sizes, the manifest's format and types, every sha256, and the model files "
        "(skops with this site's trusted types only, ONNX checked, both predicting alike). The version "
        "starts in stage none; importing the same archive again answers 200 with the version it became.",
        parameters=[OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH)],
        request={"multipart/form-data": ModelImportInputSerializer},
        responses={
            201: ModelVersionOutputSerializer,
            200: OpenApiResponse(
                ModelVersionOutputSerializer, description="The archive was imported before: that version."
            ),
            400: OpenApiResponse(
                description="The archive was refused: `errors` names every problem. Nothing was imported."
            ),
            413: OpenApiResponse(description="The archive, or a member of it, is over its size limit."),
            503: OpenApiResponse(
                description="Object storage or MLflow is unavailable, or MLflow refused the registration "
                "(code mlflow_refused); nothing was imported."
            ),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        body = ModelImportInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        upload = body.validated_data["file"]
        limit = transfer.archive_max_bytes()
        if upload.size > limit:
            raise errors.TooLarge(
                f"The archive is {upload.size} bytes; at most {limit} bytes are read. Nothing was imported."
            )
        try:
            result = transfer.model_version_import(archive=upload, created_by=request.user, name=name)
        except transfer.ArchiveTooLarge as exc:
            raise errors.TooLarge(" ".join(exc.messages)) from None
        except mlflow_gateway.RegistryError as exc:
            if isinstance(exc, mlflow_gateway.RegistryUnavailable):
                raise
            # MLflow refused the registration itself: retrying the same archive will not help.
            raise errors.ServiceUnavailable(
                f"MLflow refused the registration, nothing was imported: {exc}",
                code="mlflow_refused",
                retry_after=None,
            ) from None
        found = selectors.model_version_get(
            model_name=result.model_version.registered_model.name, version=result.model_version.version
        )
        answer: dict[str, Any] = ModelVersionOutputSerializer(found, context={"request": request}).data
        return Response(answer, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)
