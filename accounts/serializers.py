"""API input and output shapes of the accounts app."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from rest_framework import exceptions, serializers

from accounts import services


class SignInLockedError(exceptions.APIException):
    """429 with Retry-After: the account or the client is locked after too many failed sign-ins."""

    status_code = 429
    default_code = "sign_in_locked"

    def __init__(self, refusal: services.SignInRefusal) -> None:
        super().__init__(detail=refusal.message)
        # The API's exception handler turns `wait` into Retry-After, as for throttling.
        self.wait = refusal.retry_after


class TokenObtainInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        user = authenticate(
            request=self.context.get("request"), username=attrs["username"], password=attrs["password"]
        )
        refusal = services.sign_in_refusal(request=self.context.get("request"))
        if refusal is not None:
            raise SignInLockedError(refusal)
        if user is None:
            # One message for unknown users, wrong passwords and disabled accounts: no user enumeration.
            # Well-formed credentials that do not sign in: a 401, like a wrong token, not malformed input.
            raise exceptions.AuthenticationFailed("Unable to log in with the given username and password.")
        attrs["user"] = user
        return attrs


class TokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField(source="key", help_text="Send it as `Authorization: Token <token>`.")
    created = serializers.DateTimeField()


class MeOutputSerializer(serializers.Serializer):
    username = serializers.CharField(source="get_username")
    is_staff = serializers.BooleanField()
