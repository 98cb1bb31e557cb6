"""Forms of the prediction pages: the predict form built from a feature schema, and the history filter."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from ml.examples import ExampleRow, example_text
from ml.features import NUMERIC
from predictions.models import Channel

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")


def _number_text(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


class PredictForm(forms.Form):
    """One text input per numeric feature and one select per categorical feature, in schema order.

    Fields are named f0, f1, … because feature names may hold spaces and brackets. The form itself accepts
    any text: the prediction service validates the row, so the page and the API refuse the same inputs.
    """

    def __init__(
        self,
        *args: Any,
        feature_schema: list[dict[str, Any]],
        example: ExampleRow | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.feature_schema = feature_schema
        self.field_of_feature: dict[str, str] = {}
        for index, column in enumerate(feature_schema):
            field_name = f"f{index}"
            self.field_of_feature[column["name"]] = field_name
            # Required in the browser only when training had no missing values; the model imputes otherwise.
            attrs: dict[str, Any] = {"data-feature": column["name"]}
            if not column.get("missing_count"):
                attrs["required"] = True
            if column["kind"] == NUMERIC:
                low, high = column.get("min"), column.get("max")
                attrs.update(inputmode="decimal", autocomplete="off")
                help_text = ""
                if low is not None and high is not None:
                    attrs["placeholder"] = f"{_number_text(low)} to {_number_text(high)}"
                    help_text = f"Training range: {_number_text(low)} to {_number_text(high)}."
                field: forms.Field = forms.CharField(
                    label=column["name"],
                    required=False,
                    help_text=help_text,
                    widget=forms.TextInput(attrs=attrs),
                )
            else:
                categories = column.get("categories") or []
                # A CharField with a select: an unexpected value goes to the service, which decides.
                field = forms.CharField(
                    label=column["name"],
                    required=False,
                    help_text=f"{len(categories)} categories seen in training.",
                    widget=forms.Select(
                        attrs=attrs, choices=[("", "— choose —"), *((c, c) for c in categories)]
                    ),
                )
            self.fields[field_name] = field
            if example is not None:
                self.initial[field_name] = example_text(example.get(column["name"]))

    def row(self) -> dict[str, str]:
        """The submitted row keyed by feature name (call after is_valid())."""
        return {name: self.cleaned_data.get(field, "") for name, field in self.field_of_feature.items()}

    def errors_add(self, errors: list[dict[str, Any]]) -> None:
        for error in errors:
            self.add_error(self.field_of_feature.get(error.get("field") or ""), error["message"])


class DateOrDateTimeField(forms.CharField):
    """An ISO date (whole day) or date-time; blank means no bound."""

    def to_python(self, value: Any) -> dt.date | dt.datetime | None:
        text = super().to_python(value).strip()
        if not text:
            return None
        # A bare date means the whole day; parse_datetime would read it as midnight.
        parse = parse_date if _DATE_ONLY.match(text) else parse_datetime
        try:
            parsed = parse(text)
        except ValueError:
            parsed = None
        if parsed is None:
            raise forms.ValidationError(
                f"'{text}' is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM:SS).", code="invalid"
            )
        if isinstance(parsed, dt.datetime) and not timezone.is_aware(parsed):
            return timezone.make_aware(parsed)
        return parsed


#: The history's feedback filter (see selectors.FEEDBACK_FILTERS).
FEEDBACK_STATES = [("labelled", "Labelled"), ("unlabelled", "Not labelled"), ("wrong", "Marked wrong")]


class PredictionFilterForm(forms.Form):
    """The history filter, shared by the page and GET /api/predictions/."""

    model = forms.CharField(required=False, max_length=64)
    created_after = DateOrDateTimeField(required=False, label="From")
    created_before = DateOrDateTimeField(required=False, label="Until")
    feedback = forms.ChoiceField(
        required=False,
        label="Feedback",
        choices=[("", "Any"), *FEEDBACK_STATES],
    )
    channel = forms.ChoiceField(required=False, label="Channel", choices=[("", "Any"), *Channel.choices])

    def __init__(self, *args: Any, model_names: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if model_names is not None:
            self.fields["model"].widget = forms.Select(
                choices=[("", "All models"), *((name, name) for name in model_names)]
            )
        self.fields["created_after"].widget = forms.DateInput(attrs={"type": "date"})
        self.fields["created_before"].widget = forms.DateInput(attrs={"type": "date"})

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        after, before = cleaned.get("created_after"), cleaned.get("created_before")
        if after is not None and before is not None and _as_date(after) > _as_date(before):
            raise forms.ValidationError("'From' is after 'Until'.")
        return cleaned

    def filters(self) -> dict[str, Any]:
        return {
            "model": self.cleaned_data.get("model") or None,
            "created_after": self.cleaned_data.get("created_after"),
            "created_before": self.cleaned_data.get("created_before"),
            "feedback": self.cleaned_data.get("feedback") or None,
            "channel": self.cleaned_data.get("channel") or None,
        }


def _as_date(value: dt.date | dt.datetime) -> dt.date:
    return timezone.localtime(value).date() if isinstance(value, dt.datetime) else value


class BatchUploadForm(forms.Form):
    """A CSV file to predict, with the version to use: a stage's current version or a pinned one."""

    file = forms.FileField(
        label="CSV file",
        help_text="Comma-separated, UTF-8, with a header row naming every feature. "
        "Other columns are copied to the result.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )
    version = forms.ChoiceField(label="Model version", required=False)
    # Two named choices rather than a checkbox: a form sent without the field (a script's POST) stores the
    # predictions, as an unticked checkbox could not tell apart.
    store_predictions = forms.ChoiceField(
        label="Predictions",
        required=False,
        initial="yes",
        choices=[
            ("yes", "Store each prediction: they can get feedback and show in your history"),
            ("no", "Result file only: faster for large files, and the rows cannot get feedback"),
        ],
        widget=forms.RadioSelect,
    )

    def __init__(self, *args: Any, versions: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stages = {v.stage: v for v in versions if v.stage in ("production", "staging")}
        choices = []
        for stage in ("production", "staging"):
            if stage in stages:
                choices.append((stage, f"{stage.capitalize()} (now v{stages[stage].version})"))
        choices.extend((str(v.version), f"v{v.version} (pinned)") for v in versions)
        self.fields["version"].choices = choices

    def target(self) -> dict[str, Any]:
        """The service's arguments: a pinned version or a stage, never both, and whether the predictions
        are stored (call after is_valid())."""
        stored = {"store_predictions": self.cleaned_data.get("store_predictions") != "no"}
        chosen = self.cleaned_data.get("version") or "production"
        if chosen in ("production", "staging"):
            return {"stage": chosen, **stored}
        return {"version": int(chosen), **stored}
