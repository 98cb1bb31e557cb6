"""The predictions API: predict with a registered model, and read one's own stored predictions."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mlops_site import errors, pagination, parsers
from monitoring import prometheus
from predictions import routing, selectors, services
from predictions.forms import PredictionFilterForm
from predictions.models import Channel, Prediction

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_META = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
#: served_by of an answer whose rows a canary split between the champion and the challenger.
SPLIT = "split"


class LenientJSONParser(parsers.JSONParser):
    """Accepts NaN and Infinity literals, so validation can name the row and field that holds them."""

    strict = False


class PredictInputSerializer(serializers.Serializer):
    """The body's shape; the service checks the options and every row and feature, rows counted from 1."""

    rows = serializers.ListField(
        required=False, help_text="Rows of {feature: value}; each one is checked feature by feature."
    )
    inputs = serializers.DictField(required=False, help_text="One row of {feature: value}, instead of rows.")
    version = serializers.IntegerField(
        required=False, help_text="Pin this version number (1, 2, ...); instead of stage."
    )
    stage = serializers.CharField(
        required=False, help_text=f"One of: {', '.join(selectors.SERVABLE_STAGES)}. Default: production."
    )
    keys = serializers.ListField(
        required=False,
        child=serializers.JSONField(allow_null=True),
        help_text=f"With rows: your own key for each row ({services.KEY_RULE}), unique per model; feedback "
        "can then name the row by it.",
    )
    key = serializers.JSONField(required=False, help_text="With inputs: your key for the row, as in keys.")
    request_id = serializers.CharField(
        required=False,
        help_text="Your id for this call: 1 to 64 letters, digits, dots, colons, underscores or hyphens; "
        f"also read from {REQUEST_ID_HEADER}.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {
                    unknown[0]: f"Unknown key(s) {', '.join(map(repr, unknown))}; use "
                    f'{", ".join(self.fields)}. Features go inside "rows" or "inputs".'
                }
            )
        if ("rows" in attrs) == ("inputs" in attrs):
            raise serializers.ValidationError(
                'Send either "rows" (a list of objects) or "inputs" (one object), not both.'
            )
        if "keys" in attrs and "rows" not in attrs:
            raise serializers.ValidationError({"keys": 'Send "keys" with "rows"; with "inputs" send "key".'})
        if "key" in attrs and "inputs" not in attrs:
            raise serializers.ValidationError({"key": 'Send "key" with "inputs"; with "rows" send "keys".'})
        return attrs


_BODY_FIELDS = frozenset(PredictInputSerializer._declared_fields)
#: Version numbers the fast path takes as they are; others go through the serializer's checks.
_VERSION_RANGE = range(-(2**31), 2**31)


