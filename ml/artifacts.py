"""Model files: checksums, skops save/load with our trusted-types list, ONNX load, and upload checks.

Nothing here ever unpickles. skops files are loaded with TRUSTED_TYPES, a list kept in this module:
it is never derived from the file being loaded, so a file naming an unexpected type is refused.

skops, onnx and onnxruntime are imported by the functions that use them, not with this module: importing
skops.io scans scikit-learn (most of a second of CPU), which a process that never opens a model file
(most web workers, every manage.py command) would pay at start.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.errors import ArtifactError

if TYPE_CHECKING:
    import onnxruntime

SKOPS = "skops"
ONNX = "onnx"

# Types our catalogue pipelines store that skops does not trust by default. A test dumps every
# catalogue pipeline and checks this list covers what skops reports; widen it only by reviewing the type.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ZIP_MAGIC = b"PK\x03\x04"
# First bytes of formats people upload by mistake, named in the refusal.
_KNOWN_HEADERS: tuple[tuple[bytes, str], ...] = (
    (b"\x80", "a Python pickle (also what joblib and plain .pkl files are)"),
    (b"\x1f\x8b", "a gzip-compressed file (a compressed joblib or pickle?)"),
    (b"\x78\x9c", "a zlib-compressed file (a compressed joblib or pickle?)"),
    (b"\x78\x01", "a zlib-compressed file (a compressed joblib or pickle?)"),
    (b"\x78\xda", "a zlib-compressed file (a compressed joblib or pickle?)"),
    (b"BZh", "a bzip2-compressed file (a compressed joblib or pickle?)"),
    (b"\xfd7zXZ", "an xz-compressed file (a compressed joblib or pickle?)"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"\x89HDF", "an HDF5 file (a Keras model?)"),
)
UPLOAD_EXTENSIONS = {".skops": SKOPS, ".onnx": ONNX}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksum_verify(data: bytes, *, sha256: str) -> None:
    if not isinstance(sha256, str) or not _SHA256.match(sha256.lower()):
        raise ArtifactError(
            "The expected checksum is not a sha256 hex digest; refusing to load the model file."
        )
    if not hmac.compare_digest(sha256_hex(data), sha256.lower()):
        raise ArtifactError(
            "The model file's sha256 checksum does not match the one recorded at registration; "
            "the file was changed or damaged, so it is not loaded."
        )


def skops_dump(pipeline: Any) -> bytes:
    import skops.io

    return skops.io.dumps(pipeline)


def skops_load(data: bytes, *, sha256: str) -> Any:
    """Verify the checksum, then load with our trusted types only."""
    checksum_verify(data, sha256=sha256)
    if not data.startswith(_ZIP_MAGIC):
        raise ArtifactError(f"This is not a skops file: it looks like {_describe(data)}. Nothing was loaded.")
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return skops.io.loads(data, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:
        raise ArtifactError(
            f"The skops file uses types this site does not trust, so it was not loaded. {exc}"
        ) from exc
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ArtifactError(f"The skops file could not be read: {exc}") from exc


def onnx_load(data: bytes, *, sha256: str) -> onnxruntime.InferenceSession:
    """Verify the checksum, then open one onnxruntime session (CPU, one thread per call)."""
    checksum_verify(data, sha256=sha256)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # A web worker serves many requests; one thread per inference keeps latency predictable under load.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # Errors only: shape-mismatch warnings would otherwise go to stderr on every call.
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        raise ArtifactError(f"The ONNX model could not be opened: {exc}") from exc


def _describe(data: bytes) -> str:
    for header, name in _KNOWN_HEADERS:
        if data.startswith(header):
            return name
    if data.startswith(_ZIP_MAGIC):
        return "a zip archive"
    return "an unrecognised format"


@dataclass(frozen=True)
class UploadedModel:
    kind: str
    sha256: str
    size: int


def uploaded_model_validate(*, data: bytes, filename: str) -> UploadedModel:
    """Accept a skops or ONNX file, recognised by its content; refuse everything else with the reason.

    skops files are opened with our trusted types (never unpickled), so one naming an unexpected type is
    refused here rather than at first use. ONNX files must parse and pass onnx.checker.
    """
    name = filename or "the file"
    extension = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if not data:
        raise ArtifactError(f"{name} is empty.")
    if data.startswith(_ZIP_MAGIC):
        kind = _skops_validate(data, name)
    elif any(data.startswith(header) for header, _ in _KNOWN_HEADERS):
        raise ArtifactError(
            f"{name} is {_describe(data)}. Pickle-based files can run arbitrary code when loaded, so they "
            "are never accepted: export the model with skops (skops.io.dump) or convert it to ONNX."
        )
    else:
        kind = _onnx_validate(data, name)
    expected = UPLOAD_EXTENSIONS.get(extension)
    if expected is None:
        raise ArtifactError(f"{name} must be named .skops or .onnx (its content is a {kind} model).")
    if expected != kind:
        raise ArtifactError(f"{name} is named {extension} but contains a {kind} model; rename it to .{kind}.")
    return UploadedModel(kind=kind, sha256=sha256_hex(data), size=len(data))


def _skops_validate(data: bytes, name: str) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if "schema.json" not in archive.namelist():
                raise ArtifactError(f"{name} is a zip archive but not a skops file (it has no schema.json).")
    except zipfile.BadZipFile as exc:
        raise ArtifactError(f"{name} is a damaged zip archive: {exc}") from exc
    model = skops_load(data, sha256=sha256_hex(data))
    if not callable(getattr(model, "predict", None)):
        raise ArtifactError(f"{name} holds a {type(model).__name__}, which has no predict method.")
    return SKOPS


def _onnx_validate(data: bytes, name: str) -> str:
    import onnx

    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf's DecodeError and onnx's ValidationError share no useful base
        raise ArtifactError(
            f"{name} is neither a skops file nor a valid ONNX model ({_describe(data)}): {exc}".rstrip(": ")
        ) from exc
    if not model.graph.input or not model.graph.output:
        raise ArtifactError(f"{name} is an ONNX file without graph inputs or outputs, so it cannot predict.")
    return ONNX
