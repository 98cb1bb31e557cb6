"""manage.py simulate_drift: its timeline and summary, and the arguments it refuses."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from models_registry.models import RegisteredModel

# The command commits as it goes (its training run is sent to the worker on commit).
pytestmark = pytest.mark.django_db(transaction=True)


def test_a_short_run_prints_the_timeline_and_the_figures():
    out = io.StringIO()

    call_command(
        "simulate_drift", "--inline", "--scenario", "none", "--rows", "150", "--drift-at", "100",
        "--model", "short-run", "--json", stdout=out,
    )  # fmt: skip

    text = out.getvalue()
    assert "short-run: champion v1 trained on 500 rows" in text
    assert "row   150  v1 in production  rolling accuracy" in text
    assert "  drift" in text
    result = json.loads(text[text.index("{") :])
    assert result["scenario"] == "none"
    assert result["promotions"] == 0
    assert RegisteredModel.objects.filter(name="short-run").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--rows", "0"], "--rows must be at least 1"),
        (["--step", "0"], "--step must be at least 1"),
        (["--rate", "-1"], "--rate must be from 0"),
        (["--rows", "100", "--drift-at", "100"], "The drift row must fall inside the run"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_made(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("simulate_drift", "--inline", *arguments, stdout=io.StringIO())
    assert not RegisteredModel.objects.exists()


def test_a_model_name_already_taken_is_refused():
    RegisteredModel.objects.create(name="taken")

    with pytest.raises(CommandError, match="exists already"):
        call_command("simulate_drift", "--inline", "--model", "taken", stdout=io.StringIO())
