"""API input and output shapes of the accounts app."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from rest_framework import serializers


class TokenObtainInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        user = authenticate(
            request=self.context.get("request"), username=attrs["username"], password=attrs["password"]
        )
        if user is None:
            # One message for unknown users, wrong passwords and disabled accounts: no user enumeration.
            raise serializers.ValidationError(
                "Unable to log in with the given username and password.", code="authorization"
            )
        attrs["user"] = user
        return attrs


class TokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField(source="key", help_text="Send it as `Authorization: Token <token>`.")
    created = serializers.DateTimeField()


class MeOutputSerializer(serializers.Serializer):
    username = serializers.CharField(source="get_username")
    is_staff = serializers.BooleanField()
