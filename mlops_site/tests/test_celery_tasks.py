"""Celery task names are pinned in the code, so moving a module never orphans messages already queued."""

from __future__ import annotations

import ast
from pathlib import Path

from django.conf import settings

from mlops_site.celery import app

ROOT = Path(__file__).resolve().parents[2]
APPS = (
    "accounts",
    "datasets",
    "training",
    "models_registry",
    "predictions",
    "feedback",
    "monitoring",
    "jobs",
)


def _declared_tasks() -> list[tuple[str, str, str | None]]:
    """(module, function, pinned name or None) of every @shared_task in the apps' source."""
    found = []
    for app_name in APPS:
        for path in sorted((ROOT / app_name).rglob("*.py")):
            if "tests" in path.relative_to(ROOT).parts:
                continue
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.FunctionDef):
                    continue
                for decorator in node.decorator_list:
                    call = decorator if isinstance(decorator, ast.Call) else None
                    target = call.func if call else decorator
                    if getattr(target, "id", getattr(target, "attr", None)) != "shared_task":
                        continue
                    pinned = next(
                        (kw.value.value for kw in (call.keywords if call else []) if kw.arg == "name"), None
                    )
                    found.append((module, node.name, pinned))
    return found


def test_every_task_pins_its_name_to_the_module_that_defines_it():
    declared = _declared_tasks()

    assert len(declared) >= 8
    assert [(m, f) for m, f, pinned in declared if pinned != f"{m}.{f}"] == []


def test_the_worker_registers_every_pinned_task_and_beat_names_only_registered_ones():
    app.loader.import_default_modules()
    registered = {name for name in app.tasks if not name.startswith("celery.")}

    assert {pinned for _, _, pinned in _declared_tasks()} <= registered
    assert {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} <= registered
