"""deploy/backup.py and deploy/restore.py: the restore drill against real PostgreSQL and S3, refusals, and
the retention rule."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.authtoken.models import Token

from predictions.tests.helpers import make_model_version, make_predictions, trained_model
from tests.celery_worker import database_url_for_other_processes, storage_env_for_other_processes
from tests.factories import make_api_client, make_user
from tests.live_gunicorn import gunicorn_serving

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
#: Seconds a backup or restore of the small test site may take (each starts Django once).
SCRIPT_TIMEOUT = 120


def load_deploy_module(name: str) -> ModuleType:
    """A deploy/ script as a module; its sibling backup_format is what `import backup_format` finds."""
    if "backup_format" not in sys.modules:
        _load("backup_format")
    return sys.modules.get(name) or _load(name)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DEPLOY / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEPLOY / name), *args],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "mlops_site.settings", **env},
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )


def only_backup(dest: Path) -> Path:
    (found,) = [path for path in dest.iterdir() if path.name.startswith("mlops-backup-")]
    return found


# ------------------------------------------------------------------------------
# Extra databases and buckets on the service run's servers
# ------------------------------------------------------------------------------
def database_url(name: str, *, scheme: str = "postgres") -> str:
    """The test database's server, another database on it."""
    base = database_url_for_other_processes()
    return f"{scheme}://{base.split('://', 1)[1].rsplit('/', 1)[0]}/{quote(name, safe='')}"


@contextlib.contextmanager
def new_databases(*names: str) -> Iterator[None]:
    """Empty databases made by CREATE DATABASE, dropped afterwards with whatever still connects to them."""
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for name in names:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=django_settings.AWS_S3_ENDPOINT_URL or None,
        region_name=django_settings.AWS_S3_REGION_NAME,
        aws_access_key_id=django_settings.AWS_ACCESS_KEY_ID or None,
        aws_secret_access_key=django_settings.AWS_SECRET_ACCESS_KEY or None,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


def objects_delete(client: Any, bucket: str, prefix: str = "") -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])


@contextlib.contextmanager
def new_bucket() -> Iterator[str]:
    client = s3_client()
    name = f"restore-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        objects_delete(client, name)
        client.delete_bucket(Bucket=name)


def object_sha256(client: Any, bucket: str, key: str) -> str:
    return hashlib.sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


