"""The feedback import page's form: a CSV file of true outcomes and the model a file of keys is for."""

from __future__ import annotations

from typing import Any

from django import forms


class FeedbackImportForm(forms.Form):
    """Only parses what the browser sends: the service checks the file and the model."""

    file = forms.FileField(
        label="CSV file",
        help_text="UTF-8, comma-separated, with a header row: prediction_id, key or batch_job and row; "
        "true_label or true_value; optionally correct and comment.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )
    model = forms.ChoiceField(
        label="Model",
        required=False,
        help_text="Required for a file of keys. With ids or batch rows, rows of other models are refused.",
    )

    def __init__(self, *args: Any, model_names: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [
            ("", "— any (a file of ids or batch rows) —"),
            *((n, n) for n in model_names),
        ]
