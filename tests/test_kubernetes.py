"""deploy/kubernetes: each overlay, rendered by kubectl's own kustomize (what `kubectl apply -k` applies), is
valid for Kubernetes 1.31 and KEDA, and gives the app what it reads, probes and scales the right pods."""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.conf import settings
from django.urls import resolve
from kubernetes_validate import utils as kubernetes_validate_utils
from referencing import Registry, Resource

from mlops_site import env
from tests.production_env import REQUIRED_IN_PRODUCTION as COMPOSE_REQUIRED

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("staging", "production")
KUBERNETES_VERSION = "1.31"
#: The image ./Dockerfile builds, as the base names it; the overlays give its registry and tag.
IMAGE = "mlops-site"
ROLES = ("web", "worker", "beat")
#: Compose's list, plus what the pods set that compose leaves to its own defaults.
REQUIRED_IN_PRODUCTION = COMPOSE_REQUIRED | {"SECURE_PROXY_SSL", "METRICS_TOKEN", "PROMETHEUS_MULTIPROC_DIR"}
#: Read by `manage.py ensure_admin`, which only the migration Job runs.
ADMIN_COMMAND_VARIABLES = {"DJANGO_ADMIN_USERNAME", "DJANGO_ADMIN_PASSWORD", "DJANGO_ADMIN_EMAIL"}
#: The upload limits (settings, in MB) the Ingress must let through.
UPLOAD_LIMITS = (
    "DATASET_MAX_UPLOAD_MB",
    "BATCH_MAX_UPLOAD_MB",
    "MODEL_MAX_UPLOAD_MB",
    "FEEDBACK_IMPORT_MAX_UPLOAD_MB",
)
KEDA_SCHEMAS = {
    "ScaledObject": KUBERNETES / "schemas" / "keda.sh_scaledobjects.v1alpha1.yaml",
    "TriggerAuthentication": KUBERNETES / "schemas" / "keda.sh_triggerauthentications.v1alpha1.yaml",
}
#: The CEL rules of the vendored KEDA schemas; jsonschema cannot run CEL, so each is checked by hand below.
KEDA_CEL_RULES = {
    "!has(self.minReplicaCount) || self.minReplicaCount <= "
    "(has(self.maxReplicaCount) ? self.maxReplicaCount : 100)"
}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


