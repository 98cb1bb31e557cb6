"""Protobuf bytes written with numpy: an ONNX attribute's repeated values as entries, a message around chunks.

onnx.proto is proto2: a repeated number is not packed, each value is written with its own key. These
functions write what protobuf would for millions of values without handing them to protobuf one by one.
"""

from __future__ import annotations

import numpy as np
import onnx
from google.protobuf.message import Message


def varint_entries(key: int, values: np.ndarray) -> np.ndarray:
    """Each value as one protobuf field: the (one-byte) key, then the varint (7 bits a byte, low bits first).

    Negative int64 values are written as their 64-bit two's complement, ten bytes, as protobuf does.
    """
    numbers = values.astype(np.uint64)
    top = int(numbers.max(initial=0))
    if top < 1 << 32:
        numbers = numbers.astype(np.uint32)
    width = max(1, (top.bit_length() + 6) // 7)
    table = np.empty((len(numbers), width + 1), dtype=np.uint8)
    table[:, 0] = key
    sizes = np.full(len(numbers), 2, dtype=np.uint8)
    for position in range(width):
        rest = numbers >> numbers.dtype.type(7 * position)
        more = rest > 0x7F
        table[:, position + 1] = (rest.astype(np.uint8) & np.uint8(0x7F)) | (
            more.view(np.uint8) << np.uint8(7)
        )
        sizes += more
    return table.ravel() if width == 1 else _rows_cut(table, sizes)


def float_entries(key: int, values: np.ndarray) -> np.ndarray:
    """Each value as one protobuf field: the key, then the little-endian float32."""
    table = np.empty((len(values), 5), dtype=np.uint8)
    table[:, 0] = key
    table[:, 1:] = values.astype("<f4").view(np.uint8).reshape(-1, 4)
    return table.ravel()


def bytes_entries(key: int, values: np.ndarray) -> np.ndarray:
    """Each value of a fixed-width bytes array (items shorter than 128 bytes) as one protobuf field.

    The key, the length, then the bytes; numpy pads items with NUL bytes, which the length leaves out.
    """
    size = values.dtype.itemsize
    if values.dtype.kind != "S" or size >= 0x80:
        raise ValueError(f"cannot encode {values.dtype} values as protobuf strings")
    lengths = np.strings.str_len(values).astype(np.uint8)
    table = np.empty((len(values), size + 2), dtype=np.uint8)
    table[:, 0] = key
    table[:, 1] = lengths
    table[:, 2:] = values.view(np.uint8).reshape(-1, size)
    return _rows_cut(table, lengths + np.uint8(2))


def _rows_cut(table: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The first `sizes[i]` bytes of each row i of the table, one row after the other."""
    width = table.shape[1]
    # Row k of this triangle keeps the first k bytes; gathering its rows is faster than comparing.
    keep = np.take(np.tri(width + 1, width, -1, dtype=bool), sizes, axis=0)
    return table[keep]


# AttributeProto's repeated fields (onnx.proto): their name, and their number in the entries' keys.
VALUES_NAME = {
    onnx.AttributeProto.FLOATS: "floats",
    onnx.AttributeProto.INTS: "ints",
    onnx.AttributeProto.STRINGS: "strings",
}
VALUES_FIELD = {
    kind: onnx.AttributeProto.DESCRIPTOR.fields_by_name[n].number for kind, n in VALUES_NAME.items()
}


def entries(kind: int, values: np.ndarray) -> np.ndarray:
    """An attribute's values as protobuf writes its repeated field `kind`: one key and value each."""
    number = VALUES_FIELD[kind]
    # A key is the field number, then the wire type in 3 bits: 5 for 32 bits, 0 for a varint, 2 for bytes.
    if kind == onnx.AttributeProto.FLOATS:
        return float_entries(number << 3 | 5, values)
    if kind == onnx.AttributeProto.INTS:
        return varint_entries(number << 3, values)
    return bytes_entries(number << 3 | 2, values)


def serialized(message: Message, *, below: int | None = None, above: int | None = None) -> bytes:
    """The message's fields numbered below `below` (or above `above`) as protobuf writes them."""
    part = type(message)()
    part.CopyFrom(message)
    for descriptor in message.DESCRIPTOR.fields:
        if (below is not None and descriptor.number >= below) or (
            above is not None and descriptor.number <= above
        ):
            part.ClearField(descriptor.name)
    return part.SerializeToString()


def spliced(message: Message, name: str, values: list[list[bytes | np.ndarray]]) -> list[bytes | np.ndarray]:
    """The message serialised with its message field `name` holding `values`, each given as chunks.

    Protobuf writes a message's fields by increasing number, a message field as its key, its length and its
    bytes, one such entry per value of a repeated field: the chunks go between the fields before and after.
    """
    number = message.DESCRIPTOR.fields_by_name[name].number
    chunks: list[bytes | np.ndarray] = [serialized(message, below=number)]
    for value in values:
        chunks.append(_varint(number << 3 | 2) + _varint(sum(len(chunk) for chunk in value)))
        chunks.extend(value)
    chunks.append(serialized(message, above=number))
    return chunks


def _varint(number: int) -> bytes:
    """A non-negative number as a protobuf varint: 7 bits a byte, low bits first."""
    encoded = bytearray()
    while number > 0x7F:
        encoded.append(number & 0x7F | 0x80)
        number >>= 7
    encoded.append(number)
    return bytes(encoded)
