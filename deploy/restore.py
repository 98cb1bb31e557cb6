#!/usr/bin/env python
"""Restore a backup made by deploy/backup.py into the site this configuration names, then check the site.

Usage: deploy/restore.py BACKUP_DIR [--force] [--migrate] [--skip-mlflow] [--jobs N]

The targets are the app's own configuration, as for backup.py: DATABASE_URL, the bucket (AWS_*) or
media folder, and MLflow's stores (MLFLOW_TRACKING_URI and MLFLOW_ARTIFACT_ROOT, or with a tracking
server MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION).

1. Every file is checked against the manifest's size and sha256 before anything is written.
2. The targets must be empty (a new database, an empty bucket or prefix); --force restores over existing
   data instead (tables are dropped and recreated, objects overwritten, other objects left alone).
3. pg_restore of each database in one transaction (--no-owner --no-privileges), then the objects.
4. The site is checked: `manage.py check`, every migration applied (--migrate applies those a backup
   from older code lacks), and every model version's skops and ONNX files present with the sha256 the
   version recorded, every dataset version's files present with their size.

Exit codes: 0 restored and checked; 1 failed while restoring (the output says which parts were restored);
2 the backup is damaged (each missing or changed file is named), nothing written; 3 refused (a target is
not empty, a tool is too old, or the backup needs newer code), nothing written; 4 restored, but a check
failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import backup_format as bf

EXIT_FAILED = 1
EXIT_DAMAGED = 2
EXIT_REFUSED = 3
EXIT_CHECKS = 4


class Refused(Exception):
    """The restore would not be safe or cannot work; nothing was written."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="restore.py",
        description="Verify a backup folder, restore it into the configured site and check it.",
    )
    parser.add_argument("backup", type=Path, metavar="BACKUP_DIR", help="one mlops-backup-<time> folder")
    parser.add_argument(
        "--force", action="store_true", help="restore over a database or bucket that already holds data"
    )
    parser.add_argument(
        "--migrate", action="store_true", help="apply the migrations this code has and the backup lacks"
    )
    parser.add_argument(
        "--skip-mlflow", action="store_true", help="leave MLflow's database and artifacts alone"
    )
    parser.add_argument(
        "--jobs", type=int, default=8, metavar="N", help="objects uploaded at once (default 8)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


@dataclass
class Step:
    label: str
    target: str
    run: Callable[[], str]
    #: All or nothing: a failure leaves the target as it was (one transaction, or a file renamed into place).
    atomic: bool = False


def database_step(
    folder: Path, manifest: dict[str, Any], part: str, target: bf.Database, *, force: bool
) -> Step | None:
    entry = manifest["parts"][part]
    label = bf.PART_LABELS[part]
    if entry.get("file") is None:
        return None
    if entry["kind"] != target.kind:
        raise Refused(f"the {label} backup is {entry['kind']}, but the target is {target.describe()}")
    source = folder / entry["file"]
    if target.kind == "postgresql":
        tool, _major = bf.postgres_tool("pg_restore", at_least=int(entry.get("pg_dump_major") or 0))
        bf.postgres_server_version(target)  # reachable now, not only after the objects were checked

        def restore_postgres() -> str:
            argv = [str(tool), "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
            if force:
                argv += ["--clean", "--if-exists"]
            bf.run_tool(
                [*argv, f"--dbname={target.name}", str(source)], env=target.libpq_env(), what="pg_restore"
            )
            return "pg_restore done"

        return Step(label, target.describe(), restore_postgres, atomic=True)

    def restore_sqlite() -> str:
        assert target.path is not None
        target.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.path.with_name(f".{target.path.name}.restoring")
        shutil.copyfile(source, temporary)
        for leftover in ("-wal", "-shm"):
            target.path.with_name(target.path.name + leftover).unlink(missing_ok=True)
        os.replace(temporary, target.path)
        return "file copied"

    return Step(label, target.describe(), restore_sqlite, atomic=True)


def objects_step(
    folder: Path, manifest: dict[str, Any], part: str, target: bf.ObjectStore, jobs: int
) -> Step:
    objects = bf.part_objects(manifest, part)

    def upload() -> str:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda item: target.upload(item[0], folder / item[1], item[2]), objects))
        return bf.plural(len(objects), "object")

    return Step(bf.PART_LABELS[part], target.describe(), upload)


def target_is_empty(target: bf.Database | bf.ObjectStore) -> bool:
    if isinstance(target, bf.ObjectStore):
        return target.is_empty()
    if target.kind == "postgresql":
        return bf.postgres_is_empty(target)
    assert target.path is not None
    return bf.sqlite_is_empty(target.path)


