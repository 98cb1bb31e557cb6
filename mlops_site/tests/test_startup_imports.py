"""Starting the project does not import the heavy libraries only some requests and tasks need.

Every gunicorn worker, Celery worker and manage.py command runs django.setup(), which imports every app's
admin and through it the views, services and gateways. mlflow, skops.io (which scans scikit-learn when
imported), onnxruntime, scikit-learn (about a second of CPU with the scipy.stats it loads) and scipy's
statistics cost seconds of CPU there, so the modules that use them import them in the functions that do:
the feature kinds and input preparation live in ml.features, the catalogue names its estimator classes by
path, and ml.pipeline, ml.train and ml.onnx_export import scikit-learn and onnx in the functions that
build, train or convert. These tests start the project in a fresh interpreter, as a worker does, and fail
when a module-level import brings one back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.conf import settings

#: Imported on first use only: nothing may load them while the project starts.
LAZY_MODULES = (
    "mlflow",
    "skops",
    "skops.io",
    "onnxruntime",
    "sqlalchemy",
    "sklearn",
    "scipy.stats",
    "scipy.spatial",
)
#: Libraries no project module may import at module level on the start path, even where another library
#: has already loaded them: the project's own import must stay lazy.
LAZY_IMPORTS = LAZY_MODULES

# Runs in the fresh interpreter: records every import statement of a project file (not a library's) that
# names one of LAZY_IMPORTS, whether or not the module was loaded already, and what sys.modules holds
# after each step of a start.
_PROBE = textwrap.dedent(
    """
    import builtins, json, os, sys

    root, lazy_imports, lazy_modules = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    project = os.path.join(root, "")
    libraries = os.path.join(root, ".venv", "")
    direct = []
    original_import = builtins.__import__

    def named(name, fromlist):
        names = [name] + [f"{name}.{item}" for item in fromlist or () if isinstance(item, str)]
        return [n for n in names if any(n == lazy or n.startswith(lazy + ".") for lazy in lazy_imports)]

    def watched_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0:
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(project) and not caller.startswith(libraries):
                for module in named(name, fromlist):
                    direct.append(f"{os.path.relpath(caller, root)} imports {module}")
        return original_import(name, globals, locals, fromlist, level)

    builtins.__import__ = watched_import
    loaded = {}

    def step(label):
        loaded[label] = sorted(m for m in lazy_modules if m in sys.modules)

    import django

    django.setup()
    step("django.setup()")
    from django.urls import get_resolver

    get_resolver().url_patterns
    step("the URL conf")
    from mlops_site.celery import app

    app.loader.import_default_modules()
    step("the Celery tasks")
    print(json.dumps({"loaded": loaded, "direct": sorted(set(direct))}))
    """
)


def _probe(script: str, *, root: Path, env: dict[str, str], cwd: Path) -> object:
    """Run `script` (the probe, or part of it) in a fresh interpreter; its last output line, as JSON."""
    arguments = [str(root), json.dumps(LAZY_IMPORTS), json.dumps(LAZY_MODULES)]
    completed = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> object:
    """What a fresh interpreter imported while starting the project as a web or Celery worker does."""
    root = Path(settings.BASE_DIR)
    environment = {
        "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
        "DATA_DIR": str(tmp_path_factory.mktemp("startup-imports")),
        "PYTHONPATH": str(root),
    }
    return _probe(_PROBE, root=root, env=environment, cwd=root)


@pytest.mark.parametrize("step", ["django.setup()", "the URL conf", "the Celery tasks"])
def test_starting_loads_none_of_the_lazy_libraries(
    started: dict[str, dict[str, list[str]]], step: str
) -> None:
    assert started["loaded"][step] == [], f"{step} imported {started['loaded'][step]}"


def test_no_project_module_imports_a_lazy_library_while_the_project_starts(
    started: dict[str, list[str]],
) -> None:
    # A library that another one loads (scikit-learn loads scipy.stats) shows up in sys.modules under that
    # library's name: only the import statement names the project module that asked for it.
    assert started["direct"] == []


def test_the_probe_sees_a_module_level_import_of_a_loaded_or_new_library(tmp_path: Path) -> None:
    package = tmp_path / "probe_target"
    package.mkdir()
    (package / "__init__.py").write_text("import json\nfrom scipy import stats\nimport onnxruntime\n")
    # The same hook as the start's, then a module that imports scipy.stats (already loaded) and onnxruntime.
    script = (
        _PROBE.split("import django", 1)[0]
        + "import scipy.stats\nimport probe_target\nprint(json.dumps(direct))\n"
    )
    assert _probe(script, root=tmp_path, env={"PYTHONPATH": str(tmp_path)}, cwd=tmp_path) == [
        "probe_target/__init__.py imports scipy.stats",
        "probe_target/__init__.py imports onnxruntime",
    ]
