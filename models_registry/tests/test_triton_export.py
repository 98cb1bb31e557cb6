"""Export of model versions as Triton model repositories: config.pbtxt read from the real ONNX graph and
checked against it, ZipMap outputs made tensors, the management command, the page and API downloads."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from ml import artifacts, onnx_export
from ml.train import model_train
from mlops_site import storage
from models_registry.models import ModelVersion, RegisteredModel, Stage
from models_registry.tests.registry_helpers import make_model, make_version
from models_registry.triton import model_config, repository
from tests.factories import make_api_client, make_user

pytestmark = pytest.mark.django_db


SCHEMA = [
    {"name": "age", "kind": "numeric"},
    {"name": "income", "kind": "numeric"},
    {"name": "city", "kind": "categorical"},
    {"name": "label", "kind": "categorical"},
]


def frame(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "age": rng.integers(18, 80, rows),
            "income": rng.normal(50_000, 12_000, rows).round(2),
            "city": rng.choice(["Berlin", "Paris", "Rome"], rows),
        }
    )
    data["label"] = np.where(data["income"] + 400 * (data["city"] == "Paris") > 50_000, "yes", "no")
    return data


def trained_version(
    name: str,
    number: int,
    *,
    algorithm: str = "random_forest",
    task: str = "classification",
    stage: str = Stage.NONE,
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> ModelVersion:
    """A version whose ONNX file is a real trained pipeline's conversion, stored as training stores it."""
    target = "label" if task == "classification" else "income"
    result = model_train(
        frame=frame(seed=seed),
        schema_columns=SCHEMA,
        target_column=target,
        algorithm=algorithm,
        task=task,
        params=params,
        seed=seed,
    )
    conversion = onnx_export.onnx_convert(
        pipeline=result.pipeline,
        feature_schema=result.feature_schema,
        X_holdout=result.X_holdout,
        classes=result.classes,
    )
    assert conversion.available, conversion.reason
    key = f"models/sha256/{conversion.sha256[:2]}/{conversion.sha256}.onnx"
    storage.put_bytes(key, conversion.data)
    registered = RegisteredModel.objects.filter(name=name).first() or make_model(
        name, task=task, target=target
    )
    return make_version(
        registered,
        number,
        stage=stage,
        algorithm=algorithm,
        feature_schema=result.feature_schema,
        classes=result.classes,
        metrics={"accuracy": 0.9} if task == "classification" else {"r2": 0.5},
        skops_key="",
        skops_sha256="",
        onnx_key=key,
        onnx_sha256=conversion.sha256,
        onnx_status=ModelVersion.OnnxStatus.AVAILABLE,
    )


def onnx_of(version: ModelVersion) -> bytes:
    return storage.read_bytes(version.onnx_key)