def code_compatibility(manifest: dict[str, Any]) -> None:
    """Refuse a backup whose database has migrations this code does not know: it was made by newer code."""
    from django.db.migrations.loader import MigrationLoader

    known = set(MigrationLoader(None, ignore_no_migrations=True).graph.nodes)
    unknown = [
        f"{app}.{name}"
        for app, names in manifest["app"].get("migrations", {}).items()
        for name in names
        if (app, name) not in known
    ]
    if unknown:
        listed = ", ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise Refused(
            f"the backup was made by newer code (version {manifest['app'].get('version')}): this code lacks "
            f"the migrations {listed}; deploy that version first"
        )


def plan_build(settings: Any, folder: Path, manifest: dict[str, Any], args: argparse.Namespace) -> list[Step]:
    """Every step, with its target checked: reachable, of the right kind, empty unless --force."""
    parts = manifest["parts"]
    steps: list[Step] = []
    targets: list[tuple[str, bf.Database | bf.ObjectStore]] = []
    if bf.DATABASE not in parts:
        raise Refused("the backup has no database")
    database = bf.database_from_django(settings.DATABASES["default"])
    targets.append((bf.PART_LABELS[bf.DATABASE], database))
    step = database_step(folder, manifest, bf.DATABASE, database, force=args.force)
    steps += [step] if step else []
    mlflow_parts = [part for part in (bf.MLFLOW_DATABASE, bf.MLFLOW_ARTIFACTS) if part in parts]
    mlflow = bf.mlflow_places(settings) if mlflow_parts and not args.skip_mlflow else None
    if mlflow is not None and bf.MLFLOW_DATABASE in parts:
        entry = parts[bf.MLFLOW_DATABASE]
        if entry["kind"] == "folder":
            if mlflow.store_folder is None:
                raise Refused("the MLflow backup is a file store, but MLflow's target is a database")
            store = bf.ObjectStore(kind="folder", path=mlflow.store_folder)
            targets.append((bf.PART_LABELS[bf.MLFLOW_DATABASE], store))
            steps.append(_folder_store_step(folder, manifest, store, args.jobs))
        else:
            if mlflow.database is None:
                raise Refused("the MLflow backup is a database, but MLflow's target is a file store")
            targets.append((bf.PART_LABELS[bf.MLFLOW_DATABASE], mlflow.database))
            step = database_step(folder, manifest, bf.MLFLOW_DATABASE, mlflow.database, force=args.force)
            steps += [step] if step else []
    storage = bf.app_storage(settings)
    storage.check_reachable()
    targets.append((bf.PART_LABELS[bf.STORAGE], storage))
    steps.append(objects_step(folder, manifest, bf.STORAGE, storage, args.jobs))
    if mlflow is not None and bf.MLFLOW_ARTIFACTS in parts:
        mlflow.artifacts.check_reachable()
        targets.append((bf.PART_LABELS[bf.MLFLOW_ARTIFACTS], mlflow.artifacts))
        steps.append(objects_step(folder, manifest, bf.MLFLOW_ARTIFACTS, mlflow.artifacts, args.jobs))
    if not args.force:
        full = [f"{label} ({target.describe()})" for label, target in targets if not target_is_empty(target)]
        if full:
            raise Refused(
                f"not empty: {', '.join(full)}. Restore into a new database and an empty bucket, "
                "or pass --force to restore over what is there"
            )
    # The apps are loaded only now, for their migrations: a refusal above costs no app start.
    bf.django_setup()
    code_compatibility(manifest)
    return steps


def _folder_store_step(folder: Path, manifest: dict[str, Any], store: bf.ObjectStore, jobs: int) -> Step:
    prefix = bf.PART_PATHS[bf.MLFLOW_DATABASE]["folder"] + "/"
    files = [(name[len(prefix) :], name) for name in manifest["files"] if name.startswith(prefix)]

    def copy() -> str:
        for key, name in files:
            store.upload(key, folder / name)
        return bf.plural(len(files), "file")

    return Step(bf.PART_LABELS[bf.MLFLOW_DATABASE], store.describe(), copy)


