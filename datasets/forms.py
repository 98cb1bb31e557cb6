"""The dataset upload form of the datasets page."""

from __future__ import annotations

from django import forms

from datasets.models import DATASET_NAME_MAX_LENGTH


class DatasetUploadForm(forms.Form):
    name = forms.CharField(
        max_length=DATASET_NAME_MAX_LENGTH,
        help_text="A new name creates a dataset; an existing name adds a version to it.",
        widget=forms.TextInput(attrs={"list": "dataset-names", "autocomplete": "off"}),
    )
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Used when the dataset has no description yet.",
    )
    target_column = forms.CharField(
        required=False,
        max_length=255,
        help_text="Required for a new dataset; later versions default to the dataset's target.",
    )
    parent = forms.IntegerField(
        required=False,
        min_value=1,
        label="Parent version",
        help_text="Optional: the version of this dataset the file was derived from.",
    )
    file = forms.FileField(
        label="CSV file", widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"})
    )