def files_of(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


# ------------------------------------------------------------------------------
# config.pbtxt from the graph
# ------------------------------------------------------------------------------
def test_a_classifier_config_names_the_graphs_inputs_and_outputs_with_their_types_and_shapes():
    version = trained_version("churn", 1)
    files = repository.model_files(model_name="churn", version=1, onnx_bytes=onnx_of(version))

    assert set(files) == {"churn/config.pbtxt", "churn/1/model.onnx"}
    assert files["churn/1/model.onnx"] == onnx_of(version)
    config = model_config.config_parse(files["churn/config.pbtxt"].decode())
    summary = model_config.config_summary(config)
    assert summary["name"] == "churn"
    assert summary["platform"] == "onnxruntime_onnx"
    assert summary["backend"] == "onnxruntime"
    assert summary["max_batch_size"] == model_config.DEFAULT_MAX_BATCH_SIZE
    assert summary["input"] == [
        {"name": "age", "data_type": "TYPE_FP32", "dims": ["1"]},
        {"name": "income", "data_type": "TYPE_FP32", "dims": ["1"]},
        # Categorical columns are string tensors, as the model takes them.
        {"name": "city", "data_type": "TYPE_STRING", "dims": ["1"]},
    ]
    # The label is a vector [N] in the graph: [1] per row for Triton, reshaped to the model's [].
    assert summary["output"] == [
        {"name": "label", "data_type": "TYPE_STRING", "dims": ["1"], "reshape": {}},
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": ["2"]},
    ]
    assert summary["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
    assert int(summary["dynamic_batching"]["max_queue_delay_microseconds"]) == 100
    assert model_config.config_problems(config, onnx.load_from_string(onnx_of(version))) == []


def test_a_regressor_config_has_one_variable_output_per_row():
    version = trained_version("income", 1, task="regression", algorithm="ridge")
    files = repository.model_files(model_name="income", version=1, onnx_bytes=onnx_of(version))

    summary = model_config.config_summary(model_config.config_parse(files["income/config.pbtxt"].decode()))
    assert summary["output"] == [{"name": "variable", "data_type": "TYPE_FP32", "dims": ["1"]}]
    # A regressor's features include the categorical target of the classifier; here label is a string input.
    assert {i["name"]: i["data_type"] for i in summary["input"]} == {
        "age": "TYPE_FP32",
        "city": "TYPE_STRING",
        "label": "TYPE_STRING",
    }


def test_a_zipmap_output_becomes_the_probability_tensor_with_the_same_answers():
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    features = rng.normal(size=(60, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 60)
    with_zipmap = to_onnx(LogisticRegression().fit(features, labels), features[:1])
    assert with_zipmap.graph.output[1].type.WhichOneof("value") == "sequence_type"

    files = repository.model_files(model_name="iris", version=3, onnx_bytes=with_zipmap.SerializeToString())

    exported = files["iris/3/model.onnx"]
    summary = model_config.config_summary(model_config.config_parse(files["iris/config.pbtxt"].decode()))
    assert summary["output"] == [
        {"name": "output_label", "data_type": "TYPE_INT64", "dims": ["1"], "reshape": {}},
        {"name": "output_probability", "data_type": "TYPE_FP32", "dims": ["3"]},
    ]
    before = onnxruntime.InferenceSession(with_zipmap.SerializeToString()).run(None, {"X": features})
    after = onnxruntime.InferenceSession(exported).run(None, {"X": features})
    assert after[1].shape == (60, 3)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], [[row[c] for c in range(3)] for row in before[1]])


def test_the_check_names_every_way_a_config_disagrees_with_the_model():
    version = trained_version("churn", 1)
    model = onnx.load_from_string(onnx_of(version))
    text = repository.model_files(model_name="churn", version=1, onnx_bytes=onnx_of(version))[
        "churn/config.pbtxt"
    ]
    config = model_config.config_parse(text.decode())
    config.input[2].data_type = (
        model_config.ModelConfig.DESCRIPTOR.fields_by_name["input"]
        .message_type.fields_by_name["data_type"]
        .enum_type.values_by_name["TYPE_FP32"]
        .number
    )
    config.input[1].name = "salary"
    del config.output[1].dims[:]
    config.output[1].dims.append(3)
    config.output[0].ClearField("reshape")
    config.instance_group[0].kind = 1  # KIND_GPU
    config.ClearField("dynamic_batching")

    problems = model_config.config_problems(config, model)

    assert "input 'city' is TYPE_FP32 in config.pbtxt, TYPE_STRING in the model." in problems
    assert "The model's inputs ['income'] are not in config.pbtxt." in problems
    assert "config.pbtxt's inputs ['salary'] are not in the model." in problems
    assert "output 'probabilities' is [3] per row in config.pbtxt, [2] in the model." in problems
    assert "output 'label' is [1] per row in config.pbtxt, [] in the model." in problems
    assert "instance_group must run on the CPU (KIND_CPU)." in problems
    assert "dynamic_batching is missing." in problems


def test_a_config_that_is_not_a_triton_model_config_is_refused_by_the_text_format_parser():
    with pytest.raises(model_config.ConfigError, match="dimss"):
        model_config.config_parse('name: "m"\ninput { name: "x" data_type: TYPE_FP32 dimss: 1 }')
    with pytest.raises(model_config.ConfigError, match="TYPE_FLOAT"):
        model_config.config_parse('name: "m"\ninput { name: "x" data_type: TYPE_FLOAT dims: 1 }')


def test_the_python_backend_repository_carries_the_same_model_and_a_model_py():
    version = trained_version("churn", 2)
    files = repository.model_files(
        model_name="churn", version=2, onnx_bytes=onnx_of(version), backend="python"
    )

    assert files["churn/2/model.onnx"] == onnx_of(version)
    assert b"class TritonPythonModel" in files["churn/2/model.py"]
    summary = model_config.config_summary(model_config.config_parse(files["churn/config.pbtxt"].decode()))
    assert summary["backend"] == "python"
    assert "platform" not in summary


# ------------------------------------------------------------------------------
# The management command
# ------------------------------------------------------------------------------
def test_the_command_writes_one_version_as_a_repository(tmp_path):
    version = trained_version("churn", 1)
    out = io.StringIO()

    call_command("triton_export", "churn", "1", "--output", str(tmp_path / "repo"), stdout=out)

    assert (tmp_path / "repo/churn/1/model.onnx").read_bytes() == onnx_of(version)
    config = model_config.config_parse((tmp_path / "repo/churn/config.pbtxt").read_text())
    assert config.name == "churn"
    assert "Exported churn v1" in out.getvalue()


def test_the_command_exports_every_models_production_version_as_one_repository(tmp_path):
    trained_version("churn", 1, stage=Stage.ARCHIVED)
    churn = trained_version("churn", 2, stage=Stage.PRODUCTION, seed=1)
    income = trained_version("income", 4, task="regression", algorithm="ridge", stage=Stage.PRODUCTION)
    trained_version("income", 5, task="regression", algorithm="ridge", stage=Stage.STAGING)

    call_command("triton_export", "--production", "--output", str(tmp_path / "repo"), stdout=io.StringIO())

    found = sorted(
        str(p.relative_to(tmp_path / "repo")) for p in (tmp_path / "repo").rglob("*") if p.is_file()
    )
    assert found == ["churn/2/model.onnx", "churn/config.pbtxt", "income/4/model.onnx", "income/config.pbtxt"]
    assert (tmp_path / "repo/churn/2/model.onnx").read_bytes() == onnx_of(churn)
    assert (tmp_path / "repo/income/4/model.onnx").read_bytes() == onnx_of(income)


def test_a_version_without_onnx_is_refused_and_nothing_is_written(tmp_path):
    registered = make_model("churn")
    make_version(registered, 1, onnx_reason="ONNX conversion failed: unsupported estimator")
    trained_version("income", 1, task="regression", algorithm="ridge")

    with pytest.raises(CommandError) as refused:
        call_command("triton_export", "churn", "1", "--output", str(tmp_path / "repo"))

    assert "churn v1 has no ONNX file (ONNX conversion failed: unsupported estimator)" in str(refused.value)
    assert not (tmp_path / "repo").exists()


def test_a_refused_production_version_stops_the_whole_export(tmp_path):
    make_version(make_model("churn"), 1, stage=Stage.PRODUCTION)
    trained_version("income", 1, task="regression", algorithm="ridge", stage=Stage.PRODUCTION)

    with pytest.raises(CommandError, match="churn v1 has no ONNX file"):
        call_command("triton_export", "--production", "--output", str(tmp_path / "repo"))

    assert not (tmp_path / "repo").exists()


def test_a_stored_onnx_file_that_changed_is_refused(tmp_path):
    version = trained_version("churn", 1)
    storage.delete(version.onnx_key)
    storage.put_bytes(version.onnx_key, b"not the model")

    with pytest.raises(CommandError, match="no longer matches its sha256"):
        call_command("triton_export", "churn", "1", "--output", str(tmp_path))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["churn"], "Give NAME VERSION"),
        (["churn", "9"], "Model 'churn' has no version 9."),
        (["churn", "1", "--production"], "not both"),
        (["--production"], "No model has a production version"),
    ],
)
def test_the_command_refuses_unclear_requests(tmp_path, arguments, message):
    make_version(make_model("churn"), 1)
    with pytest.raises(CommandError, match=message):
        call_command("triton_export", *arguments, "--output", str(tmp_path))