def site_checks(*, migrate: bool) -> tuple[list[str], list[str]]:
    """(lines, problems) of the restored site's checks, as the app itself sees its database and storage."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    lines: list[str] = []
    problems: list[str] = []
    output = io.StringIO()
    try:
        call_command("check", stdout=output, stderr=output)
        lines.append("manage.py check: no issues")
    except SystemCheckError as exc:
        problems.append(f"manage.py check: {exc}")
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending and migrate:
        call_command("migrate", interactive=False, verbosity=0)
        lines.append(f"migrations: applied the {len(pending)} this code adds")
        pending = []
    if pending:
        problems.append(
            f"{len(pending)} migrations are not applied (the backup comes from older code): "
            "run `python manage.py migrate`, or restore with --migrate"
        )
        return lines, problems
    lines.append(f"migrations: all {len(executor.loader.applied_migrations)} applied")
    lines.append(model_files_check(problems))
    lines.append(dataset_files_check(problems))
    return lines, problems


def model_files_check(problems: list[str]) -> str:
    from mlops_site import storage
    from models_registry import selectors

    versions = files = 0
    for version in (
        selectors.model_version_list()
        .only(
            "pk", "version", "registered_model__name", "skops_key", "skops_sha256", "onnx_key", "onnx_sha256"
        )
        .select_related(None)
        .select_related("registered_model")
    ):
        versions += 1
        for kind, key, recorded in (
            ("skops", version.skops_key, version.skops_sha256),
            ("ONNX", version.onnx_key, version.onnx_sha256),
        ):
            if not key:
                continue
            files += 1
            try:
                actual = storage.sha256_of(key)
            except FileNotFoundError:
                problems.append(f"{version}: its {kind} file {key} is missing")
                continue
            if recorded and actual != recorded:
                problems.append(
                    f"{version}: its {kind} file {key} has sha256 {actual}, the version records {recorded}"
                )
    return f"model files: {bf.plural(files, 'file')} of {bf.plural(versions, 'version')}, sha256 as recorded"


def dataset_files_check(problems: list[str]) -> str:
    from datasets import selectors
    from mlops_site import storage

    versions = 0
    for version in selectors.dataset_version_list():
        versions += 1
        label = f"dataset {version.dataset.name} v{version.version}"
        if not storage.exists(version.object_key):
            problems.append(f"{label}: its file {version.object_key} is missing")
        elif storage.size(version.object_key) != version.size_bytes:
            problems.append(f"{label}: its file {version.object_key} is not {version.size_bytes} bytes long")
        if version.columnar_key and not storage.exists(version.columnar_key):
            problems.append(f"{label}: its columnar copy {version.columnar_key} is missing")
    return f"dataset files: {bf.plural(versions, 'version')}, every file present with its size"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    folder = args.backup.resolve()
    try:
        manifest = bf.manifest_load(folder)
        count, size = bf.files_verify(folder, manifest)
    except bf.ManifestInvalid as exc:
        print(f"restore refused: {folder} is damaged, nothing was written:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_DAMAGED
    made = f"made {manifest.get('created_at')} on {manifest.get('source', {}).get('host')}"
    print(
        f"backup {folder.name}: {made} by version {manifest.get('app', {}).get('version')}; "
        f"{count} files ({bf.human_size(size)}) match their sha256"
    )
    settings = bf.settings_load()
    try:
        steps = plan_build(settings, folder, manifest, args)
    except Refused as exc:
        print(f"restore refused, nothing was written: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except bf.BackupError as exc:
        print(f"restore failed before writing anything: {exc}", file=sys.stderr)
        return EXIT_FAILED
    done: list[str] = []
    for index, step in enumerate(steps):
        try:
            result = step.run()
        except Exception as exc:
            print(
                f"restore failed while restoring the {step.label} into {step.target}: {exc}", file=sys.stderr
            )
            print(f"  restored: {', '.join(done) or 'nothing'}", file=sys.stderr)
            rest = [later.label for later in steps[index + 1 :]]
            if step.atomic:
                rest.insert(0, f"{step.label} (left as it was)")
            else:
                print(f"  partly restored: {step.label}", file=sys.stderr)
            print(f"  not restored: {', '.join(rest) or 'nothing else'}", file=sys.stderr)
            if done or not step.atomic:
                print("  to finish: fix the cause, then run the restore again with --force", file=sys.stderr)
            return EXIT_FAILED
        done.append(f"{step.label} ({step.target}: {result})")
    print(f"restored in {time.monotonic() - started:.1f} s:")
    for line in done:
        print(f"  {line}")
    with contextlib.suppress(Exception):
        from django.db import connections

        connections.close_all()
    lines, problems = site_checks(migrate=args.migrate)
    print("checks of the restored site:")
    for line in lines:
        print(f"  {line}")
    if problems:
        print("restored, but the site's checks failed:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CHECKS
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
