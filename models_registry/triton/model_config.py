"""Triton's model configuration (config.pbtxt): written from an ONNX graph, parsed and checked against it.

config.pbtxt is protobuf text format of Triton's `inference.ModelConfig` (model_config.proto in
triton-inference-server/common). tritonclient ships the generated module, but it pins protobuf below 5 and
this project runs protobuf 7, so the part of the schema an exported repository uses is declared here as a
descriptor, with Triton's field names, numbers and enum values, and parsed with protobuf's own text-format
parser: a misspelt field, a wrong enum value or a list where a scalar belongs is refused the way Triton
refuses it. What the parse cannot see (names, types and shapes against the model) `config_problems` checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import Message

#: Triton's DataType enum (model_config.proto), by ONNX TensorProto element type.
ONNX_TO_TRITON = {
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.STRING: "TYPE_STRING",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
}
#: The datatype names of Triton's HTTP/gRPC inference protocol (KServe v2), by config data type.
PROTOCOL_DATATYPES = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
    "TYPE_BF16": "BF16",
}
_DATA_TYPES = [
    ("TYPE_INVALID", 0),
    ("TYPE_BOOL", 1),
    ("TYPE_UINT8", 2),
    ("TYPE_UINT16", 3),
    ("TYPE_UINT32", 4),
    ("TYPE_UINT64", 5),
    ("TYPE_INT8", 6),
    ("TYPE_INT16", 7),
    ("TYPE_INT32", 8),
    ("TYPE_INT64", 9),
    ("TYPE_FP16", 10),
    ("TYPE_FP32", 11),
    ("TYPE_FP64", 12),
    ("TYPE_STRING", 13),
    ("TYPE_BF16", 14),
]
_KINDS = [("KIND_AUTO", 0), ("KIND_GPU", 1), ("KIND_CPU", 2), ("KIND_MODEL", 3)]

ONNX_PLATFORM = "onnxruntime_onnx"
ONNX_BACKEND = "onnxruntime"
PYTHON_BACKEND = "python"
#: Rows Triton may put in one batch; the dynamic batcher fills batches up to this size.
DEFAULT_MAX_BATCH_SIZE = 1024
#: How long the dynamic batcher holds a request for others to join it: a tenth of a millisecond, about
#: what one call of a small tree ensemble costs, so a lone request waits little.
DEFAULT_MAX_QUEUE_DELAY_US = 100
#: A dimension Triton calls variable.
VARIABLE = -1

_T = descriptor_pb2.FieldDescriptorProto
_REPEATED, _OPTIONAL = _T.LABEL_REPEATED, _T.LABEL_OPTIONAL


def _schema() -> type[Message]:
    """inference.ModelConfig, only the fields an exported repository uses (Triton's names and numbers)."""
    proto = descriptor_pb2.FileDescriptorProto(name="mlops_triton_model_config.proto", package="inference")
    proto.syntax = "proto3"
    for name, values in (("DataType", _DATA_TYPES), ("Kind", _KINDS)):
        enum = proto.enum_type.add(name=name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)

    def message(name: str, fields: list[tuple[str, int, int, int, str | None]]) -> None:
        added = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = added.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".inference.{type_name}"

    message("ModelTensorReshape", [("shape", 1, _T.TYPE_INT64, _REPEATED, None)])
    tensor = [
        ("name", 1, _T.TYPE_STRING, _OPTIONAL, None),
        ("data_type", 2, _T.TYPE_ENUM, _OPTIONAL, "DataType"),
    ]
    message(
        "ModelInput",
        [
            *tensor,
            ("dims", 4, _T.TYPE_INT64, _REPEATED, None),
            ("reshape", 5, _T.TYPE_MESSAGE, _OPTIONAL, "ModelTensorReshape"),
            ("optional", 8, _T.TYPE_BOOL, _OPTIONAL, None),
        ],
    )
    message(
        "ModelOutput",
        [
            *tensor,
            ("dims", 3, _T.TYPE_INT64, _REPEATED, None),
            ("reshape", 5, _T.TYPE_MESSAGE, _OPTIONAL, "ModelTensorReshape"),
            ("label_filename", 4, _T.TYPE_STRING, _OPTIONAL, None),
        ],
    )
    message(
        "ModelInstanceGroup",
        [
            ("name", 1, _T.TYPE_STRING, _OPTIONAL, None),
            ("count", 2, _T.TYPE_INT32, _OPTIONAL, None),
            ("gpus", 3, _T.TYPE_INT32, _REPEATED, None),
            ("kind", 4, _T.TYPE_ENUM, _OPTIONAL, "Kind"),
        ],
    )
    message(
        "ModelDynamicBatching",
        [
            ("preferred_batch_size", 1, _T.TYPE_INT32, _REPEATED, None),
            ("max_queue_delay_microseconds", 2, _T.TYPE_UINT64, _OPTIONAL, None),
            ("preserve_ordering", 3, _T.TYPE_BOOL, _OPTIONAL, None),
        ],
    )
    message(
        "ModelConfig",
        [
            ("name", 1, _T.TYPE_STRING, _OPTIONAL, None),
            ("platform", 2, _T.TYPE_STRING, _OPTIONAL, None),
            ("max_batch_size", 4, _T.TYPE_INT32, _OPTIONAL, None),
            ("input", 5, _T.TYPE_MESSAGE, _REPEATED, "ModelInput"),
            ("output", 6, _T.TYPE_MESSAGE, _REPEATED, "ModelOutput"),
            ("instance_group", 7, _T.TYPE_MESSAGE, _REPEATED, "ModelInstanceGroup"),
            ("default_model_filename", 8, _T.TYPE_STRING, _OPTIONAL, None),
            ("dynamic_batching", 11, _T.TYPE_MESSAGE, _OPTIONAL, "ModelDynamicBatching"),
            ("backend", 17, _T.TYPE_STRING, _OPTIONAL, None),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfig = _schema()


class ConfigError(ValueError):
    """config.pbtxt is not valid text format of Triton's ModelConfig."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as Triton sees it: shape without the batch dimension, -1 where variable."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    # The model's own shape when it is not `dims` (a label vector [N] served as dims [1]).
    reshape: tuple[int, ...] | None = None


def _dims(value_info: onnx.ValueInfoProto) -> list[int] | None:
    tensor = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else VARIABLE for d in tensor.shape.dim]


def graph_problems(model: onnx.ModelProto) -> list[str]:
    """Why Triton could not serve this graph with batching: non-tensor outputs (ZipMap), unknown types or
    ranks, or a first dimension that is not the batch."""
    problems = []
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            if not value.type.HasField("tensor_type"):
                problems.append(
                    f"ONNX {kind} '{value.name}' is a {value.type.WhichOneof('value')}, not a tensor "
                    "(a ZipMap output: convert with ZipMap off)."
                )
                continue
            if value.type.tensor_type.elem_type not in ONNX_TO_TRITON:
                problems.append(
                    f"ONNX {kind} '{value.name}' has element type {value.type.tensor_type.elem_type}."
                )
            dims = _dims(value)
            if not dims:
                problems.append(f"ONNX {kind} '{value.name}' has no known rank; Triton needs [batch, ...].")
            elif dims[0] != VARIABLE:
                problems.append(
                    f"ONNX {kind} '{value.name}' has a fixed first dimension {dims[0]}, not a batch."
                )
    return problems


def graph_tensors(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs as Triton tensors; call graph_problems first."""

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        data_type = ONNX_TO_TRITON[value.type.tensor_type.elem_type]
        per_row = tuple(_dims(value) or ())[1:]
        if not per_row:
            # A vector of one value per row ([N], a classifier's labels): Triton's dims may not be empty
            # with batching, so the tensor is [1] per row and reshaped to the model's [] per row.
            return TensorSpec(value.name, data_type, (1,), reshape=())
        return TensorSpec(value.name, data_type, per_row)

    return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]


def config_build(
    *,
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    backend: str = ONNX_BACKEND,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    instances: int = 1,
) -> Message:
    """The ModelConfig: the tensors, dynamic batching and `instances` CPU instances."""
    config = ModelConfig(name=name, backend=backend, max_batch_size=max_batch_size)
    if backend == ONNX_BACKEND:
        config.platform = ONNX_PLATFORM
        config.default_model_filename = "model.onnx"
    for specs, field in ((inputs, config.input), (outputs, config.output)):
        for tensor in specs:
            added = field.add(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims))
            if tensor.reshape is not None:
                added.reshape.SetInParent()
                added.reshape.shape.extend(tensor.reshape)
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.instance_group.add(count=instances, kind="KIND_CPU")
    return config


def config_text(config: Message) -> str:
    return text_format.MessageToString(config)


def config_parse(text: str) -> Message:
    """config.pbtxt as a ModelConfig; ConfigError with protobuf's line and column when it is not one."""
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"config.pbtxt is not a Triton ModelConfig: {exc}") from None
    return config