def predict_body_read(data: Any) -> dict[str, Any]:
    """The predict body's validated data, as PredictInputSerializer gives it.

    A well-formed body is read directly, the way the serializer reads it: instantiating the serializer (its
    fields deep-copied for every request) cost more than the checks themselves. Any other body goes
    through the serializer, so every refusal keeps its message and shape.
    """
    plain = _body_plain(data)
    if plain is not None:
        return plain
    body = PredictInputSerializer(data=data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


def _text_plain(value: Any) -> bool:
    # What CharField passes unchanged: a non-empty string without surrounding blanks or NUL; ASCII only,
    # which leaves the surrogate checks to the serializer.
    return (
        type(value) is str
        and value != ""
        and value == value.strip()
        and value.isascii()
        and "\x00" not in value
    )


def _body_plain(data: Any) -> dict[str, Any] | None:
    """The validated data of a body that passes every check of PredictInputSerializer unchanged, else None."""
    if type(data) is not dict or not data.keys() <= _BODY_FIELDS:
        return None
    if ("rows" in data) == ("inputs" in data):
        return None
    if "rows" in data and type(data["rows"]) is not list:
        return None
    if "inputs" in data and type(data["inputs"]) is not dict:
        return None
    if "keys" in data and ("rows" not in data or type(data["keys"]) is not list):
        return None
    if "key" in data and ("inputs" not in data or data["key"] is None):
        return None
    if "version" in data and (type(data["version"]) is not int or data["version"] not in _VERSION_RANGE):
        return None
    if not all(_text_plain(data[name]) for name in ("stage", "request_id") if name in data):
        return None
    plain = dict(data)
    if "inputs" in plain:
        plain["inputs"] = {str(name): value for name, value in plain["inputs"].items()}
    for name in ("rows", "keys"):
        if name in plain:
            plain[name] = list(plain[name])
    return plain


SERVED_BY_HELP = (
    "champion: the version asked for (production by default) answered; challenger: the model is in canary "
    "mode and its staging version answered instead."
)


class RowPredictionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField(allow_null=True, help_text="Your key for the row, if you sent one.")
    prediction = serializers.JSONField()
    probabilities = serializers.DictField(child=serializers.FloatField(), allow_null=True)
    warnings = serializers.ListField(child=serializers.DictField())
    model_version = serializers.IntegerField(help_text="The version that answered this row.")
    served_by = serializers.ChoiceField(
        choices=[routing.CHAMPION, routing.CHALLENGER], help_text=SERVED_BY_HELP
    )


class PredictOutputSerializer(serializers.Serializer):
    model = serializers.CharField()
    model_version = serializers.IntegerField(
        help_text="The version that answered every row; when a canary split the rows, the version asked for "
        "(each row says which answered it)."
    )
    stage = serializers.CharField(help_text="That version's stage now.")
    served_by = serializers.ChoiceField(
        choices=[routing.CHAMPION, routing.CHALLENGER, SPLIT],
        help_text=f"{SERVED_BY_HELP} {SPLIT}: a canary split the rows; each row says which answered it.",
    )
    request_id = serializers.CharField()
    predictions = RowPredictionSerializer(many=True)


class ModelPredictView(APIView):
    """POST /api/models/{name}/predict/: any signed-in user; the user rate throttle applies."""

    parser_classes = [LenientJSONParser]

    def handle_exception(self, exc: Exception) -> Response:
        # Refusals before or around the service (throttled, an unreadable or oversized body, the
        # serializer's checks) are counted here; the service counts its own.
        prometheus.prediction_refusal_counted(model_name=self.kwargs.get("name"), exc=exc)
        return super().handle_exception(exc)

    @extend_schema(
        operation_id="model_predict",
        request=PredictInputSerializer,
        responses={
            200: PredictOutputSerializer,
            400: OpenApiResponse(description="Every problem by row (from 1) and field; nothing was stored."),
            404: OpenApiResponse(description="No such model or version."),
            409: OpenApiResponse(description="The model has no version in the requested stage."),
            413: OpenApiResponse(description="The body is over the upload limit."),
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
            raise errors.TooLarge(f"The request body is {length} bytes; at most {limit} bytes are accepted.")
        data = predict_body_read(request.data)
        outcome = services.prediction_make(
            registered_model_name=name,
            rows=data["rows"] if "rows" in data else [data["inputs"]],
            user=request.user,
            channel=Channel.API,
            version=data.get("version"),
            stage=data.get("stage"),
            # META, not request.headers: that builds the request's whole header table.
            request_id=data.get("request_id") or request.META.get(_REQUEST_ID_META),
            keys=data.get("keys", [data["key"]] if "key" in data else None),
        )
        keys = data.get("keys") or ([data["key"]] if "key" in data else [None] * len(outcome.predictions))
        return Response(_predict_answer(outcome, keys))


def _predict_answer(outcome: services.PredictionOutcome, keys: list[Any]) -> dict[str, Any]:
    """The body PredictOutputSerializer describes, built directly: instantiating that serializer (its
    fields deep-copied per request, about 30 of them) cost more CPU than the model call."""
    served = [outcome.served_by(p) for p in outcome.predictions]
    # A split answer names the version asked for at the top; each row names the one that answered it.
    version = outcome.champion_version if outcome.split else outcome.model_version
    return {
        "model": version.registered_model.name,
        "model_version": version.version,
        "stage": str(version.stage),
        "served_by": SPLIT if outcome.split else served[0],
        "request_id": outcome.request.request_id,
        "predictions": [
            {
                "id": p.pk,
                "key": None if key is None else str(key),
                "prediction": p.prediction,
                "probabilities": None
                if p.probabilities is None
                else {str(label): float(share) for label, share in p.probabilities.items()},
                "warnings": p.warnings,
                "model_version": p.model_version.version,
                "served_by": by,
            }
            for p, key, by in zip(outcome.predictions, keys, served, strict=True)
        ],
    }


def _has_related(prediction: Prediction, name: str) -> bool:
    """Whether a reverse one-to-one row exists, without a query when select_related fetched it."""
    try:
        getattr(prediction, name)
    except ObjectDoesNotExist:
        return False
    return True


class PredictionOutputSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_version.registered_model.name")
    model_version = serializers.IntegerField(source="model_version.version")
    # Null once the account is deleted (SET_NULL) or for rows no user made.
    user = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    request_id = serializers.CharField(source="request.request_id")
    latency_ms = serializers.FloatField(source="request.latency_ms")
    key = serializers.SerializerMethodField(help_text="Your key for the row, if you sent one.")
    feedback = serializers.SerializerMethodField(
        help_text="The outcome given: {correct, true_label, true_value}, or null."
    )

    def get_key(self, prediction: Prediction) -> str | None:
        return prediction.key.key if _has_related(prediction, "key") else None

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {
                "correct": {"type": "boolean", "nullable": True},
                "true_label": {"type": "string"},
                "true_value": {"type": "number", "nullable": True},
            },
        }
    )
    def get_feedback(self, prediction: Prediction) -> dict[str, Any] | None:
        if not _has_related(prediction, "feedback"):
            return None
        given = prediction.feedback
        return {"correct": given.correct, "true_label": given.true_label, "true_value": given.true_value}

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
            "key",
            "feedback",
        ]


