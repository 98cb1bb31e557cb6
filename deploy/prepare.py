"""`make run`'s first steps in one process: migrate, collectstatic, the first admin, the demo datasets and
the demo model. Each `manage.py` call pays Django's and the apps' imports again (about 4 s on 2 cores),
so one process instead of five saves a quarter of a minute on every start.

Run from the project folder with the project's Python; the last line of the output is a JSON object whose
`summary` lists the lines for `make run`'s banner (the admin login, the demo model). DEMO_MODEL=False skips
the demo model.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def demo_wanted(environ: dict[str, str]) -> bool:
    return environ.get("DEMO_MODEL", "True").strip().lower() not in ("false", "0", "no", "off")


def main() -> int:
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False)
    call_command("collectstatic", interactive=False, verbosity=0)
    admin = io.StringIO()
    call_command("ensure_admin", stdout=admin)
    call_command("load_demo_datasets")
    demo = io.StringIO()
    if demo_wanted(dict(os.environ)):
        call_command("demo_model", stdout=demo)
    # A later start has no demo to queue; why not is for `manage.py demo_model`, not for every banner.
    demo_lines = [
        line for line in demo.getvalue().splitlines() if not line.startswith("No demo model queued")
    ]
    summary = [line for line in [*admin.getvalue().splitlines(), *demo_lines] if line.strip()]
    print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
