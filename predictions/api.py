"""The predictions API: predict with a registered model, and read one's own stored predictions."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from models_registry.models import Stage
from predictions import model_cache, selectors, services
from predictions.errors import ModelNotFound, NoVersionInStage
from predictions.forms import PredictionFilterForm
from predictions.models import Channel, Prediction
from predictions.validation import RowsInvalid

REQUEST_ID_HEADER = "X-Request-ID"
_BODY_KEYS = {"rows", "inputs", "version", "stage", "request_id"}


class LenientJSONParser(JSONParser):
    """Accepts NaN and Infinity literals, so validation can name the row and field that holds them."""

    strict = False


class PredictInputSerializer(serializers.Serializer):
    """For the API docs only: the body is checked by hand so every problem is reported per row and field."""

    rows = serializers.ListField(
        child=serializers.DictField(), required=False, help_text="Rows of {feature: value}."
    )
    inputs = serializers.DictField(required=False, help_text="One row of {feature: value}, instead of rows.")
    version = serializers.IntegerField(required=False, min_value=1, help_text="Pin this version number.")
    stage = serializers.ChoiceField(
        choices=list(selectors.SERVABLE_STAGES), required=False, help_text="Default: production."
    )
    request_id = serializers.CharField(
        required=False, max_length=64, help_text=f"Your id for this call; also read from {REQUEST_ID_HEADER}."
    )


class RowPredictionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    prediction = serializers.JSONField()
    probabilities = serializers.DictField(child=serializers.FloatField(), allow_null=True)
    warnings = serializers.ListField(child=serializers.DictField())


class PredictOutputSerializer(serializers.Serializer):
    model = serializers.CharField()
    model_version = serializers.IntegerField()
    stage = serializers.CharField(help_text="The version's stage now.")
    request_id = serializers.CharField()
    predictions = RowPredictionSerializer(many=True)


class RowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(allow_null=True, help_text="Position in `rows`, from 0.")
    field = serializers.CharField(allow_null=True)
    code = serializers.CharField()
    message = serializers.CharField()


class PredictErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = RowErrorSerializer(many=True, required=False)


def _body_error(field: str | None, message: str) -> RowsInvalid:
    return RowsInvalid([{"row": None, "field": field, "code": "invalid_body", "message": message}])


def predict_body_parse(data: Any) -> dict[str, Any]:
    """The service's arguments from a request body, or RowsInvalid naming what is wrong with its shape."""
    if not isinstance(data, dict):
        raise _body_error(None, 'Send a JSON object: {"rows": [...]} or {"inputs": {...}}.')
    unknown = sorted(set(data) - _BODY_KEYS)
    if unknown:
        raise _body_error(
            unknown[0],
            f"Unknown key(s) {', '.join(map(repr, unknown))}; use {', '.join(sorted(_BODY_KEYS))}. "
            'Features go inside "rows" or "inputs".',
        )
    if ("rows" in data) == ("inputs" in data):
        raise _body_error(None, 'Send either "rows" (a list of objects) or "inputs" (one object), not both.')
    if "inputs" in data:
        if not isinstance(data["inputs"], dict):
            raise _body_error("inputs", '"inputs" must be one object of {feature: value}.')
        rows: Any = [data["inputs"]]
    else:
        rows = data["rows"]
    if "version" in data and "stage" in data:
        raise _body_error("stage", 'Give either "version" (pin a version) or "stage", not both.')
    return {
        "rows": rows,
        "version": data.get("version"),
        "stage": data.get("stage", Stage.PRODUCTION.value),
        "request_id": data.get("request_id"),
    }


def _refused(errors: list[dict[str, Any]]) -> Response:
    count = len(errors)
    return Response(
        {
            "detail": f"The request was refused ({count} problem{'s' if count != 1 else ''}); "
            "nothing was stored.",
            "errors": errors,
        },
        status=status.HTTP_400_BAD_REQUEST,
    )


class ModelPredictView(APIView):
    """POST /api/models/{name}/predict/: any signed-in user; the user rate throttle applies."""

    parser_classes = [LenientJSONParser]

    @extend_schema(
        operation_id="model_predict",
        request=PredictInputSerializer,
        responses={
            200: PredictOutputSerializer,
            400: OpenApiResponse(PredictErrorSerializer, description="Every problem per row and field."),
            404: OpenApiResponse(description="No such model or version."),
            409: OpenApiResponse(description="The model has no version in the requested stage."),
            503: OpenApiResponse(description="The model file or object storage is unavailable."),
        },
        tags=["predictions"],
    )
    def post(self, request: Request, name: str) -> Response:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            # DRF parses the raw stream, so Django's own body-size check never runs for JSON bodies.
            return Response(
                {"detail": f"The request body is {length} bytes; at most {limit} bytes are accepted."},
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        try:
            arguments = predict_body_parse(request.data)
            if arguments["request_id"] is None and request.headers.get(REQUEST_ID_HEADER):
                arguments["request_id"] = request.headers[REQUEST_ID_HEADER]
            outcome = services.prediction_make(
                registered_model_name=name, user=request.user, channel=Channel.API, **arguments
            )
        except RowsInvalid as exc:
            return _refused(exc.errors)
        except ModelNotFound as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
        except NoVersionInStage as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except model_cache.ModelUnavailable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        version = outcome.model_version
        return Response(
            {
                "model": version.registered_model.name,
                "model_version": version.version,
                "stage": version.stage,
                "request_id": outcome.request.request_id,
                "predictions": [
                    {
                        "id": p.pk,
                        "prediction": p.prediction,
                        "probabilities": p.probabilities,
                        "warnings": p.warnings,
                    }
                    for p in outcome.predictions
                ],
            }
        )


class PredictionOutputSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_version.registered_model.name")
    model_version = serializers.IntegerField(source="model_version.version")
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    request_id = serializers.CharField(source="request.request_id")
    latency_ms = serializers.FloatField(source="request.latency_ms")

    class Meta:
        model = Prediction
        fields = [
            "id",
            "model",
            "model_version",
            "user",
            "channel",
            "request_id",
            "row_index",
            "inputs",
            "prediction",
            "probabilities",
            "warnings",
            "latency_ms",
            "created_at",
        ]


class PredictionPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("model", OpenApiTypes.STR, description="A registered model's name."),
            OpenApiParameter(
                "created_after", OpenApiTypes.STR, description="A date (whole day) or date-time."
            ),
            OpenApiParameter(
                "created_before", OpenApiTypes.STR, description="A date (whole day) or date-time."
            ),
        ],
        tags=["predictions"],
    ),
    retrieve=extend_schema(tags=["predictions"]),
)
class PredictionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your own predictions (staff: everyone's); another user's id answers 404, as if it did not exist."""

    serializer_class = PredictionOutputSerializer
    pagination_class = PredictionPagination
    # Digits only (at most 18, within a bigint): anything else is a 404 from the router, not a 500.
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet[Prediction]:
        if self.action != "list":
            return selectors.prediction_list(user=self.request.user)
        form = PredictionFilterForm(self.request.query_params)
        if not form.is_valid():
            raise ValidationError(
                {
                    field: [e["message"] for e in errors]
                    for field, errors in form.errors.get_json_data().items()
                }
            )
        return selectors.prediction_list(user=self.request.user, **form.filters())

    def get_object(self) -> Prediction:
        return selectors.prediction_get(user=self.request.user, prediction_id=int(self.kwargs["pk"]))
