"""The Dockerfiles pass hadolint, build one small non-root app image in two stages, and get a build context
(.dockerignore) that holds everything the image runs and nothing secret."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.build_context import context_files, dockerignore_rules, is_ignored

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILES = (ROOT / "Dockerfile", ROOT / "deploy" / "mlflow.Dockerfile")
#: Every Dockerfile of the project: the two Python images and the proxy's (deploy/nginx/).
ALL_DOCKERFILES = (*DOCKERFILES, ROOT / "deploy" / "nginx" / "Dockerfile")
#: What the app image runs besides the Python packages: gunicorn's settings, the healthcheck, Django.
RUNTIME_FILES = (
    "manage.py",
    "requirements.txt",
    "deploy/gunicorn.conf.py",
    "deploy/gunicorn_logging.py",
    "deploy/gunicorn_worker.py",
    "deploy/healthcheck.py",
    "mlops_site/settings.py",
    "mlops_site/wsgi.py",
    "mlops_site/celery.py",
    "templates/base.html",
)
#: Never in the build context: secrets, local state, the test suite.
NEVER_IN_CONTEXT = (
    ".env",
    ".env.production",
    ".env.staging",
    ".env.production.example",
    ".venv/bin/python",
    "data/secret_key",
    "tests/test_compose.py",
    "predictions/tests/__init__.py",
    ".git/HEAD",
    "staticfiles/staticfiles.json",
)


def hadolint(*paths: Path) -> list[dict]:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)


def stages(dockerfile: Path) -> dict[str, str]:
    """Each stage's name (or index) and text, in order."""
    text = dockerfile.read_text()
    parts = re.split(r"^(?=FROM\s)", text, flags=re.MULTILINE)[1:]
    named = {}
    for index, part in enumerate(parts):
        name = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", part, flags=re.IGNORECASE).group(1)
        named[name or str(index)] = part
    return named


