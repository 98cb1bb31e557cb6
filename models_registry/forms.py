"""Forms of the registry pages: a transition, a rollback, a model upload, the challenger mode."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from mlops_site import parsers
from models_registry import selectors, services, upload_services
from models_registry.models import MODEL_NAME_MAX_LENGTH, ChallengerMode, ModelVersion, Stage, Task


class TransitionForm(forms.Form):
    """A stage change; one that changes production applies only with `confirm`, from its confirmation page."""

    to_stage = forms.ChoiceField(
        choices=[(Stage.STAGING, "Staging"), (Stage.PRODUCTION, "Production"), (Stage.ARCHIVED, "Archived")]
    )
    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    force = forms.BooleanField(required=False)
    confirm = forms.BooleanField(required=False)


class RollbackForm(forms.Form):
    """A rollback; it applies only with `confirm`, sent by its confirmation page."""

    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    force = forms.BooleanField(required=False)
    confirm = forms.BooleanField(required=False)


FEATURE_SCHEMA_EXAMPLE = (
    '[{"name": "age", "kind": "numeric"}, '
    '{"name": "city", "kind": "categorical", "categories": ["Berlin", "Paris"]}]'
)


def _json_parse(text: str, *, what: str) -> Any:
    try:
        return parsers.json_loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{what} not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None


def schema_source_choices() -> list[tuple[str, Any]]:
    """Every version, grouped by model (newest first), as the sources a feature schema can be copied from."""
    groups: dict[str, list[tuple[str, str]]] = {}
    rows = selectors.model_version_list().values_list(
        "pk", "registered_model__name", "version", "task", "source"
    )
    for pk, name, version, task, source in rows:
        groups.setdefault(name, []).append((str(pk), f"{name} v{version} ({task}, {source})"))
    return [("", "Do not copy: type the schema below"), *groups.items()]


class ModelUploadForm(forms.Form):
    """An externally trained skops or ONNX file and what the registry must know to serve it."""

    model_name = forms.CharField(
        max_length=MODEL_NAME_MAX_LENGTH,
        help_text="A new name registers a new model; an existing name adds a version to it.",
        widget=forms.TextInput(attrs={"list": "model-names", "autocomplete": "off"}),
    )
    task = forms.ChoiceField(choices=Task.choices)
    target_column = forms.CharField(
        required=False,
        max_length=255,
        help_text="The column the model predicts; an existing model keeps its own.",
    )
    file = forms.FileField(
        label="Model file",
        widget=forms.ClearableFileInput(attrs={"accept": ".skops,.onnx"}),
        help_text="A skops (.skops) or ONNX (.onnx) file, recognised by its content. "
        "Pickle and joblib files are refused.",
    )
    copy_schema_from = forms.ChoiceField(
        label="Copy the feature schema from a version",
        required=False,
        choices=schema_source_choices,
        help_text="The input columns of a version trained or uploaded before, "
        "usually the one this file replaces.",
    )
    feature_schema = forms.CharField(
        label="Feature schema (JSON list)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 5, "class": "json", "spellcheck": "false"}),
        help_text=f"Unless copied from a version: one object per input column, in order, for example "
        f'{FEATURE_SCHEMA_EXAMPLE}. A numeric column may give "min" and "max".',
    )
    classes = forms.CharField(
        label="Classes",
        required=False,
        max_length=100_000,
        help_text="Classification only, optional: comma-separated labels (no, yes) or a JSON list "
        "([0, 1] for whole-number labels). Empty takes them from the model file.",
    )
    metrics = forms.CharField(
        label="Metrics (JSON object)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "class": "json", "spellcheck": "false"}),
        help_text='Optional holdout metrics for the quality gate, for example {"accuracy": 0.91, '
        '"roc_auc": 0.95}; classification: accuracy, balanced_accuracy, f1_macro, roc_auc, log_loss; '
        "regression: rmse, mae, r2.",
    )
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Used when the model is new.",
    )

    def clean_model_name(self) -> str:
        return services.registered_model_name_validate(self.cleaned_data["model_name"])

    def clean_copy_schema_from(self) -> ModelVersion | None:
        pk = self.cleaned_data.get("copy_schema_from")
        if not pk:
            return None
        found = selectors.model_version_list().filter(pk=pk).first()
        if found is None:
            raise ValidationError("That version no longer exists; choose another.")
        return found

    def clean_feature_schema(self) -> list[dict[str, Any]] | None:
        text = (self.cleaned_data.get("feature_schema") or "").strip()
        if not text:
            return None
        return upload_services.feature_schema_validate(_json_parse(text, what="The feature schema is"))

    def clean_classes(self) -> list[Any] | None:
        text = (self.cleaned_data.get("classes") or "").strip()
        if not text:
            return None
        if text.startswith("["):
            value = _json_parse(text, what="The classes are")
            if not isinstance(value, list):
                raise ValidationError("Give the classes as a JSON list or separated by commas.")
            return value
        labels = [label.strip() for label in text.split(",")]
        if any(not label for label in labels):
            raise ValidationError("A class label is empty: check for doubled or trailing commas.")
        return labels

    def clean_metrics(self) -> dict[str, Any] | None:
        text = (self.cleaned_data.get("metrics") or "").strip()
        if not text:
            return None
        value = _json_parse(text, what="The metrics are")
        if not isinstance(value, dict):
            raise ValidationError('The metrics must be a JSON object, for example {"accuracy": 0.91}.')
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        source = cleaned.get("copy_schema_from")
        typed = cleaned.get("feature_schema")
        if "feature_schema" in self.errors or "copy_schema_from" in self.errors:
            return cleaned
        if source is not None and typed is not None:
            self.add_error(
                "feature_schema",
                f"Either type a feature schema or copy the one of {source}, not both: "
                "clear this field or the version choice.",
            )
        elif source is None and typed is None:
            self.add_error("feature_schema", "Give the feature schema, or choose a version to copy it from.")
        elif source is not None:
            cleaned["feature_schema"] = source.feature_schema
        return cleaned


class ChallengerForm(forms.Form):
    """The model page's challenger mode and canary share (staff)."""

    mode = forms.ChoiceField(choices=ChallengerMode.choices)
    canary_percent = forms.IntegerField(
        label="Canary share (%)",
        min_value=0,
        max_value=100,
        required=False,
        help_text="Of production traffic, in canary mode; 0 rolls the canary back at once.",
    )
