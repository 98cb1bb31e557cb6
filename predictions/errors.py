"""Exceptions of the prediction service, each mapped to one HTTP status by the page and API views."""

from __future__ import annotations


class ModelNotFound(Exception):
    """No registered model, or no version, by the name or number asked for (404)."""


class NoVersionInStage(Exception):
    """The model exists but has no version in the stage asked for (409)."""


class BatchUploadInvalid(Exception):
    """A batch upload was refused (400); `problems` names every problem found. Nothing was stored."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
