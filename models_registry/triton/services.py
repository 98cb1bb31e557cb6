"""Export model versions as Triton model repositories: one version, or every model's production version.

The management command, the version page and the API call these; all of them refuse, with the reason, a
version without a usable ONNX file (skops-only, a failed conversion) or whose stored file no longer
matches its sha256.
"""

from __future__ import annotations

from pathlib import Path

from ml import artifacts
from mlops_site import storage
from models_registry import selectors
from models_registry.models import ModelVersion, Stage
from models_registry.triton import model_config, repository
from models_registry.triton.repository import ExportRefused

__all__ = [
    "ExportRefused",
    "triton_model_files",
    "triton_production_versions",
    "triton_repository_archive",
    "triton_repository_write",
]


def _onnx_bytes(model_version: ModelVersion) -> bytes:
    if not model_version.has_onnx:
        reason = f" ({model_version.onnx_reason})" if model_version.onnx_reason else ""
        raise ExportRefused(
            [
                f"{model_version} has no ONNX file{reason}; Triton serves ONNX models only. Retrain it, or "
                "upload an ONNX export as a new version."
            ]
        )
    data = storage.read_bytes(model_version.onnx_key)
    if data is None:
        raise ExportRefused(
            [f"The stored ONNX file of {model_version} is missing ({model_version.onnx_key})."]
        )
    if model_version.onnx_sha256 and artifacts.sha256_hex(data) != model_version.onnx_sha256:
        raise ExportRefused([f"The stored ONNX file of {model_version} no longer matches its sha256."])
    return data


def triton_model_files(
    *,
    model_version: ModelVersion,
    backend: str = model_config.ONNX_BACKEND,
    max_batch_size: int = model_config.DEFAULT_MAX_BATCH_SIZE,
) -> dict[str, bytes]:
    """The repository files of one version: `<model>/config.pbtxt` and `<model>/<version>/model.onnx`."""
    return repository.model_files(
        model_name=model_version.registered_model.name,
        version=model_version.version,
        onnx_bytes=_onnx_bytes(model_version),
        backend=backend,
        max_batch_size=max_batch_size,
    )


def triton_production_versions() -> list[ModelVersion]:
    """The production version of every model, by model name."""
    return list(selectors.model_version_list().filter(stage=Stage.PRODUCTION))


def triton_repository_write(
    *,
    model_versions: list[ModelVersion],
    output: Path,
    backend: str = model_config.ONNX_BACKEND,
    max_batch_size: int = model_config.DEFAULT_MAX_BATCH_SIZE,
) -> list[Path]:
    """Write the versions into the repository at `output` (created if needed; other models left alone).

    Every version is converted and checked before the first file is written, so a refusal writes nothing.
    Writing a version into a repository that holds the model already replaces config.pbtxt and adds the
    version's folder beside the others: with Triton's default version policy (latest 1), loading the model
    again serves the new version.
    """
    names = [v.registered_model.name for v in model_versions]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ExportRefused(
            [f"Several versions of {', '.join(duplicated)}: a repository serves one per model."]
        )
    files: dict[str, bytes] = {}
    problems: list[str] = []
    for version in model_versions:
        try:
            files.update(
                triton_model_files(model_version=version, backend=backend, max_batch_size=max_batch_size)
            )
        except ExportRefused as exc:
            problems += [m if m.startswith(str(version)) else f"{version}: {m}" for m in exc.messages]
    if problems:
        raise ExportRefused(problems)
    return repository.files_write(files, root=output)


def triton_repository_archive(
    *,
    model_version: ModelVersion,
    backend: str = model_config.ONNX_BACKEND,
    max_batch_size: int = model_config.DEFAULT_MAX_BATCH_SIZE,
) -> bytes:
    """The version's repository as a .tar.gz (the model's folder at its root)."""
    return repository.files_tar_gz(
        triton_model_files(model_version=model_version, backend=backend, max_batch_size=max_batch_size)
    )
