"""An MLflow sklearn model directory written from a fitted pipeline: skops file, MLmodel, signature, pins.

The gateway uploads the directory as a logged model's artifacts; this module only writes it. mlflow and
skops are imported when a directory is written, not with this module (see mlflow_gateway).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlflow.models import Model

INPUT_EXAMPLE_ROWS = 5
# The packages a model's environment pins to this process's versions: what loading the skops file needs.
_PACKAGES_TO_PIN = ("scikit-learn", "skops", "numpy", "scipy", "pandas")


def model_dir_write(
    path: str,
    *,
    model: Any,
    mlflow_model: Model,
    skops_trusted_types: Sequence[str],
    input_example: Any = None,
    output_example: Any = None,
    pip_requirements: Sequence[str] | None = None,
    model_skops: bytes | None = None,
) -> None:
    """Save `model` with the sklearn flavor in skops format at `path` (which must not exist).

    `input_example` is cut to a few rows. `output_example`, the model's predictions for those rows when
    the caller has them, gives the signature's outputs without MLflow predicting the example again.
    `model_skops`, the model already dumped with skops.io, becomes the flavor's file (see
    _skops_file_given). Raises MlflowException when the file holds types outside `skops_trusted_types`.
    """
    import mlflow.models
    import mlflow.sklearn

    example = _input_example_head(input_example)
    signature = None
    if example is not None and output_example is not None:
        outputs = pd.Series(np.asarray(output_example)[: len(example)])
        signature = mlflow.models.infer_signature(example, outputs)
    with _skops_file_given(model_skops):
        mlflow.sklearn.save_model(
            model,
            path=path,
            mlflow_model=mlflow_model,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=list(skops_trusted_types),
            input_example=example,
            # None: MLflow infers it by predicting the example.
            signature=signature,
            # Explicit requirements skip MLflow's inference, which loads the model in a subprocess.
            pip_requirements=list(pip_requirements) if pip_requirements is not None else _pip_requirements(),
        )


_SKOPS_FILE_LOCK = threading.Lock()


@contextlib.contextmanager
def _skops_file_given(data: bytes | None) -> Iterator[None]:
    """Within the block, mlflow.sklearn.save_model writes `data` as the model file.

    save_model dumps the model with skops, then loads the file back to check that every type in it is
    trusted; the caller has the dump already, and skops can list a file's untrusted types from its schema
    without loading it. The same check and the same MlflowException when it fails, without the dump and
    the load. MLflow offers no parameter for a ready file, so its module function is swapped while the
    lock is held; every save_model call of this module holds it, so none sees another's file.
    """
    import mlflow.sklearn
    import skops.io
    from mlflow.exceptions import MlflowException

    def save(sk_model: Any, output_path: str, serialization_format: str, skops_trusted_types: Any) -> None:
        if serialization_format != mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS:
            raise ValueError(f"a skops file was given for the {serialization_format} format")
        untrusted = set(skops.io.get_untrusted_types(data=data)) - set(skops_trusted_types or ())
        if untrusted:
            raise MlflowException(
                "The saved sklearn model references untrusted types. If you are sure loading these types "
                "is safe, set the 'skops_trusted_types' parameter when calling 'log_model' or "
                f"'save_model' to the list of trusted types. Root error: untrusted types {sorted(untrusted)}"
            )
        Path(output_path).write_bytes(data)

    with _SKOPS_FILE_LOCK:
        if data is None:
            yield
            return
        original = mlflow.sklearn._save_model
        mlflow.sklearn._save_model = save
        try:
            yield
        finally:
            mlflow.sklearn._save_model = original


def _input_example_head(input_example: Any) -> Any:
    if input_example is None:
        return None
    if hasattr(input_example, "head"):
        return input_example.head(INPUT_EXAMPLE_ROWS)
    return input_example[:INPUT_EXAMPLE_ROWS]


@functools.cache
def _pip_requirements() -> list[str]:
    pins = []
    for package in _PACKAGES_TO_PIN:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pins.append(f"{package}=={importlib.metadata.version(package)}")
    return pins
