"""One model version as the files of a Triton model repository, checked before anything is written.

A repository holds `<model>/config.pbtxt` and `<model>/<version>/model.onnx` (plus `model.py` for the
Python backend). The ONNX file is the version's, with a ZipMap output (external classifiers converted with
skl2onnx's defaults) replaced by the probability tensor it wraps: Triton serves tensors only. The
config.pbtxt is written from the graph's real inputs and outputs, then parsed back with protobuf's
text-format parser and checked against the graph (model_config.config_problems); a disagreement refuses
the export instead of leaving a repository Triton would refuse at load time.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

import onnx
from onnx import helper

from models_registry.triton import model_config

BACKENDS = (model_config.ONNX_BACKEND, model_config.PYTHON_BACKEND)
PYTHON_MODEL = Path(__file__).with_name("python_model.py")


class ExportRefused(Exception):
    """The version cannot be served by Triton as it is; `messages` says why."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(" ".join(messages))
        self.messages = messages


def zipmap_removed(model: onnx.ModelProto) -> bool:
    """Replace each ZipMap node by an Identity of its input, keeping the output's name; True if any was.

    The probability tensor ZipMap wraps is [N, classes] float, in the order of the classifier's labels,
    which is the order a ZipMap-free conversion gives too.
    """
    zipmaps = [n for n in model.graph.node if n.op_type == "ZipMap"]
    if not zipmaps:
        return False
    for node in zipmaps:
        source, target = node.input[0], node.output[0]
        # ZipMap names the classes it maps, one per column of its input.
        classes = next(
            (len(a.ints) or len(a.strings) for a in node.attribute if a.name.startswith("classlabels")), 0
        )
        index = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(
            index, helper.make_node("Identity", [source], [target], name=f"{node.name}_tensor")
        )
        for position, output in enumerate(model.graph.output):
            if output.name == target:
                replacement = helper.make_tensor_value_info(
                    target, onnx.TensorProto.FLOAT, [None, classes or None]
                )
                model.graph.output.remove(output)
                model.graph.output.insert(position, replacement)
                break
    onnx.checker.check_model(model)
    return True


def model_files(
    *,
    model_name: str,
    version: int,
    onnx_bytes: bytes,
    backend: str = model_config.ONNX_BACKEND,
    max_batch_size: int = model_config.DEFAULT_MAX_BATCH_SIZE,
    instances: int = 1,
) -> dict[str, bytes]:
    """The repository's files for one version, by path relative to the repository root."""
    if backend not in BACKENDS:
        raise ExportRefused([f"Unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}."])
    if max_batch_size < 1:
        raise ExportRefused(["The maximum batch size must be at least 1."])
    try:
        model = onnx.load_from_string(onnx_bytes)
    except Exception as exc:  # onnx raises protobuf's DecodeError and others
        raise ExportRefused([f"The stored ONNX file does not load: {exc}"]) from None
    if zipmap_removed(model):
        onnx_bytes = model.SerializeToString()
    problems = model_config.graph_problems(model)
    if problems:
        raise ExportRefused(problems)
    inputs, outputs = model_config.graph_tensors(model)
    config = model_config.config_build(
        name=model_name,
        inputs=inputs,
        outputs=outputs,
        backend=backend,
        max_batch_size=max_batch_size,
        instances=instances,
    )
    text = (
        f"# {model_name} version {version}: written by manage.py triton_export from the registry's\n"
        f"# model.onnx (sha256 {hashlib.sha256(onnx_bytes).hexdigest()}),\n"
        "# inputs and outputs read from its graph.\n" + model_config.config_text(config)
    )
    # What Triton reads is the text: parse it back and check it against the graph, not the message built.
    problems = model_config.config_problems(model_config.config_parse(text), model, backend=backend)
    if problems:
        raise ExportRefused(problems)
    files = {f"{model_name}/config.pbtxt": text.encode(), f"{model_name}/{version}/model.onnx": onnx_bytes}
    if backend == model_config.PYTHON_BACKEND:
        files[f"{model_name}/{version}/model.py"] = PYTHON_MODEL.read_bytes()
    return files


def files_write(files: Mapping[str, bytes], *, root: Path) -> list[Path]:
    """Write the files under root, each through a temporary file and a rename: a Triton polling the
    repository never reads half a model."""
    written = []
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        written.append(path)
    return written


def files_tar_gz(files: Mapping[str, bytes]) -> bytes:
    """The files as a .tar.gz whose root is the repository (extract it into Triton's model repository)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        folders = sorted(
            {str(Path(name).parent) for name in files} | {str(Path(name).parent.parent) for name in files}
        )
        for folder in folders:
            if folder in ("", "."):
                continue
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(files[name]), 0o644
            archive.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()
