"""API views of the accounts app: tokens for programs, and who the caller is."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from accounts import services
from accounts.serializers import MeOutputSerializer, TokenObtainInputSerializer, TokenOutputSerializer
from mlops_site.throttling import ScopedRateThrottle

#: Used when DEFAULT_THROTTLE_RATES has no "auth" entry.
AUTH_THROTTLE_FALLBACK_RATE = "10/minute"


class AuthRateThrottle(ScopedRateThrottle):
    """The stricter "auth" scope for password checks, so the API is no faster a guessing oracle than login."""

    def get_rate(self) -> str | None:
        rate = self.THROTTLE_RATES.get(self.scope)
        return rate if rate is not None else AUTH_THROTTLE_FALLBACK_RATE


class AuthTokenView(APIView):
    throttle_scope = "auth"

    def get_permissions(self) -> list[permissions.BasePermission]:
        if self.request.method == "POST":
            return [permissions.AllowAny()]
        return super().get_permissions()

    def get_throttles(self) -> list[BaseThrottle]:
        if self.request.method == "POST":
            return [AuthRateThrottle()]
        return super().get_throttles()

    @extend_schema(
        operation_id="auth_token_obtain",
        summary="Get an API token with a username and password",
        description=(
            "Returns the caller's token, creating it on first use. Programs send it as "
            "`Authorization: Token <token>`. Rate limited more strictly than the rest of the API, and "
            "refused with 429 while the account or the caller's address is locked after too many failed "
            "sign-ins on any login path."
        ),
        request=TokenObtainInputSerializer,
        responses={
            200: TokenOutputSerializer,
            400: OpenApiResponse(description="Missing or malformed fields."),
            401: OpenApiResponse(description="A wrong username or password (the same answer for both)."),
            429: OpenApiResponse(
                description="Too many attempts, or sign-in locked; retry after the given number of seconds."
            ),
        },
        auth=[],
        tags=["accounts"],
    )
    def post(self, request: Request) -> Response:
        serializer = TokenObtainInputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        token = services.token_obtain(user=serializer.validated_data["user"])
        return Response(TokenOutputSerializer(token).data)

    @extend_schema(
        operation_id="auth_token_revoke",
        summary="Revoke the caller's API token",
        description="Deletes the caller's token; requests made with it are refused afterwards.",
        request=None,
        responses={204: None},
        tags=["accounts"],
    )
    def delete(self, request: Request) -> Response:
        services.token_revoke(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    @extend_schema(
        operation_id="me_retrieve",
        summary="Who the caller is",
        responses=MeOutputSerializer,
        tags=["accounts"],
    )
    def get(self, request: Request) -> Response:
        return Response(MeOutputSerializer(request.user).data)
