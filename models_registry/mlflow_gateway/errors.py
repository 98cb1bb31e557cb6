"""The errors the MLflow gateway raises: a refusal, an outage, or something that does not exist."""

from __future__ import annotations


class RegistryError(Exception):
    """MLflow refused the request; retrying the same request will not help."""


class RegistryUnavailable(RegistryError):
    """The tracking store or registry could not be reached or failed; retrying later may help."""


class ModelNotFound(RegistryError):
    """The registered model, model version or run does not exist."""
