"""Forms of the feedback pages: the true outcome of one prediction, as the page's buttons post it."""

from __future__ import annotations

from typing import Any

from django import forms

#: The page's two buttons; a label button or a number alone posts no verdict.
VERDICTS = {"right": True, "wrong": False}


class FeedbackForm(forms.Form):
    """Right or wrong, the true label or value, a comment and where to go back to.

    Only parses what the browser sends: the service checks the outcome against the prediction, so the page
    and the API refuse the same feedback with the same words.
    """

    verdict = forms.ChoiceField(required=False, choices=[("", "—"), *((v, v) for v in VERDICTS)])
    true_label = forms.CharField(required=False, strip=True, label="True label")
    true_value = forms.FloatField(required=False, label="True value")
    comment = forms.CharField(required=False, strip=True, label="Comment")
    next = forms.CharField(required=False)

    def outcome(self) -> dict[str, Any]:
        """The service's `data` (call after is_valid()); blanks are left out, so a blank comment keeps
        the comment there is."""
        data = self.cleaned_data
        outcome: dict[str, Any] = {}
        if data.get("verdict"):
            outcome["correct"] = VERDICTS[data["verdict"]]
        if data.get("true_label"):
            outcome["true_label"] = data["true_label"]
        if data.get("true_value") is not None:
            outcome["true_value"] = data["true_value"]
        if data.get("comment"):
            outcome["comment"] = data["comment"]
        return outcome
