"""plotly.js is served from the installed plotly package."""

from django.contrib.staticfiles import finders
from django.core.management import call_command


def test_it_finds_plotly_js_under_the_plotly_prefix() -> None:
    found = finders.find("plotly/plotly.min.js")

    assert found.endswith("plotly.min.js")
    with open(found, "rb") as handle:
        assert b"plotly" in handle.read(4096).lower()


def test_it_exposes_no_other_file_of_the_plotly_package() -> None:
    assert not finders.find("plotly/widgetbundle.js")


def test_collectstatic_copies_plotly_js(settings, tmp_path) -> None:
    settings.STATIC_ROOT = tmp_path / "static"

    call_command("collectstatic", interactive=False, verbosity=0)

    assert (tmp_path / "static" / "plotly" / "plotly.min.js").stat().st_size > 1_000_000