# ------------------------------------------------------------------------------
# Rendering and reading the manifests
# ------------------------------------------------------------------------------
def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        reason = "kubectl is not installed: its kustomize renders the overlays"
        if os.environ.get("REQUIRE_SERVICES") == "True":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k directory` would send, from kubectl's embedded kustomize."""
    kubectl = _kubectl()
    # No cluster and no configuration: kustomize works on the files alone.
    with tempfile.TemporaryDirectory(prefix="kubectl-home-") as home:
        result = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home},
        )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed: {result.stderr}"
    return [item for item in yaml.safe_load_all(result.stdout) if item]


@dataclass
class Rendered:
    name: str
    objects: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.objects if item["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [item for item in self.all(kind) if item["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: {len(found)} {kind} named {name}"
        return found[0]

    def config_map(self, name: str) -> dict[str, str]:
        return self.get("ConfigMap", name).get("data", {})

    def workloads(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(Deployment or Job, its pod spec)."""
        for item in self.objects:
            if item["kind"] in ("Deployment", "Job"):
                yield item, item["spec"]["template"]["spec"]

    def deployment(self, role: str) -> dict[str, Any]:
        return self.get("Deployment", f"mlops-{role}")

    def main_container(self, role: str) -> dict[str, Any]:
        (container,) = self.deployment(role)["spec"]["template"]["spec"]["containers"]
        return container

    def config(self) -> dict[str, str]:
        """The app's ConfigMap (its name carries kustomize's content hash)."""
        (item,) = [cm for cm in self.all("ConfigMap") if cm["metadata"]["name"].startswith("mlops-config-")]
        return item["data"]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param, render(KUBERNETES / "overlays" / request.param))


@cache
def example_secrets() -> dict[str, dict[str, str]]:
    documents = yaml.safe_load_all((KUBERNETES / "secret.example.yaml").read_text())
    return {item["metadata"]["name"]: item for item in documents if item}


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def environment(rendered: Rendered, container: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds, with the example Secrets standing in for the real ones."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(rendered.config_map(source["configMapRef"]["name"]))
        else:
            values.update(example_secrets()[source["secretRef"]["name"]]["stringData"])
    for variable in container.get("env", []):
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            values[variable["name"]] = example_secrets()[ref["name"]]["stringData"][ref["key"]]
    return values


def _variables_read_by_settings() -> set[str]:
    import mlops_site.settings  # noqa: F401  (importing records every variable it reads)

    return set(env.READ_VARIABLES)


def _variables_read_by_gunicorn_config() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "deploy" / "gunicorn.conf.py", ROOT / "deploy" / "gunicorn_worker.py"):
        names |= set(
            re.findall(r'(?:_positive_int|environ\.get|getenv)\(\s*"([A-Z][A-Z0-9_]*)"', path.read_text())
        )
    return names


def _command(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def _quantity(value: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    return float(text)


# ------------------------------------------------------------------------------
# Schemas: Kubernetes 1.31 (kubernetes-validate, strict) and KEDA's CRDs (vendored)
# ------------------------------------------------------------------------------
def _closed(node: Any) -> Any:
    """The schema with unknown fields refused, as the API server's strict field validation does (kubectl
    apply's default), except where the CRD keeps unknown fields on purpose."""
    if isinstance(node, dict):
        closed = {key: _closed(value) for key, value in node.items()}
        keeps_unknown = node.get("x-kubernetes-preserve-unknown-fields", False)
        if "properties" in node and "additionalProperties" not in node and not keeps_unknown:
            closed["additionalProperties"] = False
        return closed
    if isinstance(node, list):
        return [_closed(value) for value in node]
    return node


@cache
def _kubernetes_definitions() -> Resource:
    contents = kubernetes_validate_utils.schema_contents(
        f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict/_definitions.json", KUBERNETES_VERSION
    )
    return Resource.from_contents(contents)


@cache
def keda_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = _closed(yaml.safe_load(KEDA_SCHEMAS[kind].read_text()))
    definitions = _kubernetes_definitions()
    schema["properties"]["apiVersion"] = {"const": "keda.sh/v1alpha1"}
    schema["properties"]["kind"] = {"const": kind}
    # The API server checks a custom resource's metadata as any object's.
    schema["properties"]["metadata"] = {
        "$ref": f"{definitions.id()}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return jsonschema.Draft202012Validator(schema, registry=definitions @ Registry())


def _keda_cel_rules(node: Any) -> set[str]:
    if isinstance(node, dict):
        rules = {rule["rule"] for rule in node.get("x-kubernetes-validations", [])}
        return rules.union(*(_keda_cel_rules(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_keda_cel_rules(value) for value in node))
    return set()


def validate(item: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless the object is valid; an unknown kind is an error too."""
    name = item.get("metadata", {}).get("name", "")
    if not (len(name) <= 63 and DNS_LABEL.fullmatch(name)):
        raise jsonschema.ValidationError(f"{item.get('kind')} name {name!r} is not a DNS label")
    if item.get("apiVersion", "").startswith("keda.sh/"):
        keda_validator(item["kind"]).validate(item)
        spec = item["spec"]
        if item["kind"] == "ScaledObject" and spec.get("minReplicaCount", 0) > spec.get(
            "maxReplicaCount", 100
        ):
            raise jsonschema.ValidationError("minReplicaCount must be less than or equal to maxReplicaCount")
        return
    kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)


def test_every_object_is_valid_for_kubernetes_1_31_and_keda(overlay):
    kinds = set()
    for item in overlay.objects:
        validate(item)
        kinds.add(item["kind"])

    assert {"Deployment", "Job", "Service", "HorizontalPodAutoscaler", "ScaledObject", "Ingress"} <= kinds


def test_the_example_secrets_are_valid_and_hold_no_real_secret():
    for name, item in example_secrets().items():
        validate(item)
        for key, value in item["stringData"].items():
            if key in ("AWS_ACCESS_KEY_ID", "address") or value == "":
                continue
            # Every secret value is an obvious example, in a URL or alone.
            assert "change-me" in value or value.startswith("changeme"), f"{name}.{key} looks real: {value!r}"


def test_the_validators_reject_broken_manifests(overlay):
    deployment = copy.deepcopy(overlay.deployment("web"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(jsonschema.ValidationError, match="paht"):
        validate(deployment)
    deployment = copy.deepcopy(overlay.deployment("beat"))
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(overlay.get("ScaledObject", "mlops-worker"))
    scaled["spec"]["triggers"][0]["authRef"] = {"name": "mlops-redis"}
    with pytest.raises(jsonschema.ValidationError, match="authRef"):
        validate(scaled)
    scaled = copy.deepcopy(overlay.get("ScaledObject", "mlops-worker"))
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 4
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = "4"
    scaled["spec"]["minReplicaCount"] = scaled["spec"]["maxReplicaCount"] + 1
    with pytest.raises(jsonschema.ValidationError, match="minReplicaCount"):
        validate(scaled)


def test_each_cel_rule_of_the_keda_schemas_is_checked_by_hand():
    rules = set().union(
        *(_keda_cel_rules(yaml.safe_load(path.read_text())) for path in KEDA_SCHEMAS.values())
    )

    assert rules == KEDA_CEL_RULES


# ------------------------------------------------------------------------------
# What the pods get: the variables the app reads, the settings it accepts
# ------------------------------------------------------------------------------
def test_every_variable_the_pods_get_is_read_by_the_app(overlay):
    read = _variables_read_by_settings()
    for workload, pod in overlay.workloads():
        for container in _containers(pod):
            allowed = set(read)
            if "gunicorn" in _command(container):
                allowed |= _variables_read_by_gunicorn_config()
            if "ensure_admin" in " ".join(_command(container)):
                allowed |= ADMIN_COMMAND_VARIABLES
            # $(NAME) in a command is Kubernetes' own expansion.
            allowed |= set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", " ".join(_command(container))))
            extra = set(environment(overlay, container)) - allowed
            assert extra == set(), (
                f"{workload['metadata']['name']}/{container['name']} gets unread {sorted(extra)}"
            )


def test_every_pod_gets_the_variables_it_needs_in_production(overlay):
    for workload, pod in overlay.workloads():
        for container in _containers(pod):
            missing = REQUIRED_IN_PRODUCTION - set(environment(overlay, container))
            assert missing == set(), (
                f"{workload['metadata']['name']}/{container['name']} lacks {sorted(missing)}"
            )
    config = overlay.config()
    assert config["DEBUG"] == "False"
    assert config["SECURE_PROXY_SSL"] == "True"
    assert config["LOG_FORMAT"] == "json"


def test_the_pods_share_one_value_for_each_variable(overlay):
    seen: dict[str, tuple[str, str]] = {}
    for workload, pod in overlay.workloads():
        for container in _containers(pod):
            where = f"{workload['metadata']['name']}/{container['name']}"
            for name, value in environment(overlay, container).items():
                first = seen.setdefault(name, (value, where))
                assert first[0] == value, f"{name} is {first[0]!r} in {first[1]} but {value!r} in {where}"


def _settings_with(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    show = (
        "import json, mlops_site.settings as s; print(json.dumps({"
        "'ALLOWED_HOSTS': s.ALLOWED_HOSTS, 'CSRF_TRUSTED_ORIGINS': s.CSRF_TRUSTED_ORIGINS,"
        "'DEBUG': s.DEBUG, 'SECURE_PROXY_SSL': s.SECURE_PROXY_SSL,"
        "'engine': s.DATABASES['default']['ENGINE'],"
        "'broker': s.CELERY_BROKER_URL, 'cache': s.CACHES['default']['BACKEND'],"
        "'storage': s.STORAGES['default']['BACKEND'], 'beat_schedule': s.CELERY_BEAT_SCHEDULE_FILENAME,"
        "'metrics_dir': s.PROMETHEUS_MULTIPROC_DIR, 'metrics_port': s.CELERY_METRICS_PORT,"
        f"'uploads': [getattr(s, name) for name in {list(UPLOAD_LIMITS)!r}]}}))"
    )
    return subprocess.run(
        [sys.executable, "-c", show],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "mlops_site.settings", **environ},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def pod_settings(overlay) -> dict[str, Any]:
    """The settings as the pods of the overlay load them (every container's variables: they share values)."""
    environ: dict[str, str] = {}
    for _, pod in overlay.workloads():
        for container in _containers(pod):
            environ.update(environment(overlay, container))
    environ["SECRET_KEY"] = secrets.token_urlsafe(50)
    result = _settings_with(environ)
    assert result.returncode == 0, f"the settings refuse the {overlay.name} pods' variables: {result.stderr}"
    return json.loads(result.stdout)


def test_the_settings_load_from_the_pods_variables_with_every_integration_on(overlay, pod_settings):
    host = overlay.get("Ingress", "mlops-web")["spec"]["rules"][0]["host"]

    assert pod_settings["DEBUG"] is False
    assert pod_settings["SECURE_PROXY_SSL"] is True
    assert host in pod_settings["ALLOWED_HOSTS"]
    assert pod_settings["engine"] == "django.db.backends.postgresql"
    assert pod_settings["broker"].startswith("redis://")
    assert pod_settings["cache"] == "mlops_site.redis_cache.RedisCache"
    assert pod_settings["storage"] == "storages.backends.s3.S3Storage"


def test_the_example_secret_key_is_refused_until_it_is_changed(overlay):
    result = _settings_with(environment(overlay, overlay.main_container("web")))

    assert result.returncode != 0
    assert "SECRET_KEY is too weak" in result.stderr


# ------------------------------------------------------------------------------
# Wiring: selectors, ports, probes, commands
# ------------------------------------------------------------------------------
def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_selectors_match_the_pod_labels_of_one_deployment_only(overlay):
    pod_labels = {
        item["metadata"]["name"]: item["spec"]["template"]["metadata"]["labels"]
        for item in overlay.all("Deployment")
    }
    for item in overlay.all("Deployment"):
        assert _selects(item["spec"]["selector"]["matchLabels"], pod_labels[item["metadata"]["name"]])
    selectors = [(svc, svc["spec"]["selector"]) for svc in overlay.all("Service")]
    selectors += [(pdb, pdb["spec"]["selector"]["matchLabels"]) for pdb in overlay.all("PodDisruptionBudget")]
    for item, selector in selectors:
        selected = [name for name, labels in pod_labels.items() if _selects(selector, labels)]
        assert selected == [item["metadata"]["name"]], (
            f"{item['kind']} {item['metadata']['name']} selects {selected}"
        )
    assert {pdb["metadata"]["name"] for pdb in overlay.all("PodDisruptionBudget")} == {
        "mlops-web",
        "mlops-worker",
    }


def _container_port(container: dict[str, Any], port: str | int) -> int:
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return declared["containerPort"]
    raise AssertionError(f"{container['name']} has no port {port!r}")


def test_the_service_and_the_ingress_reach_the_web_container_port(overlay):
    service = overlay.get("Service", "mlops-web")
    web = overlay.main_container("web")
    (port,) = service["spec"]["ports"]
    gunicorn_bind = _command(web)[_command(web).index("--bind") + 1]

    assert _container_port(web, port["targetPort"]) == int(gunicorn_bind.rsplit(":", 1)[1])
    for rule in overlay.get("Ingress", "mlops-web")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "mlops-web"
            assert backend["port"].get("name", port["name"]) == port["name"]
            assert backend["port"].get("number", port["port"]) == port["port"]


def test_web_probes_ask_healthz_for_liveness_and_readyz_for_readiness(overlay):
    web = overlay.main_container("web")
    allowed_hosts = overlay.config()["ALLOWED_HOSTS"].split(",")
    expected = {"startupProbe": "healthz", "livenessProbe": "healthz", "readinessProbe": "readyz"}
    for probe_name, view in expected.items():
        probe = web[probe_name]["httpGet"]
        assert resolve(probe["path"]).func.__name__ == view, probe_name
        assert _container_port(web, probe["port"]) == 8000
        # The kubelet calls the pod's address: Django answers 400 unless the Host header is allowed.
        (host,) = [header["value"] for header in probe["httpHeaders"] if header["name"] == "Host"]
        assert host in allowed_hosts, f"{probe_name} sends Host {host}, not in ALLOWED_HOSTS"
        # The probes speak plain HTTP to the pod: SECURE_SSL_REDIRECT must leave them alone.
        path = probe["path"].lstrip("/")
        assert any(re.search(pattern, path) for pattern in settings.SECURE_REDIRECT_EXEMPT), probe_name
    # /readyz probes three systems for up to 3 s each.
    assert web["readinessProbe"]["timeoutSeconds"] >= 10


def test_worker_and_beat_are_checked_by_the_healthcheck_of_their_own_role(overlay):
    from deploy import healthcheck

    for role in ROLES:
        container = overlay.main_container(role)
        # The script tells the role from PID 1, which is the container's command.
        assert healthcheck.role(_command(container)) == role
        if role == "web":
            continue
        assert container["livenessProbe"]["exec"]["command"] == ["python", "deploy/healthcheck.py"]
        # It pings the worker for up to 5 s, after Django's start.
        assert container["livenessProbe"]["timeoutSeconds"] >= 10


def _compose_command(service: str) -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"][service]["command"]


def _without_variables(command: list[str]) -> list[str]:
    """Variables as the same token, whether compose's ${NAME:-default} or Kubernetes' $(NAME)."""
    return [
        re.sub(r"\$\{([A-Z0-9_]+)(:?[-?][^}]*)?\}|\$\(([A-Z0-9_]+)\)", r"<\1\3>", part) for part in command
    ]


def test_the_commands_are_those_of_the_image_and_of_compose(overlay):
    dockerfile = (ROOT / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, flags=re.MULTILINE)

    assert _command(overlay.main_container("web")) == json.loads(cmd)
    for role in ("worker", "beat"):
        assert _without_variables(_command(overlay.main_container(role))) == _without_variables(
            _compose_command(role)
        ), role
    migrate = overlay.get("Job", "mlops-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert _command(migrate) == _compose_command("migrate")


# ------------------------------------------------------------------------------
# Scaling: the HPA for the web, KEDA for the workers, one beat
# ------------------------------------------------------------------------------
def _autoscaled(overlay: Rendered) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(autoscaler, the Deployment it scales)."""
    found = []
    for item in [*overlay.all("HorizontalPodAutoscaler"), *overlay.all("ScaledObject")]:
        ref = item["spec"]["scaleTargetRef"]
        assert (ref.get("apiVersion", "apps/v1"), ref.get("kind", "Deployment")) == ("apps/v1", "Deployment")
        found.append((item, overlay.get("Deployment", ref["name"])))
    return found


def test_the_hpa_scales_the_web_on_cpu_and_keda_the_workers(overlay):
    targets = {item["kind"]: deployment["metadata"]["name"] for item, deployment in _autoscaled(overlay)}
    hpa = overlay.get("HorizontalPodAutoscaler", "mlops-web")
    (metric,) = hpa["spec"]["metrics"]

    assert targets == {"HorizontalPodAutoscaler": "mlops-web", "ScaledObject": "mlops-worker"}
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is a share of the request: without one the HPA cannot compute it.
    assert "cpu" in overlay.main_container("web")["resources"]["requests"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    for role in ("web", "worker"):
        # An autoscaler owns these replicas: a count in the manifest would be reset at every apply.
        assert "replicas" not in overlay.deployment(role)["spec"], role


def _celery_queues() -> set[str]:
    from mlops_site.celery import app

    return {queue.name for queue in app.amqp.queues.values()} or {app.conf.task_default_queue}


def test_keda_watches_every_celery_queue_in_the_broker_the_workers_use(overlay):
    scaled = overlay.get("ScaledObject", "mlops-worker")
    worker_env = environment(overlay, overlay.main_container("worker"))
    broker = urlsplit(worker_env["CELERY_BROKER_URL"])
    triggers = scaled["spec"]["triggers"]

    assert {trigger["metadata"]["listName"] for trigger in triggers} == _celery_queues()
    # Never scaled to zero: beat's periodic tasks and the heartbeat need a worker.
    assert scaled["spec"]["minReplicaCount"] >= 1
    for trigger in triggers:
        assert trigger["type"] == "redis"
        metadata = trigger["metadata"]
        assert metadata.get("databaseIndex", "0") == (broker.path.strip("/") or "0")
        assert (metadata.get("enableTLS") == "true") == (broker.scheme == "rediss")
        auth = overlay.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
        parameters = {}
        for ref in auth["spec"]["secretTargetRef"]:
            parameters[ref["parameter"]] = example_secrets()[ref["name"]]["stringData"][ref["key"]]
        assert parameters["address"] == f"{broker.hostname}:{broker.port or 6379}"
        assert parameters.get("password", "") == (broker.password or "")


def test_beat_runs_exactly_one_replica_and_never_two_at_once(overlay):
    beat = overlay.deployment("beat")

    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert "mlops-beat" not in {deployment["metadata"]["name"] for _, deployment in _autoscaled(overlay)}


# ------------------------------------------------------------------------------
# Pods: user, file system, resources, migrations, image
# ------------------------------------------------------------------------------
def test_pods_run_as_the_image_user_on_a_read_only_root_filesystem(overlay):
    uid = int(re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))
    for workload, pod in overlay.workloads():
        name = workload["metadata"]["name"]
        context = pod["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["runAsNonRoot"]) == (uid, uid, True), (
            name
        )
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in _containers(pod):
            own = container["securityContext"]
            assert own["readOnlyRootFilesystem"] is True, f"{name}/{container['name']}"
            assert own["allowPrivilegeEscalation"] is False, f"{name}/{container['name']}"
            assert own["capabilities"] == {"drop": ["ALL"]}, f"{name}/{container['name']}"


def test_every_folder_the_app_writes_is_a_mounted_volume(overlay, pod_settings):
    for workload, pod in overlay.workloads():
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for container in _containers(pod):
            mounts = {
                mount["mountPath"]: volumes[mount["name"]] for mount in container.get("volumeMounts", [])
            }
            writable = {"/tmp", pod_settings["metrics_dir"]}
            if container["name"] == "beat":
                writable.add(str(Path(pod_settings["beat_schedule"]).parent))
            assert writable <= set(mounts), (
                f"{workload['metadata']['name']}/{container['name']}: {sorted(mounts)}"
            )
            assert all("emptyDir" in volume for volume in mounts.values())
            # The metric files are written for every request: memory, not disk.
            assert mounts[pod_settings["metrics_dir"]]["emptyDir"]["medium"] == "Memory"
    assert pod_settings["metrics_port"] == 9808
    assert _container_port(overlay.main_container("worker"), "metrics") == 9808


def test_every_container_has_resource_requests_within_its_limits(overlay):
    for workload, pod in overlay.workloads():
        for container in _containers(pod):
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request = _quantity(resources["requests"][resource])
                limit = _quantity(resources["limits"][resource])
                assert 0 < request <= limit, f"{workload['metadata']['name']}/{container['name']} {resource}"


def test_every_pod_waits_for_the_migration_job_of_its_release(overlay):
    job = overlay.get("Job", "mlops-migrate")
    job_pod = job["spec"]["template"]["spec"]
    (migrate,) = job_pod["containers"]

    assert job_pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
    assert "migrate --noinput" in " ".join(_command(migrate))
    for role in ROLES:
        pod = overlay.deployment(role)["spec"]["template"]["spec"]
        (wait,) = pod["initContainers"]
        assert "manage.py migrate --check" in " ".join(_command(wait)), role
        assert wait["image"] == migrate["image"] == pod["containers"][0]["image"], role
        assert wait["envFrom"] == pod["containers"][0]["envFrom"], role


def test_every_container_runs_the_overlay_s_release_of_the_image(overlay):
    kustomization = yaml.safe_load(
        (KUBERNETES / "overlays" / overlay.name / "kustomization.yaml").read_text()
    )
    (image,) = [entry for entry in kustomization["images"] if entry["name"] == IMAGE]
    for workload, pod in overlay.workloads():
        for container in _containers(pod):
            assert container["image"] == f"{image['newName']}:{image['newTag']}", workload["metadata"]["name"]


def test_the_ingress_serves_its_hosts_over_tls_and_the_app_accepts_them(overlay, pod_settings):
    ingress = overlay.get("Ingress", "mlops-web")
    tls_hosts = {
        host for entry in ingress["spec"]["tls"] if entry.get("secretName") for host in entry["hosts"]
    }
    body_limit = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]

    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in tls_hosts
        assert rule["host"] in pod_settings["ALLOWED_HOSTS"]
        assert f"https://{rule['host']}" in pod_settings["CSRF_TRUSTED_ORIGINS"]
    assert re.fullmatch(r"\d+m", body_limit)
    assert int(body_limit[:-1]) >= max(pod_settings["uploads"])


def test_the_overlays_differ_in_namespace_image_hosts_and_replicas():
    rendered = {name: Rendered(name, render(KUBERNETES / "overlays" / name)) for name in OVERLAYS}

    def facts(overlay: Rendered) -> tuple[Any, ...]:
        (namespace,) = overlay.all("Namespace")
        return (
            namespace["metadata"]["name"],
            overlay.main_container("web")["image"],
            overlay.get("Ingress", "mlops-web")["spec"]["rules"][0]["host"],
            overlay.get("HorizontalPodAutoscaler", "mlops-web")["spec"]["maxReplicas"],
            overlay.get("ScaledObject", "mlops-worker")["spec"]["maxReplicaCount"],
            overlay.config()["AWS_STORAGE_BUCKET_NAME"],
        )

    staging, production = (facts(rendered[name]) for name in OVERLAYS)
    assert all(a != b for a, b in zip(staging, production, strict=True)), (staging, production)
    for overlay in rendered.values():
        (namespace,) = overlay.all("Namespace")
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for item in overlay.objects:
            if item["kind"] != "Namespace":
                assert item["metadata"]["namespace"] == namespace["metadata"]["name"], item["metadata"][
                    "name"
                ]


# ------------------------------------------------------------------------------
# deploy.sh: the migration Job before the rollouts
# ------------------------------------------------------------------------------
FAKE_KUBECTL = """#!/bin/sh
echo "$*" >> "$KUBECTL_LOG"
case "$*" in
    *"get job"*) echo "$JOB_CONDITIONS" ;;
    *"logs job"*) echo "django.db.utils.OperationalError: could not connect" ;;
esac
"""


def _deploy(tmp_path: Path, conditions: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    log = tmp_path / "kubectl.log"
    log.unlink(missing_ok=True)
    result = subprocess.run(
        ["bash", str(KUBERNETES / "deploy.sh"), "staging"],
        env={
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "KUBECTL_LOG": str(log),
            "JOB_CONDITIONS": conditions,
            "ROLLOUT_TIMEOUT": "30",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, log.read_text().splitlines()


def test_deploy_script_migrates_before_it_waits_for_the_rollouts(tmp_path):
    result, calls = _deploy(tmp_path, "SuccessCriteriaMet Complete")

    assert result.returncode == 0, result.stderr
    assert calls == [
        "-n mlops-staging get secret mlops-app",
        "-n mlops-staging get secret mlops-redis-keda",
        "-n mlops-staging delete job mlops-migrate --ignore-not-found --wait=true",
        f"apply -k {KUBERNETES / 'overlays' / 'staging'}",
        '-n mlops-staging get job mlops-migrate -o jsonpath={.status.conditions[?(@.status=="True")].type}',
        "-n mlops-staging rollout status deployment/mlops-web --timeout=30s",
        "-n mlops-staging rollout status deployment/mlops-worker --timeout=30s",
        "-n mlops-staging rollout status deployment/mlops-beat --timeout=30s",
    ]


def test_deploy_script_stops_with_the_job_s_log_when_the_migrations_fail(tmp_path):
    result, calls = _deploy(tmp_path, "FailureTarget Failed")

    assert result.returncode == 1
    assert "the migration Job failed" in result.stderr
    assert "could not connect" in result.stderr
    assert not [call for call in calls if "rollout" in call]
