"""The MLflow gateway against a real SQLite tracking store and registry in a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import mlflow
import mlflow.sklearn
import numpy as np
import pytest
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from models_registry import mlflow_gateway
from models_registry.tests.mlflow_helpers import registered_model_read, run_read

ROOT = Path(__file__).resolve().parents[2]
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.fixture(scope="session")
def _template_store(tmp_path_factory) -> Path:
    """An initialised MLflow database: creating the schema takes a second, copying it does not."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture(autouse=True)
def _fresh_store(_isolated_data, _template_store, settings):
    shutil.copyfile(_template_store, settings.MLFLOW_TRACKING_URI.removeprefix("sqlite:///"))


@pytest.fixture(scope="module")
def data():
    features, target = load_breast_cancer(return_X_y=True, as_frame=True)
    return features.iloc[:200], target.iloc[:200]


@pytest.fixture(scope="module")
def pipeline(data) -> Pipeline:
    features, target = data
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, target)


def _client() -> mlflow.MlflowClient:
    from django.conf import settings

    return mlflow.MlflowClient(
        tracking_uri=settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_TRACKING_URI
    )


def _log(run_key: str, model, **overrides) -> str:
    arguments = {
        "run_key": run_key,
        "params": {"algorithm": "logistic_regression", "C": 1.0},
        "metrics": {"accuracy": 0.93, "f1": 0.91},
        "tags": {"dataset.sha256": SHA},
        "artifacts": {"reports/confusion.json": '{"tp": 3}', "model.onnx": b"\x08\x01onnx"},
        "model": model,
        **overrides,
    }
    return mlflow_gateway.training_run_log(**arguments).run_id


