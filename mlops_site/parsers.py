"""JSON reading with a nesting limit: the API's JSON parsers and the loader forms use for JSON text."""

from __future__ import annotations

import codecs
import json
import re
from typing import IO, Any

import numpy as np
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json as drf_json

#: Deepest nesting of arrays and objects accepted. Python's parser recurses once per level and fails
#: near 1,000 levels with a RecursionError (a 500); no input of this site needs more than a handful.
JSON_MAX_DEPTH = 64

# A JSON string, escapes included; brackets inside one do not nest anything.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


def json_too_deep_at(data: bytes, *, limit: int = JSON_MAX_DEPTH) -> int | None:
    """The byte offset where `data` opens its (limit+1)th nested level, else None; no recursion.

    Only the nesting is looked at: malformed JSON is left to the parser, which names its own error.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return None
    codes = np.frombuffer(data, dtype=np.uint8)
    step = np.isin(codes, _OPEN).astype(np.int32) - np.isin(codes, _CLOSE).astype(np.int32)
    spans = [match.span() for match in _STRING.finditer(data)]
    if spans:
        edges = np.zeros(len(codes) + 1, dtype=np.int32)
        bounds = np.array(spans, dtype=np.int64)
        np.add.at(edges, bounds[:, 0], 1)
        np.add.at(edges, bounds[:, 1], -1)
        step[np.cumsum(edges[:-1]) > 0] = 0
    deeper = np.flatnonzero(np.cumsum(step) > limit)
    return int(deeper[0]) if len(deeper) else None


def too_deep_message(limit: int = JSON_MAX_DEPTH) -> str:
    return f"JSON nested deeper than {limit} levels; at most {limit} levels of arrays and objects are read."


def json_loads(text: str | bytes, **kwargs: Any) -> Any:
    """json.loads that refuses nesting deeper than JSON_MAX_DEPTH with a json.JSONDecodeError.

    Callers that already catch JSONDecodeError (or ValueError) for malformed JSON need no other change.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    offset = json_too_deep_at(data)
    if offset is not None:
        document = text if isinstance(text, str) else text.decode("utf-8", "replace")
        position = len(data[:offset].decode("utf-8", "ignore"))
        raise json.JSONDecodeError(too_deep_message(), document, position)
    return json.loads(text, **kwargs)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing deep nesting with a 400 `parse_error` before the parser recurses."""

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = parsers.get_encoding(parser_context or {})
        try:
            text = codecs.decode(stream.read(), encoding)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if json_too_deep_at(text.encode("utf-8", "surrogatepass")) is not None:
            raise ParseError(too_deep_message())
        try:
            return json.loads(text, parse_constant=drf_json.strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
