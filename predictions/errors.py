"""Refusals of the prediction services, each a domain error that pages and the API answer the same way."""

from __future__ import annotations

from mlops_site import errors


class ModelNotFound(errors.NotFound):
    """No registered model, or no version, by the name or number asked for (404)."""


class NoVersionInStage(errors.Conflict):
    """The model exists but has no version in the stage asked for (409)."""

    code = "no_version_in_stage"


class InputInvalid(errors.ProblemsInvalid):
    """The request was refused and nothing was stored (400); `errors` lists every problem by row, field."""

    what = "request"


class BatchUploadInvalid(InputInvalid):
    """A batch upload was refused (400); `problems` names every problem found. Nothing was stored."""

    what = "file"
