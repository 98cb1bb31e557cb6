"""Refusals of the prediction services, each a domain error that pages and the API answer the same way."""

from __future__ import annotations

from typing import Any

from mlops_site import errors


class ModelNotFound(errors.NotFound):
    """No registered model, or no version, by the name or number asked for (404)."""


class NoVersionInStage(errors.Conflict):
    """The model exists but has no version in the stage asked for (409)."""

    code = "no_version_in_stage"


class InputInvalid(errors.Invalid):
    """The request was refused and nothing was stored (400).

    `errors` lists every problem as {row, field, code, message}, rows counted from 1 as in a batch job's
    errors file; a problem given as text concerns no row or field.
    """

    what = "request"

    def __init__(self, problems: list[dict[str, Any] | str]) -> None:
        items = [p if isinstance(p, dict) else errors.problem(p) for p in problems]
        count = len(items)
        super().__init__(
            f"The {self.what} was refused ({count} problem{'s' if count != 1 else ''}); nothing was stored.",
            errors=items,
        )

    @property
    def problems(self) -> list[str]:
        return [item["message"] for item in self.errors]

    def __str__(self) -> str:
        return "; ".join(self.problems[:5])


class BatchUploadInvalid(InputInvalid):
    """A batch upload was refused (400); `problems` names every problem found. Nothing was stored."""

    what = "file"