def _data_type_name(value: int) -> str:
    return (
        ModelConfig.DESCRIPTOR.file.pool.FindEnumTypeByName("inference.DataType").values_by_number[value].name
    )


def config_problems(config: Message, model: onnx.ModelProto, *, backend: str = ONNX_BACKEND) -> list[str]:
    """Every way the parsed config disagrees with the model's real graph and with what serving it needs."""
    problems = graph_problems(model)
    if problems:
        return problems
    if backend == ONNX_BACKEND:
        if config.platform != ONNX_PLATFORM and config.backend != ONNX_BACKEND:
            problems.append(
                f"platform is {config.platform!r} and backend {config.backend!r}: not ONNX Runtime."
            )
    elif config.backend != backend:
        problems.append(f"backend is {config.backend!r}, expected {backend!r}.")
    if config.max_batch_size < 1:
        problems.append("max_batch_size must be at least 1: the graph's first dimension is the batch.")
    if not config.HasField("dynamic_batching"):
        problems.append("dynamic_batching is missing.")
    if not config.instance_group or any(g.kind != _KINDS[2][1] for g in config.instance_group):
        problems.append("instance_group must run on the CPU (KIND_CPU).")
    graph_inputs, graph_outputs = graph_tensors(model)
    for kind, expected, configured in (
        ("input", graph_inputs, config.input),
        ("output", graph_outputs, config.output),
    ):
        by_name = {t.name: t for t in configured}
        missing = [t.name for t in expected if t.name not in by_name]
        extra = sorted(set(by_name) - {t.name for t in expected})
        if missing:
            problems.append(f"The model's {kind}s {missing} are not in config.pbtxt.")
        if extra:
            problems.append(f"config.pbtxt's {kind}s {extra} are not in the model.")
        for tensor in expected:
            found = by_name.get(tensor.name)
            if found is None:
                continue
            data_type = _data_type_name(found.data_type)
            if data_type != tensor.data_type:
                problems.append(
                    f"{kind} '{tensor.name}' is {data_type} in config.pbtxt, {tensor.data_type} in the model."
                )
            dims = tuple(found.dims)
            served = tuple(found.reshape.shape) if found.HasField("reshape") else dims
            model_shape = tensor.reshape if tensor.reshape is not None else tensor.dims
            if not _shapes_agree(served, model_shape):
                problems.append(
                    f"{kind} '{tensor.name}' is {list(served)} per row in config.pbtxt"
                    f"{' (reshape)' if found.HasField('reshape') else ''}, {list(model_shape)} in the model."
                )
            if not dims:
                problems.append(
                    f"{kind} '{tensor.name}' has empty dims: with batching use [1] and a reshape."
                )
    return problems


def _shapes_agree(configured: tuple[int, ...], model: tuple[int, ...]) -> bool:
    if len(configured) != len(model):
        return False
    return all(m == VARIABLE or c == m for c, m in zip(configured, model, strict=True))


def config_summary(config: Message) -> dict[str, Any]:
    """The parsed config as plain data, for messages and tests."""
    from google.protobuf import json_format

    return json_format.MessageToDict(config, preserving_proto_field_name=True)
