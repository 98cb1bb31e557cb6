"""The feedback API: outcomes of one prediction or many, and live quality per model version."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback import selectors, serializers, services
from feedback.models import Source
from mlops_site import parsers
from models_registry import selectors as registry_selectors
from predictions import selectors as prediction_selectors

WINDOW_PARAMETERS = [
    OpenApiParameter(
        "window",
        OpenApiTypes.STR,
        enum=list(selectors.WINDOWS),
        description="all (default), last (the last N labelled predictions), 24h or 7d (by prediction time, "
        "whole hours).",
    ),
    OpenApiParameter(
        "last",
        {"type": "integer", "minimum": 1, "maximum": selectors.LAST_N_MAX},
        description=f"N for window=last: 1 to {selectors.LAST_N_MAX}.",
    ),
]


class PredictionFeedbackView(APIView):
    """GET or POST /api/predictions/{id}/feedback/: your own predictions (staff: any)."""

    parser_classes = [parsers.JSONParser]

    @extend_schema(
        operation_id="prediction_feedback_get",
        responses={
            200: serializers.FeedbackDetailOutputSerializer,
            404: OpenApiResponse(description="No such prediction of yours, or no outcome given yet."),
        },
        tags=["feedback"],
    )
    def get(self, request: Request, prediction_id: int) -> Response:
        prediction = prediction_selectors.prediction_get(user=request.user, prediction_id=int(prediction_id))
        feedback = selectors.feedback_of(prediction=prediction)
        if feedback is None:
            raise services.PredictionNotFound("No outcome was given for this prediction yet.")
        return Response(serializers.FeedbackDetailOutputSerializer(feedback).data)

    @extend_schema(
        operation_id="prediction_feedback_give",
        request=serializers.OutcomeInputSerializer,
        responses={
            201: serializers.GivenOutputSerializer,
            200: OpenApiResponse(
                serializers.GivenOutputSerializer,
                description="Updated (the old outcome is kept in the history) or unchanged.",
            ),
            400: OpenApiResponse(description="Every problem by field; nothing was stored."),
            404: OpenApiResponse(description="No such prediction of yours."),
        },
        tags=["feedback"],
    )
    def post(self, request: Request, prediction_id: int) -> Response:
        stored = services.feedback_give(
            prediction_id=int(prediction_id), user=request.user, source=Source.API, data=request.data
        )
        return Response(
            serializers.GivenOutputSerializer(serializers.given(stored)).data,
            status=status.HTTP_201_CREATED if stored.status == "created" else status.HTTP_200_OK,
        )


class BulkFeedbackView(APIView):
    """POST /api/feedback/: outcomes of many predictions at once, all or nothing."""

    parser_classes = [parsers.JSONParser]

    @extend_schema(
        operation_id="feedback_bulk_give",
        request=serializers.BulkInputSerializer,
        responses={
            200: serializers.BulkOutputSerializer,
            400: OpenApiResponse(
                description="Every problem by item (row, from 1) and field; nothing stored."
            ),
        },
        tags=["feedback"],
    )
    def post(self, request: Request) -> Response:
        data = request.data
        if not isinstance(data, dict) or set(data) != {"items"}:
            raise services.FeedbackInvalid(
                [{"row": None, "field": "items", "code": "invalid", "message": 'Send {"items": [...]}.'}]
            )
        stored = services.feedback_give_many(items=data["items"], user=request.user, source=Source.API)
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        for item in stored:
            counts[item.status] += 1
        return Response(
            serializers.BulkOutputSerializer(
                {
                    **counts,
                    "results": [
                        {"row": row, "prediction": item.prediction_id, "status": item.status}
                        for row, item in enumerate(stored, start=1)
                    ],
                }
            ).data
        )


class ModelQualityView(APIView):
    """GET /api/models/{name}/quality/: live quality of every version of a model beside its holdout."""

    @extend_schema(
        operation_id="model_quality",
        parameters=WINDOW_PARAMETERS,
        responses={
            200: serializers.ModelQualityOutputSerializer,
            400: OpenApiResponse(description="An unknown window, or 'last' out of range."),
            404: OpenApiResponse(description="No such model."),
        },
        tags=["feedback"],
    )
    def get(self, request: Request, name: str) -> Response:
        model = selectors.registered_model_named(name=name)
        versions = selectors.model_quality(
            registered_model=model,
            window=request.query_params.get("window"),
            last_n=request.query_params.get("last"),
        )
        return Response(
            serializers.ModelQualityOutputSerializer({"model": model.name, "versions": versions}).data
        )


class VersionQualityView(APIView):
    """GET /api/models/{name}/versions/{version}/quality/: one version's live quality."""

    @extend_schema(
        operation_id="model_version_quality",
        parameters=WINDOW_PARAMETERS,
        responses={
            200: serializers.VersionQualityOutputSerializer,
            400: OpenApiResponse(description="An unknown window, or 'last' out of range."),
            404: OpenApiResponse(description="No such model or version."),
        },
        tags=["feedback"],
    )
    def get(self, request: Request, name: str, version: int) -> Response:
        found = registry_selectors.model_version_get(model_name=name, version=int(version))
        figures = selectors.version_quality(
            version=found, window=request.query_params.get("window"), last_n=request.query_params.get("last")
        )
        return Response(serializers.VersionQualityOutputSerializer(figures).data)