def _runs_with_key(run_key: str) -> list:
    experiment = _client().get_experiment_by_name("mlops-site")
    if experiment is None:
        return []
    return _client().search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlops.training_run` = '{run_key}'"
    )


def test_it_logs_params_metrics_tags_artifacts_and_the_model_of_a_training_run(pipeline, data):
    run_id = _log("run-1", pipeline, input_example=data[0])

    run = run_read(run_id)
    assert run.status == "FINISHED"
    assert run.params == {"algorithm": "logistic_regression", "C": "1.0"}
    assert run.metrics == {"accuracy": 0.93, "f1": 0.91}
    assert run.tags["dataset.sha256"] == SHA
    assert run.tags["mlops.training_run"] == "run-1"
    assert run.model_id
    folder = Path(tempfile.mkdtemp(dir=Path(run.artifact_uri.removeprefix("file://")).parent))
    downloaded = Path(_client().download_artifacts(run_id, "", str(folder)))
    assert (downloaded / "reports" / "confusion.json").read_text() == '{"tp": 3}'
    assert (downloaded / "model.onnx").read_bytes() == b"\x08\x01onnx"
    logged = _client().get_logged_model(run.model_id)
    assert logged.source_run_id == run_id
    assert str(logged.status) == "READY"
    model_folder = Path(logged.artifact_location.removeprefix("file://"))
    assert (model_folder / "model.skops").is_file()
    assert not list(model_folder.glob("*.pkl"))
    assert len(json.loads((model_folder / "input_example.json").read_text())["data"]) == 5


def test_predictions_given_with_the_example_make_the_signature_mlflow_would_infer(pipeline, data):
    predictions = pipeline.predict(data[0][:5])
    with mock.patch.object(Pipeline, "predict", side_effect=AssertionError("predicted the example again")):
        given = _log("run-given", pipeline, input_example=data[0], output_example=predictions)
    inferred = _log("run-inferred", pipeline, input_example=data[0])

    def signature(run_id: str) -> dict:
        logged = _client().get_logged_model(run_read(run_id).model_id)
        folder = Path(logged.artifact_location.removeprefix("file://"))
        return mlflow.models.Model.load(str(folder / "MLmodel")).signature.to_dict()

    assert signature(given) == signature(inferred)
    assert signature(given)["outputs"]


def test_registering_with_what_logging_returned_skips_looking_the_run_up(pipeline):
    logged = mlflow_gateway.training_run_log(
        run_key="run-logged", params={}, metrics={}, tags={}, artifacts={}, model=pipeline
    )
    with mock.patch.object(mlflow.MlflowClient, "get_run", side_effect=AssertionError("looked up")):
        version = mlflow_gateway.model_register(name="churn", run_id=logged.run_id, logged=logged)

    registered = _client().get_model_version("churn", str(version))
    assert (registered.run_id, registered.source) == (logged.run_id, logged.model_source)
    assert registered.status == "READY"


def test_it_logs_run_data_in_as_few_batches_as_mlflow_limits_allow(pipeline):
    params = {f"p{i}": i for i in range(150)}
    metrics = {f"m{i}": float(i) for i in range(1200)}
    tags = {f"t{i}": i for i in range(120)}
    batches = []
    log_batch = mlflow.MlflowClient.log_batch

    def counted(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        batches.append((len(metrics), len(params), len(tags)))
        return log_batch(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    with mock.patch.object(mlflow.MlflowClient, "log_batch", counted):
        run_id = _log("run-batches", pipeline, params=params, metrics=metrics, tags=tags)
        _log("run-one-batch", pipeline)

    run = run_read(run_id)
    assert run.params == {name: str(value) for name, value in params.items()}
    assert run.metrics == metrics
    assert {name: value for name, value in run.tags.items() if name[0] == "t"} == {
        name: str(value) for name, value in tags.items()
    }
    assert _client().get_logged_model(run.model_id).source_run_id == run_id
    # 100 params and 100 tags at most per batch, 1000 entries in all; the model's id is one more tag.
    assert batches == [(800, 100, 100), (400, 50, 21), (2, 2, 2)]


def test_it_creates_the_experiment_in_the_artifact_root_of_a_local_store(settings):
    experiment_id = mlflow_gateway.experiment_ensure()

    experiment = _client().get_experiment(experiment_id)
    assert experiment.name == settings.MLFLOW_EXPERIMENT_NAME
    assert experiment.artifact_location == settings.MLFLOW_ARTIFACT_ROOT
    assert mlflow_gateway.experiment_ensure() == experiment_id


def test_it_returns_the_finished_run_when_the_same_run_key_is_logged_again(pipeline):
    first = _log("run-2", pipeline)

    again = _log("run-2", pipeline, metrics={"accuracy": 0.5})

    assert again == first
    assert [run.info.run_id for run in _runs_with_key("run-2")] == [first]
    assert run_read(first).metrics["accuracy"] == 0.93


def test_it_replaces_an_unfinished_run_left_by_a_crash(pipeline):
    with (
        mock.patch.object(mlflow_gateway.runs, "_model_log", side_effect=RuntimeError("worker killed")),
        pytest.raises(RuntimeError),
    ):
        _log("run-3", pipeline)
    (crashed,) = _runs_with_key("run-3")
    assert crashed.info.status == "FAILED"
    with pytest.raises(mlflow_gateway.RegistryError, match="not FINISHED"):
        mlflow_gateway.model_register(name="churn", run_id=crashed.info.run_id)

    retried = _log("run-3", pipeline)

    assert retried != crashed.info.run_id
    assert [run.info.run_id for run in _runs_with_key("run-3")] == [retried]
    assert _client().get_run(crashed.info.run_id).info.lifecycle_stage == "deleted"
    assert run_read(retried).status == "FINISHED"


def test_it_logs_a_model_without_inferring_requirements_from_the_network(pipeline):
    with mock.patch("mlflow.models.infer_pip_requirements", side_effect=AssertionError("inferred")):
        run_id = _log("run-4", pipeline)

    logged = _client().get_logged_model(run_read(run_id).model_id)
    requirements = Path(logged.artifact_location.removeprefix("file://"), "requirements.txt").read_text()
    assert "scikit-learn==" in requirements
    assert "skops==" in requirements


def test_it_rejects_bad_input_before_creating_a_run(pipeline):
    for name in ("../evil.txt", "/etc/passwd", "a/../../b", "", ".", "reports/"):
        with pytest.raises(ValueError, match="artifact name"):
            _log("run-5", pipeline, artifacts={name: b"x"})
    with pytest.raises(ValueError, match="metric 'accuracy' must be a number"):
        _log("run-5", pipeline, metrics={"accuracy": "high"})
    with pytest.raises(ValueError, match="set by the gateway"):
        _log("run-5", pipeline, tags={"mlops.training_run": "other"})
    with pytest.raises(ValueError, match="run_key"):
        _log("run-5'; drop", pipeline)
    assert _runs_with_key("run-5") == []


def test_it_registers_a_run_once_however_often_it_is_asked(pipeline):
    run_id = _log("run-6", pipeline)

    first = mlflow_gateway.model_register(name="churn", run_id=run_id)
    second = mlflow_gateway.model_register(name="churn", run_id=run_id)

    assert first == second == 1
    assert [mv.version for mv in _client().search_model_versions("name = 'churn'")] == [1]
    other = mlflow_gateway.model_register(name="churn", run_id=_log("run-7", pipeline))
    assert other == 2


def test_it_deletes_a_version_that_never_becomes_ready(pipeline):
    run_id = _log("run-8", pipeline)
    stuck = mlflow_gateway.RegistryUnavailable("not READY after 60s")
    create = mlflow.MlflowClient.create_model_version

    def pending(self, *args, **kwargs):
        created = create(self, *args, **kwargs)
        created._status = "PENDING_REGISTRATION"  # as a tracking server answers while it copies the files
        return created

    with (
        mock.patch.object(mlflow.MlflowClient, "create_model_version", pending),
        mock.patch.object(mlflow_gateway.registry, "_version_wait", side_effect=stuck),
        pytest.raises(mlflow_gateway.RegistryUnavailable),
    ):
        mlflow_gateway.model_register(name="churn", run_id=run_id)

    assert list(_client().search_model_versions("name = 'churn'")) == []
    assert mlflow_gateway.model_register(name="churn", run_id=run_id) == 2


def _duplicate_alias_refusal() -> MlflowException:
    """What MLflow's store raises when a concurrent update inserted the alias row first."""
    integrity = sqlalchemy.exc.IntegrityError(
        "INSERT INTO registered_model_aliases",
        {},
        Exception("UNIQUE constraint failed: registered_model_aliases"),
    )
    try:
        raise integrity
    except sqlalchemy.exc.IntegrityError as cause:
        try:
            raise MlflowException(message=str(cause), error_code=BAD_REQUEST) from cause
        except MlflowException as refusal:
            return refusal


def test_two_threads_updating_one_alias_at_once_both_succeed_when_one_collides(pipeline):
    one = mlflow_gateway.model_register(name="churn", run_id=_log("run-11", pipeline))
    two = mlflow_gateway.model_register(name="churn", run_id=_log("run-12", pipeline))
    real_set = mlflow.MlflowClient.set_registered_model_alias
    real_delete = mlflow.MlflowClient.delete_registered_model_alias
    both_started = threading.Barrier(2)
    writing = threading.Lock()
    collided: list[str] = []

    def collide_once(real):
        def call(client, *args):
            if threading.current_thread().name not in collided:
                both_started.wait(timeout=10)
                # The other thread's insert came first, as in the race MLflow's check-then-insert allows.
                collided.append(threading.current_thread().name)
                raise _duplicate_alias_refusal()
            # The retries then write one at a time: the collision above is the race under test, not
            # SQLite's own write lock.
            with writing:
                return real(client, *args)

        return call

    errors: list[BaseException] = []

    def run(update):
        try:
            update()
        except BaseException as exc:
            errors.append(exc)

    with mock.patch.object(mlflow.MlflowClient, "set_registered_model_alias", collide_once(real_set)):
        threads = [
            threading.Thread(
                target=run,
                args=(lambda v=v: mlflow_gateway.alias_set(name="churn", alias="production", version=v),),
                name=f"set-{v}",
            )
            for v in (one, two)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    assert errors == []
    assert sorted(collided) == [f"set-{one}", f"set-{two}"]
    assert mlflow_gateway.aliases_get(name="churn")["production"] in (one, two)

    both_started = threading.Barrier(2)
    collided.clear()
    with mock.patch.object(mlflow.MlflowClient, "delete_registered_model_alias", collide_once(real_delete)):
        threads = [
            threading.Thread(
                target=run,
                args=(lambda: mlflow_gateway.alias_delete(name="churn", alias="production"),),
                name=f"delete-{i}",
            )
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    assert errors == []
    assert "production" not in mlflow_gateway.aliases_get(name="churn")


def test_an_alias_update_refused_for_another_reason_is_not_retried(pipeline):
    one = mlflow_gateway.model_register(name="churn", run_id=_log("run-13", pipeline))
    calls = []

    def refuse(client, *args):
        calls.append(args)
        raise MlflowException(message="alias is reserved", error_code=BAD_REQUEST)

    with (
        mock.patch.object(mlflow.MlflowClient, "set_registered_model_alias", refuse),
        pytest.raises(mlflow_gateway.RegistryError),
    ):
        mlflow_gateway.alias_set(name="churn", alias="production", version=one)

    assert len(calls) == 1


def test_aliases_are_set_moved_and_deleted(pipeline):
    one = mlflow_gateway.model_register(name="churn", run_id=_log("run-9", pipeline))
    two = mlflow_gateway.model_register(name="churn", run_id=_log("run-10", pipeline))

    mlflow_gateway.alias_set(name="churn", alias="production", version=one)
    mlflow_gateway.alias_set(name="churn", alias="staging", version=two)
    assert mlflow_gateway.aliases_get(name="churn") == {"production": one, "staging": two}

    mlflow_gateway.alias_set(name="churn", alias="production", version=two)
    mlflow_gateway.alias_set(name="churn", alias=f"archived-v{one}", version=one)
    mlflow_gateway.alias_delete(name="churn", alias="staging")
    mlflow_gateway.alias_delete(name="churn", alias="staging")
    assert mlflow_gateway.aliases_get(name="churn") == {"production": two, "archived-v1": one}

    with pytest.raises(mlflow_gateway.ModelNotFound):
        mlflow_gateway.alias_set(name="churn", alias="staging", version=99)
    with pytest.raises(mlflow_gateway.RegistryError):
        mlflow_gateway.alias_set(name="churn", alias="latest", version=one)


def test_deleting_a_version_removes_it_and_its_aliases(pipeline):
    version = mlflow_gateway.model_register(name="churn", run_id=_log("run-11", pipeline))
    mlflow_gateway.alias_set(name="churn", alias="staging", version=version)

    mlflow_gateway.model_version_delete(name="churn", version=version)
    mlflow_gateway.model_version_delete(name="churn", version=version)

    assert mlflow_gateway.aliases_get(name="churn") == {}
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"not found|RESOURCE_DOES_NOT_EXIST"):
        _client().get_model_version("churn", str(version))


def test_a_registered_version_serves_a_skops_model_that_predicts_like_the_original(pipeline, data):
    version = mlflow_gateway.model_register(name="churn", run_id=_log("run-12", pipeline))

    loaded = registered_model_read(name="churn", version=version)

    assert isinstance(loaded, Pipeline)
    np.testing.assert_array_equal(loaded.predict(data[0]), pipeline.predict(data[0]))
    np.testing.assert_array_equal(loaded.predict_proba(data[0]), pipeline.predict_proba(data[0]))


def test_unknown_models_raise_model_not_found():
    with pytest.raises(mlflow_gateway.ModelNotFound):
        mlflow_gateway.aliases_get(name="nothing")
    with pytest.raises(mlflow_gateway.ModelNotFound):
        mlflow_gateway.alias_set(name="nothing", alias="production", version=1)


def test_a_run_without_a_model_cannot_be_registered():
    run_id = _log("run-16", None)

    with pytest.raises(mlflow_gateway.ModelNotFound, match="logged no model"):
        mlflow_gateway.model_register(name="churn", run_id=run_id)


def test_an_unreachable_server_raises_registry_unavailable_quickly(settings, monkeypatch, pipeline):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{port}"
    started = time.monotonic()

    with pytest.raises(mlflow_gateway.RegistryUnavailable):
        mlflow_gateway.aliases_get(name="churn")
    with pytest.raises(mlflow_gateway.RegistryUnavailable):
        mlflow_gateway.model_register(name="churn", run_id="0123456789abcdef0123456789abcdef")
    with pytest.raises(mlflow_gateway.RegistryUnavailable):
        _log("run-17", pipeline)

    assert time.monotonic() - started < 10


def test_tracking_ui_url_links_runs_only_on_a_server(settings):
    assert mlflow_gateway.tracking_ui_url(run_id="abc") is None

    settings.MLFLOW_TRACKING_URI = "https://robot:s3cret@mlflow.example.org/"

    assert mlflow_gateway.tracking_ui_url(run_id="abc") == "https://mlflow.example.org/#/runs/abc"


def test_a_configured_mlflow_ui_url_links_runs_of_a_local_store_too(settings):
    settings.MLFLOW_UI_URL = "http://127.0.0.1:5000"

    assert mlflow_gateway.tracking_ui_url(run_id="a/b") == "http://127.0.0.1:5000/#/runs/a/b"


def test_two_processes_creating_a_fresh_local_store_at_once_both_succeed(tmp_path):
    store = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    script = (
        "import django, os, sys\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'mlops_site.settings'; django.setup()\n"
        "from django.conf import settings; settings.MLFLOW_TRACKING_URI = sys.argv[1]\n"
        "settings.MLFLOW_ARTIFACT_ROOT = sys.argv[2]\n"
        "from models_registry import mlflow_gateway; print(mlflow_gateway.experiment_ensure())\n"
    )
    environment = {**os.environ, "SECRET_KEY": "test-only-secret-key-not-for-production-0123456789"}
    command = [sys.executable, "-c", script, store, (tmp_path / "artifacts").as_uri()]
    workers = [
        subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    results = [(worker.wait(timeout=120), *worker.communicate()) for worker in workers]

    assert [code for code, _, _ in results] == [0, 0, 0], [err.decode()[-2000:] for _, _, err in results]
    assert len({out.strip() for _, out, _ in results}) == 1
