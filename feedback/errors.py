"""Refusals of the feedback services, each a domain error pages and the API answer the same way."""

from __future__ import annotations

from mlops_site.errors import NotFound, ProblemsInvalid


class FeedbackInvalid(ProblemsInvalid):
    """Feedback was refused (400); `errors` names every problem by row and field. Nothing was stored."""

    what = "feedback"


class PredictionNotFound(NotFound):
    """No prediction the caller may label by that id (404), whether it does not exist or is someone else's."""