def instructions(stage: str) -> list[str]:
    """A stage's instructions, continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n(?:\s*#[^\n]*\n)*", " ", stage)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def base_image(stage: str) -> str:
    return re.match(r"FROM\s+(\S+)", stage).group(1)


@pytest.fixture(scope="module")
def context() -> set[str]:
    return set(context_files(ROOT))


@pytest.mark.parametrize(
    ("pattern", "path", "excluded"),
    [
        ("**/tests", "predictions/tests/test_api.py", True),
        ("**/tests", "tests/factories.py", True),
        (".env.*", ".env.staging", True),
        (".env.*", "deploy/.env.staging", False),
        ("deploy/*.Dockerfile", "deploy/mlflow.Dockerfile", True),
        ("data", "datasets/models.py", False),
        ("data", "data/mlflow.db", True),
        ("*.sqlite3", "db.sqlite3", True),
        # A pattern without ** matches from the context's root only.
        ("*.sqlite3", "data/x/db.sqlite3", False),
        ("**/*.sqlite3", "data/x/db.sqlite3", True),
        ("**/*.pyc", "ml/__pycache__/x.cpython-311.pyc", True),
    ],
)
def test_the_dockerignore_reader_matches_like_docker(pattern, path, excluded):
    assert is_ignored(path, dockerignore_rules(pattern)) is excluded


def test_a_later_negated_pattern_includes_a_file_again():
    rules = dockerignore_rules(".env*\n!.env.example")

    assert is_ignored(".env.example", rules) is False
    assert is_ignored(".env", rules) is True


# ------------------------------------------------------------------------------------------------------
# hadolint
# ------------------------------------------------------------------------------------------------------
def test_hadolint_finds_nothing_in_any_dockerfile():
    assert hadolint(*ALL_DOCKERFILES) == []


def test_hadolint_reports_an_unpinned_dockerfile(tmp_path):
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get install curl\nUSER app\n")

    codes = {finding["code"] for finding in hadolint(careless)}

    assert {"DL3007", "DL3008", "DL3015", "DL3066"} <= codes


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_hadolint_exception_says_why_just_above_it(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            above = lines[number - 1].strip() if number else ""
            where = f"{dockerfile.name}:{number + 1}: {line.strip()} without a reason above it"
            assert above.startswith("#"), where
            assert "hadolint" not in above, where
            assert len(above) > 20, where


# ------------------------------------------------------------------------------------------------------
# The app image
# ------------------------------------------------------------------------------------------------------
def test_the_app_image_builds_in_a_builder_and_runs_from_a_small_runtime_stage():
    builder, runtime = stages(ROOT / "Dockerfile").values()
    names = list(stages(ROOT / "Dockerfile"))

    assert names == ["builder", "runtime"]
    assert "python -m venv /opt/venv" in builder
    assert re.search(r"pip install --no-cache-dir -r /tmp/requirements\.txt", builder)
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    # Nothing is compiled or downloaded from PyPI in the image people run.
    assert "pip install" not in runtime
    assert not re.search(r"\b(gcc|build-essential|python3-dev)\b", runtime)
    assert "--no-install-recommends" in runtime
    assert "rm -rf /var/lib/apt/lists/*" in runtime


def test_every_stage_and_the_mlflow_image_use_one_pinned_python_of_the_app_s_version():
    images = {base_image(stage) for path in DOCKERFILES for stage in stages(path).values()}

    assert len(images) == 1, images
    (image,) = images
    version = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+", image)
    assert version, f"{image} is not pinned to a patch release"
    assert tuple(map(int, version.groups()[:2])) == sys.version_info[:2]
    assert f"on Python {sys.version_info[0]}.{sys.version_info[1]}" in (ROOT / "requirements.txt").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_image_runs_as_a_numeric_non_root_user(dockerfile):
    last = list(stages(dockerfile).values())[-1]
    users = re.findall(r"^USER\s+(\S+)$", last, flags=re.MULTILINE)

    assert users, f"{dockerfile.name} runs as root"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it; 10001, as useradd creates it above.
    assert uid == gid == "10001"
    assert "--uid 10001" in last


def test_static_files_are_collected_with_their_manifest_at_build_time():
    runtime = stages(ROOT / "Dockerfile")["runtime"]
    (collect,) = [
        line for line in instructions(runtime) if line.startswith("RUN") and "collectstatic" in line
    ]

    assert "STATIC_MANIFEST=False" not in runtime
    assert "STATIC_MANIFEST=True" in collect
    # The build-time key lives in the RUN's environment only, never in an ENV or ARG the image keeps.
    assert "SECRET_KEY=" in collect
    assert not re.search(r"^(ENV|ARG)\b[^\n]*(SECRET|PASSWORD|TOKEN)", runtime, flags=re.MULTILINE)


def test_the_code_stays_read_only_for_the_app_user_except_its_data_folder():
    runtime = stages(ROOT / "Dockerfile")["runtime"]

    assert re.search(r"^COPY \. \.$", runtime, flags=re.MULTILINE)
    assert "chown -R 10001:10001 /app/data" in runtime
    assert "COPY --chown" not in runtime


def test_web_worker_and_beat_run_the_image_s_gunicorn_and_healthcheck():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert 'CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", "0.0.0.0:8000"]' in dockerfile
    assert 'CMD ["python", "deploy/healthcheck.py"]' in dockerfile
    assert "EXPOSE 8000" in dockerfile


# ------------------------------------------------------------------------------------------------------
# The build context
# ------------------------------------------------------------------------------------------------------
def test_the_context_holds_what_the_image_runs(context):
    assert [path for path in RUNTIME_FILES if path not in context] == []
    assert "requirements-mlflow-ui.txt" in context


def test_the_context_holds_no_secrets_local_state_or_tests():
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text())

    assert [path for path in NEVER_IN_CONTEXT if not is_ignored(path, rules)] == []


def test_every_file_the_dockerfiles_copy_from_the_context_is_in_it(context):
    for dockerfile in DOCKERFILES:
        for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(), flags=re.MULTILINE):
            for source in sources.split():
                assert source == "." or source in context, (
                    f"{dockerfile.name} copies {source}, not in the context"
                )


def test_every_local_module_the_image_s_code_imports_is_in_the_context(context):
    packages = {path.split("/")[0] for path in context if path.endswith(".py")}
    missing = set()
    for path in sorted(item for item in context if item.endswith(".py")):
        tree = ast.parse((ROOT / path).read_text(), filename=path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module.split(".")[0] not in packages and module.split(".")[0] != "tests":
                    continue
                as_path = module.replace(".", "/")
                candidates = (f"{as_path}.py", f"{as_path}/__init__.py")
                on_disk = any((ROOT / candidate).exists() for candidate in candidates)
                if on_disk and not any(candidate in context for candidate in candidates):
                    missing.add(f"{path} imports {module}")

    assert sorted(missing) == []
