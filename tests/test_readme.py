"""The README documents what the project really does."""

import re
from pathlib import Path

from mlops_site import env

ROOT = Path(__file__).resolve().parent.parent


def _documented_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", table, flags=re.MULTILINE))


def test_every_variable_the_settings_read_is_in_the_configuration_table() -> None:
    import mlops_site.settings  # noqa: F401  (importing records the variables it reads)

    documented = _documented_variables()
    # NAME_FILE variants are documented once, beside NAME, in the text above the table.
    read = {name for name in env.READ_VARIABLES if not (name.endswith("_FILE") and name[:-5] in documented)}
    assert read - documented == set()


def test_the_configuration_table_lists_no_variable_the_settings_ignore() -> None:
    import mlops_site.settings  # noqa: F401

    assert _documented_variables() - env.READ_VARIABLES == set()


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