# ------------------------------------------------------------------------------
# Downloads: the version page and the API
# ------------------------------------------------------------------------------
def test_staff_download_a_versions_repository_from_the_page_and_the_api(client):
    version = trained_version("churn", 1)
    staff = make_user("staff", staff=True)
    client.force_login(staff)

    assert 'id="triton-download"' in client.get("/models/churn/versions/1/").content.decode()
    page = client.get("/models/churn/versions/1/triton")
    api = make_api_client(staff).get("/api/models/churn/versions/1/triton/?backend=python")

    assert page.status_code == 200
    assert page["Content-Type"] == "application/gzip"
    assert 'filename="churn-v1-triton.tar.gz"' in page["Content-Disposition"]
    files = files_of(page.content)
    assert set(files) == {"churn/config.pbtxt", "churn/1/model.onnx"}
    assert files["churn/1/model.onnx"] == onnx_of(version)
    assert model_config.config_parse(files["churn/config.pbtxt"].decode()).platform == "onnxruntime_onnx"
    assert api.status_code == 200
    assert set(files_of(api.content)) == {"churn/config.pbtxt", "churn/1/model.onnx", "churn/1/model.py"}


def test_a_version_without_onnx_is_refused_with_its_reason(client):
    make_version(make_model("churn"), 1, onnx_reason="ONNX conversion failed: unsupported estimator")
    staff = make_user("staff", staff=True)
    client.force_login(staff)

    page = client.get("/models/churn/versions/1/triton", follow=True)
    api = make_api_client(staff).get("/api/models/churn/versions/1/triton/")

    assert page.redirect_chain == [("/models/churn/versions/1/", 302)]
    assert "churn v1 has no ONNX file" in page.content.decode()
    assert api.status_code == 409
    assert api.json()["code"] == "triton_export_refused"
    assert "churn v1 has no ONNX file" in api.json()["detail"]


