"""The form that starts a training run, and the algorithm choices the admin's training action shares."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from datasets import selectors as dataset_selectors
from datasets.models import DatasetVersion
from ml import catalogue
from ml.train import MAX_SEED, TEST_SIZE_MAX, TEST_SIZE_MIN
from mlops_site import parsers
from models_registry.models import MODEL_NAME_MAX_LENGTH

#: The algorithm value when the task is left to be inferred from the target column.
INFER = "infer"


def algorithm_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Grouped by task; algorithms that exist for both tasks also appear under "task inferred"."""
    by_key: dict[str, list[catalogue.Algorithm]] = {}
    for algorithm in catalogue.algorithm_list():
        by_key.setdefault(algorithm.key, []).append(algorithm)
    both = [found[0] for found in by_key.values() if len(found) == len(catalogue.TASKS)]
    groups = [
        (
            "Task inferred from the target column",
            [(f"{INFER}:{algorithm.key}", algorithm.label) for algorithm in both],
        )
    ]
    for task in catalogue.TASKS:
        groups.append(
            (
                task.capitalize(),
                [(f"{task}:{a.key}", f"{a.label} ({task})") for a in catalogue.algorithm_list(task=task)],
            )
        )
    return groups


class DatasetVersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: DatasetVersion) -> str:
        return f"{obj.dataset.name} v{obj.version} · {obj.row_count:,} rows · target {obj.target_column}"


class TrainingRunForm(forms.Form):
    dataset_version = DatasetVersionChoiceField(
        queryset=DatasetVersion.objects.none(), empty_label="Choose a dataset version"
    )
    model_name = forms.CharField(
        max_length=MODEL_NAME_MAX_LENGTH,
        help_text="A new name registers a new model; an existing name adds a version to it.",
        widget=forms.TextInput(attrs={"list": "model-names", "autocomplete": "off"}),
    )
    algorithm = forms.ChoiceField(choices=algorithm_choices)
    target_column = forms.CharField(
        required=False, max_length=255, help_text="Leave empty to use the dataset version's target column."
    )
    params = forms.CharField(
        label="Hyperparameters (JSON object)",
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 3, "class": "json", "spellcheck": "false"}),
        help_text='For example {"max_depth": 6, "n_estimators": 200}; empty for the defaults.',
    )
    seed = forms.IntegerField(
        min_value=0, max_value=MAX_SEED, initial=42, help_text="Fixes the split and model."
    )
    test_size = forms.FloatField(
        label="Holdout share",
        min_value=TEST_SIZE_MIN,
        max_value=TEST_SIZE_MAX,
        initial=0.2,
        help_text=f"Between {TEST_SIZE_MIN} and {TEST_SIZE_MAX}.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset_version"].queryset = dataset_selectors.dataset_version_list()

    def clean_params(self) -> Any:
        """The JSON value; the service says whether it is a hyperparameter object the algorithm takes."""
        text = (self.cleaned_data.get("params") or "").strip()
        if not text:
            return {}
        try:
            return parsers.json_loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"This is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
            ) from None

    def clean_algorithm(self) -> tuple[str | None, str]:
        task, _, key = self.cleaned_data["algorithm"].partition(":")
        return (None if task == INFER else task), key