class PredictionPagination(pagination.CursorPagination):
    """Newest first by (created_at, id), the order of the (user, created_at, id) index: any page as fast
    as the first. `?page=` is refused with a 400 naming `cursor`."""

    page_size = 50
    max_page_size = 500


#: What the created_after/created_before filters accept, as the page's filter form parses them.
DATE_OR_DATE_TIME = {
    "oneOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]
}


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("model", OpenApiTypes.STR, description="A registered model's name."),
            OpenApiParameter(
                "feedback",
                OpenApiTypes.STR,
                enum=["labelled", "unlabelled", "wrong"],
                description="Feedback state.",
            ),
            OpenApiParameter("channel", OpenApiTypes.STR, enum=["page", "api", "batch"]),
            OpenApiParameter(
                "created_after", DATE_OR_DATE_TIME, description="A date (whole day) or date-time."
            ),
            OpenApiParameter(
                "created_before", DATE_OR_DATE_TIME, description="A date (whole day) or date-time."
            ),
        ],
        responses={
            200: PredictionOutputSerializer(many=True),
            400: OpenApiResponse(
                description="A filter is not a date or date-time, or the range is empty; the cursor is not "
                "one this list gave out; or `page` was given (this list is paginated by cursor: follow "
                "`next`)."
            ),
        },
        tags=["predictions"],
    ),
    retrieve=extend_schema(tags=["predictions"]),
)
class PredictionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your own predictions (staff: everyone's); another user's id answers 404, as if it did not exist.

    The list is newest first and paginated by cursor: follow `next` (older) and `previous` (newer); the
    filters stay in those links. There is no total count and no `page` number.
    """

    serializer_class = PredictionOutputSerializer
    pagination_class = PredictionPagination
    # Digits only (at most 18, within a bigint): anything else is a 404 from the router, not a 500.
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet[Prediction]:
        if self.action != "list":
            return selectors.prediction_list(user=self.request.user)
        # The page's filter form sends empty fields; a program that names a filter must give it a value.
        empty = [
            name for name in PredictionFilterForm.base_fields if self.request.query_params.get(name) == ""
        ]
        if empty:
            raise ValidationError({name: ["Give a value, or leave the parameter out."] for name in empty})
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