def test_only_staff_download_repositories(client):
    trained_version("churn", 1)
    user = make_user("analyst")
    client.force_login(user)

    assert 'id="triton-download"' not in client.get("/models/churn/versions/1/").content.decode()
    assert client.get("/models/churn/versions/1/triton").status_code == 403
    assert make_api_client(user).get("/api/models/churn/versions/1/triton/").status_code == 403
    assert make_api_client(None).get("/api/models/churn/versions/1/triton/").status_code == 401
    assert (
        make_api_client(make_user("staff", staff=True))
        .get("/api/models/churn/versions/9/triton/")
        .status_code
        == 404
    )
    assert (
        make_api_client(make_user("staff2", staff=True))
        .get("/api/models/churn/versions/1/triton/?backend=tensorrt")
        .status_code
        == 400
    )
    # An empty parameter is not taken for an absent one (the default).
    empty = make_api_client(make_user("staff3", staff=True)).get(
        "/api/models/churn/versions/1/triton/?backend=&max_batch_size="
    )
    assert empty.status_code == 400
    assert "backend" in empty.content.decode()
    assert "max_batch_size" in empty.content.decode()


def test_the_written_files_replace_atomically_and_keep_other_models(tmp_path: Path):
    (tmp_path / "other/1").mkdir(parents=True)
    (tmp_path / "other/1/model.onnx").write_bytes(b"kept")
    version = trained_version("churn", 1)
    files = repository.model_files(model_name="churn", version=1, onnx_bytes=onnx_of(version))

    repository.files_write(files, root=tmp_path)
    repository.files_write(files, root=tmp_path)

    assert (tmp_path / "other/1/model.onnx").read_bytes() == b"kept"
    assert sorted(p.name for p in (tmp_path / "churn").iterdir()) == ["1", "config.pbtxt"]
    assert artifacts.sha256_hex((tmp_path / "churn/1/model.onnx").read_bytes()) == version.onnx_sha256
