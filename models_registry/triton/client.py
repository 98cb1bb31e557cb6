"""A small client of Triton's HTTP API (KServe v2 JSON protocol plus Triton's model repository extension).

tritonclient is not used: it pins protobuf below 5, and this project runs protobuf 7. The calls the app
needs are few: health, model readiness, inference, and the repository API's index, load (with the model's
files sent in the request, so Triton needs no volume shared with the app) and unload. Django-free: the
prediction path, the deployment service and the local tritonserver (local_server) all use it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import struct
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

from models_registry.triton import model_config

#: The header saying how long the JSON part of a binary inference request or answer is.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: Seconds a load may take: the Python backend starts a process per model instance.
LOAD_TIMEOUT_S = 120.0


class TritonError(Exception):
    """Triton answered a request with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Triton answered {status}: {message}")
        self.status = status
        self.detail = message


class TritonUnreachable(Exception):
    """No answer from Triton: refused, reset, timed out or not HTTP."""


class Client:
    """Triton's HTTP endpoint at `url` (http://host:8000); every call waits at most `timeout` seconds."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"A Triton address is http(s)://host:port, not {url!r}.")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        text, _header_length = self._send(method, path, data, {}, timeout=timeout)
        try:
            return json.loads(text) if text else None
        except ValueError as exc:
            raise TritonUnreachable(f"Triton at {self.url} answered {method} {path} with non-JSON") from exc

    def _send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], *, timeout: float | None
    ) -> tuple[bytes, int | None]:
        """The answer's body and its Inference-Header-Content-Length (binary tensors follow the JSON)."""
        headers = {"Content-Type": "application/json", **headers}
        call = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)  # noqa: S310 (http(s) checked above)
        try:
            with urllib.request.urlopen(call, timeout=timeout or self.timeout) as answer:  # noqa: S310
                length = answer.headers.get(HEADER_LENGTH)
                return answer.read(), int(length) if length else None
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("error", detail)
            raise TritonError(exc.code, detail) from None
        except (OSError, http.client.HTTPException) as exc:
            raise TritonUnreachable(f"Triton at {self.url} did not answer {method} {path}: {exc}") from exc

    def ready(self, model: str | None = None, version: int | None = None) -> bool:
        """Whether the server (or the model, or one version of it) is ready; False when unreachable."""
        path = "/v2/health/ready" if model is None else f"/v2/models/{_quoted(model)}"
        if version is not None:
            path += f"/versions/{version}"
        if model is not None:
            path += "/ready"
        try:
            self.request("GET", path, timeout=min(self.timeout, 5.0))
        except (TritonError, TritonUnreachable):
            return False
        return True

    def model_versions(self, model: str) -> list[int]:
        """The versions of the model Triton serves now, by its metadata; [] when it serves none."""
        try:
            metadata = self.request("GET", f"/v2/models/{_quoted(model)}", timeout=min(self.timeout, 5.0))
        except TritonError as exc:
            if exc.status >= 500:
                raise
            return []
        return sorted(int(v) for v in metadata.get("versions") or [])

    def load(
        self, model: str, *, config: Mapping[str, Any] | None = None, files: Mapping[str, bytes] | None = None
    ) -> None:
        """Load (or reload) a model through the repository API.

        Without `config`, Triton reads the model from its repository folder. With `config` (the ModelConfig
        as JSON) and `files` (paths relative to the model's folder, `<version>/model.onnx`), Triton loads
        exactly those files, sent in the request: the repository needs no copy of them, and the versions
        served are the ones in `files`.
        """
        parameters: dict[str, str] = {}
        if config is not None:
            parameters["config"] = json.dumps(config)
        for name, data in (files or {}).items():
            parameters[f"file:{name}"] = base64.b64encode(data).decode("ascii")
        body = {"parameters": parameters} if parameters else {}
        self.request(
            "POST",
            f"/v2/repository/models/{_quoted(model)}/load",
            body,
            timeout=max(self.timeout, LOAD_TIMEOUT_S),
        )

    def unload(self, model: str) -> None:
        self.request("POST", f"/v2/repository/models/{_quoted(model)}/unload", {})

    def repository_index(self) -> list[dict[str, Any]]:
        return self.request("POST", "/v2/repository/index", {})

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        datatypes: Mapping[str, str] | None = None,
        outputs: list[str] | None = None,
        binary: bool = False,
    ) -> dict[str, np.ndarray]:
        """One inference request; outputs as arrays of their datatype's numpy type (BYTES as str).

        `binary` sends and receives the tensors in the binary tensor data extension instead of JSON: the
        only way to carry NaN (a missing number the model imputes), and cheaper for many rows. Outputs are
        then named in `outputs` (Triton answers binary only for outputs asked for).
        """
        tensors = [
            _tensor(name, values, (datatypes or {}).get(name), binary) for name, values in inputs.items()
        ]
        body: dict[str, Any] = {"inputs": [header for header, _data in tensors]}
        if outputs:
            body["outputs"] = [
                {"name": name, **({"parameters": {"binary_data": True}} if binary else {})}
                for name in outputs
            ]
        path = f"/v2/models/{_quoted(model)}" + (f"/versions/{version}" if version is not None else "")
        header = json.dumps(body, allow_nan=False).encode()
        blobs = b"".join(data for _header, data in tensors)
        extra = {HEADER_LENGTH: str(len(header))} if binary else {}
        text, header_length = self._send("POST", path + "/infer", header + blobs, extra, timeout=None)
        header_length = len(text) if header_length is None else header_length
        try:
            answer = json.loads(text[:header_length])
        except ValueError as exc:
            raise TritonUnreachable(f"Triton at {self.url} answered an inference with non-JSON") from exc
        arrays, offset = {}, header_length
        for output in answer["outputs"]:
            size = (output.get("parameters") or {}).get("binary_data_size")
            if size is None:
                arrays[output["name"]] = _array(output)
            else:
                arrays[output["name"]] = _binary_array(output, text[offset : offset + size])
                offset += size
        return arrays