# ------------------------------------------------------------------------------
# The restored site, seen through its own gunicorn
# ------------------------------------------------------------------------------
def http_json(port: int, path: str, *, token: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback http only
        return json.loads(answer.read())


def comparable_prediction(answer: dict[str, Any]) -> dict[str, Any]:
    """What must not differ between two sites predicting the same row: not the new rows' ids or times."""
    kept = ("model", "model_version", "stage", "prediction", "probabilities", "value")
    rows = answer.get("predictions") or answer.get("results") or [answer]
    return {"rows": [{key: row.get(key) for key in kept} for row in rows]}


@pytest.mark.postgres
@pytest.mark.s3
def test_a_backup_restored_into_an_empty_database_and_bucket_serves_the_same_site(
    transactional_db, settings, tmp_path
):
    from models_registry import mlflow_gateway
    from models_registry.models import ModelVersion

    source_prefix = storage_env_for_other_processes()["AWS_LOCATION"]
    s3 = s3_client()
    suffix = uuid.uuid4().hex[:10]
    restored_db, mlflow_source_db, mlflow_restored_db = (
        f"restored_{suffix}",
        f"mlflow_source_{suffix}",
        f"mlflow_restored_{suffix}",
    )
    mlflow_artifacts_prefix = f"{source_prefix}-mlflow"
    with (
        new_databases(restored_db, mlflow_source_db, mlflow_restored_db),
        new_bucket() as restored_bucket,
    ):
        # A small site: a model version in production, predictions by two users, outcomes for some, and
        # MLflow on PostgreSQL with an artifact in S3, as in the compose stack.
        version = make_model_version(trained=trained_model("cancer"), name="cancer", version=1)
        alice, bob = make_user("alice"), make_user("bob")
        alice_api, bob_api = make_api_client(alice), make_api_client(bob)
        alice_predictions = make_predictions(user=alice, count=3)
        make_predictions(user=bob, count=2)
        (bob_first,) = make_predictions(user=bob, count=1)
        for client, prediction, outcome in (
            (alice_api, alice_predictions[0], {"correct": True}),
            (alice_api, alice_predictions[2], {"correct": False, "comment": "checked by hand"}),
            (bob_api, bob_first, {"correct": True}),
        ):
            answer = client.post(f"/api/predictions/{prediction.pk}/feedback/", outcome, format="json")
            assert answer.status_code == 201, answer.content
        settings.MLFLOW_TRACKING_URI = database_url(mlflow_source_db, scheme="postgresql+psycopg")
        mlflow_gateway.experiment_ensure(name="drill")
        s3.put_object(
            Bucket=settings.AWS_STORAGE_BUCKET_NAME,
            Key=f"{mlflow_artifacts_prefix}/1/run/artifacts/feature_schema.json",
            Body=json.dumps(version.feature_schema).encode(),
        )
        mlflow_artifact_root = f"s3://{settings.AWS_STORAGE_BUCKET_NAME}/{mlflow_artifacts_prefix}/"

        backups = tmp_path / "backups"
        made = run_script(
            "backup.py",
            str(backups),
            env={
                "DATABASE_URL": database_url_for_other_processes(),
                "AWS_LOCATION": source_prefix,
                "MLFLOW_TRACKING_URI": settings.MLFLOW_TRACKING_URI,
                "MLFLOW_ARTIFACT_ROOT": mlflow_artifact_root,
                "DATA_DIR": str(tmp_path / "source-data"),
                "APP_VERSION": "drill",
            },
        )
        assert made.returncode == 0, made.stdout + made.stderr
        backup = only_backup(backups)
        manifest = json.loads((backup / "manifest.json").read_text())
        assert manifest["app"]["version"] == "drill"
        assert "0001_initial" in manifest["app"]["migrations"]["models_registry"]
        assert set(manifest["parts"]) == {"database", "mlflow_database", "storage", "mlflow_artifacts"}
        assert f"storage/{version.skops_key}" in manifest["files"]
        assert manifest["files"][f"storage/{version.onnx_key}"]["sha256"] == version.onnx_sha256

        restored_site = {
            "DATABASE_URL": database_url(restored_db),
            "AWS_STORAGE_BUCKET_NAME": restored_bucket,
            "AWS_LOCATION": "",
            "MLFLOW_TRACKING_URI": database_url(mlflow_restored_db, scheme="postgresql+psycopg"),
            "MLFLOW_ARTIFACT_ROOT": f"s3://{restored_bucket}/mlflow/",
        }
        restored = run_script(
            "restore.py", str(backup), env={**restored_site, "DATA_DIR": str(tmp_path / "restore-data")}
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "model files: 2 files of 1 version, sha256 as recorded" in restored.stdout

        # The objects are in the new bucket with the checksums the version recorded.
        assert object_sha256(s3, restored_bucket, version.skops_key) == version.skops_sha256
        assert object_sha256(s3, restored_bucket, version.onnx_key) == version.onnx_sha256
        assert s3.get_object(Bucket=restored_bucket, Key="mlflow/1/run/artifacts/feature_schema.json")
        with (
            contextlib.closing(
                __import__("psycopg").connect(database_url(mlflow_restored_db, scheme="postgresql"))
            ) as mlflow_db,
        ):
            names = [row[0] for row in mlflow_db.execute("SELECT name FROM experiments")]
        assert "drill" in names

        row = trained_model("cancer").sample_rows[1]
        tokens = {user.username: Token.objects.get(user=user).key for user in (alice, bob)}
        originals = {
            name: client.get("/api/predictions/").json()["results"]
            for name, client in (("alice", alice_api), ("bob", bob_api))
        }
        versions_before = alice_api.get("/api/models/cancer/versions/").json()
        assert len(originals["alice"]) == 3
        assert len(originals["bob"]) == 3
        assert sum(1 for p in originals["alice"] + originals["bob"] if p["feedback"]) == 3

        (tmp_path / "restored-web").mkdir()
        with gunicorn_serving(data_dir=tmp_path / "restored-web", env=restored_site) as port:
            for name in ("alice", "bob"):
                assert http_json(port, "/api/predictions/", token=tokens[name])["results"] == originals[name]
            versions_after = http_json(port, "/api/models/cancer/versions/", token=tokens["alice"])
            new_there = http_json(
                port, "/api/models/cancer/predict/", token=tokens["alice"], body={"inputs": row}
            )
        new_here = alice_api.post("/api/models/cancer/predict/", {"inputs": row}, format="json")

        assert new_here.status_code == 200, new_here.content
        assert comparable_prediction(new_there) == comparable_prediction(new_here.json())
        checksums = [
            {key: v[key] for key in ("version", "skops_sha256", "onnx_sha256")}
            for v in versions_after["results"]
        ]
        assert checksums == [
            {key: v[key] for key in ("version", "skops_sha256", "onnx_sha256")}
            for v in versions_before["results"]
        ]
        assert checksums[0]["skops_sha256"] == ModelVersion.objects.get().skops_sha256
        objects_delete(s3, settings.AWS_STORAGE_BUCKET_NAME, mlflow_artifacts_prefix + "/")


# ------------------------------------------------------------------------------
# Refusals: a damaged backup, a target that holds data, a backup that cannot be made
# ------------------------------------------------------------------------------
MODEL_KEY = "models/sha256/ab/ab12.skops"


@pytest.fixture(scope="module")
def small_backup(django_db_setup, tmp_path_factory) -> Iterator[Path]:
    """One backup of the (empty) test database and a prefix holding one object, made once for the module."""
    prefix = f"tests/{uuid.uuid4().hex}"
    client = s3_client()
    client.put_object(
        Bucket=django_settings.AWS_STORAGE_BUCKET_NAME, Key=f"{prefix}/{MODEL_KEY}", Body=b"model"
    )
    dest = tmp_path_factory.mktemp("backups")
    try:
        made = run_script(
            "backup.py",
            str(dest),
            "--skip-mlflow",
            env={
                "DATABASE_URL": database_url_for_other_processes(),
                "AWS_LOCATION": prefix,
                "DATA_DIR": str(dest / "data"),
                "APP_VERSION": "refusals",
            },
        )
        assert made.returncode == 0, made.stdout + made.stderr
        yield only_backup(dest)
    finally:
        objects_delete(client, django_settings.AWS_STORAGE_BUCKET_NAME, prefix + "/")


def postgres_table_count(url: str) -> int:
    import psycopg

    with contextlib.closing(psycopg.connect(url)) as db:
        return db.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()[0]


@pytest.mark.postgres
@pytest.mark.s3
def test_restore_refuses_a_changed_or_missing_file_naming_it_and_writes_nothing(
    small_backup, transactional_db, tmp_path
):
    damaged = tmp_path / small_backup.name
    shutil.copytree(small_backup, damaged)
    changed = damaged / "storage" / MODEL_KEY
    changed.write_bytes(b"MODEL")  # same size, other bytes
    (damaged / "database.pgdump").unlink()
    target_db = f"refused_{uuid.uuid4().hex[:10]}"

    with new_databases(target_db), new_bucket() as bucket:
        refused = run_script(
            "restore.py",
            str(damaged),
            env={
                "DATABASE_URL": database_url(target_db),
                "AWS_STORAGE_BUCKET_NAME": bucket,
                "AWS_LOCATION": "",
            },
        )

        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"storage/{MODEL_KEY}: sha256 differs from the manifest" in refused.stderr
        assert "database.pgdump: missing" in refused.stderr
        assert postgres_table_count(database_url(target_db, scheme="postgresql")) == 0
        assert "Contents" not in s3_client().list_objects_v2(Bucket=bucket)


@pytest.mark.postgres
@pytest.mark.s3
def test_restore_refuses_a_database_that_already_holds_tables(small_backup, transactional_db):
    with new_bucket() as bucket:
        refused = run_script(
            "restore.py",
            str(small_backup),
            env={
                # The test database itself: migrated, so it has every table.
                "DATABASE_URL": database_url_for_other_processes(),
                "AWS_STORAGE_BUCKET_NAME": bucket,
                "AWS_LOCATION": "",
            },
        )

        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "not empty: database (postgresql" in refused.stderr
        assert "--force" in refused.stderr
        assert "Contents" not in s3_client().list_objects_v2(Bucket=bucket)


@pytest.mark.postgres
@pytest.mark.s3
def test_a_backup_that_fails_leaves_no_folder_behind(transactional_db, tmp_path):
    dest = tmp_path / "backups"
    failed = run_script(
        "backup.py",
        str(dest),
        "--skip-mlflow",
        env={"DATABASE_URL": database_url(f"missing_{uuid.uuid4().hex[:10]}"), "DATA_DIR": str(tmp_path)},
    )

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "backup failed" in failed.stderr
    assert "nothing kept" in failed.stderr
    assert [path.name for path in dest.iterdir()] == [".backup.lock"]


# ------------------------------------------------------------------------------
# The folder format and retention, without services
# ------------------------------------------------------------------------------
def make_backup_folder(dest: Path, when: dt.datetime, *, complete: bool = True) -> Path:
    folder = dest / f"mlops-backup-{when.strftime('%Y%m%dT%H%M%SZ')}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "manifest.json").write_text("{}")
    return folder


def test_pruning_keeps_the_newest_backup_of_each_recent_day_and_week(tmp_path):
    backup = load_deploy_module("backup")
    start = dt.datetime(2025, 3, 3, 2, 0, tzinfo=dt.UTC)  # a Monday
    # Four weeks of nightly backups, two on the last day.
    made = [make_backup_folder(tmp_path, start + dt.timedelta(days=day)) for day in range(28)]
    made.append(make_backup_folder(tmp_path, start + dt.timedelta(days=27, hours=12)))
    unfinished = make_backup_folder(tmp_path, start + dt.timedelta(days=28), complete=False)

    backup.prune(tmp_path, keep_daily=3, keep_weekly=2)

    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == sorted(
        [
            made[-1].name,  # the newest of the last day (its earlier backup is deleted)
            made[26].name,  # the newest of each of the two days before
            made[25].name,
            made[20].name,  # the newest (Sunday) of the week before: the last week's is made[-1]
            unfinished.name,  # not a complete backup: neither counted nor deleted
        ]
    )


def test_pruning_with_nothing_to_keep_still_keeps_the_newest_backup(tmp_path):
    fmt = load_deploy_module("backup_format")
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    made = [make_backup_folder(tmp_path, start + dt.timedelta(days=day)) for day in range(3)]

    kept, deleted = fmt.prune_plan(fmt.backups_list(tmp_path), keep_daily=0, keep_weekly=0)

    assert kept == [made[-1]]
    assert deleted == [made[1], made[0]]


@pytest.mark.parametrize(
    "name", ["../outside", "/etc/passwd", "storage/../../x", "storage//x", "manifest.json"]
)
def test_a_manifest_naming_a_file_outside_the_backup_is_refused(tmp_path, name):
    fmt = load_deploy_module("backup_format")
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "format": fmt.FORMAT,
                "format_version": fmt.FORMAT_VERSION,
                "parts": {},
                "files": {name: {"size": 0, "sha256": "0" * 64}},
            }
        )
    )

    with pytest.raises(fmt.ManifestInvalid, match="not a file name a backup may hold"):
        fmt.manifest_load(tmp_path)