def _quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")


_NUMPY_DATATYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "BOOL": np.bool_,
    "BYTES": object,
}


def _tensor(
    name: str, values: np.ndarray, datatype: str | None, binary: bool = False
) -> tuple[dict[str, Any], bytes]:
    """The tensor's JSON header and, in binary mode, its raw bytes (little-endian, row-major)."""
    values = np.asarray(values)
    if datatype is None:
        if values.dtype.kind in "OUS":
            datatype = "BYTES"
        else:
            datatype = model_config.PROTOCOL_DATATYPES[model_config.ONNX_TO_TRITON[_onnx_type(values.dtype)]]
    header: dict[str, Any] = {"name": name, "shape": list(values.shape), "datatype": datatype}
    if not binary:
        header["data"] = [str(v) for v in values.ravel()] if datatype == "BYTES" else values.ravel().tolist()
        return header, b""
    if datatype == "BYTES":
        # Each element as its length (4 bytes, little-endian) and its UTF-8 bytes.
        parts = []
        for value in values.ravel():
            encoded = value if isinstance(value, bytes) else str(value).encode()
            parts += [struct.pack("<I", len(encoded)), encoded]
        data = b"".join(parts)
    else:
        data = np.ascontiguousarray(
            values, dtype=np.dtype(_NUMPY_DATATYPES[datatype]).newbyteorder("<")
        ).tobytes()
    header["parameters"] = {"binary_data_size": len(data)}
    return header, data


def _onnx_type(dtype: np.dtype) -> int:
    import onnx.helper

    return onnx.helper.np_dtype_to_tensor_dtype(dtype)


def _array(output: dict[str, Any]) -> np.ndarray:
    dtype = _NUMPY_DATATYPES.get(output["datatype"], object)
    return np.asarray(output["data"], dtype=dtype).reshape(output["shape"])


def _binary_array(output: dict[str, Any], data: bytes) -> np.ndarray:
    datatype = output["datatype"]
    if datatype == "BYTES":
        values, offset = [], 0
        while offset < len(data):
            (length,) = struct.unpack_from("<I", data, offset)
            values.append(data[offset + 4 : offset + 4 + length].decode("utf-8", errors="replace"))
            offset += 4 + length
        return np.asarray(values, dtype=object).reshape(output["shape"])
    if datatype not in _NUMPY_DATATYPES:
        raise TritonError(0, f"output {output['name']!r} has datatype {datatype}, which is not supported")
    dtype = np.dtype(_NUMPY_DATATYPES[datatype]).newbyteorder("<")
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(output["shape"])
