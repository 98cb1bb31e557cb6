"""Type checks of parsed JSON that collect every problem, each named by its path (version.metrics, …)."""

from __future__ import annotations

from typing import Any


def type_name(kind: type) -> str:
    return {
        str: "text",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        dict: "an object",
        list: "a list",
        type(None): "null",
    }.get(kind, kind.__name__)


class Checker:
    """Reads fields of the expected types; a missing or mistyped field is a problem, and reads as None."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(
        self, parent: Any, key: str, where: str, kinds: tuple[type, ...], *, nullable: bool = False
    ) -> Any:
        if not isinstance(parent, dict):
            return None
        path = f"{where}.{key}" if where else key
        if key not in parent:
            self.problems.append(f"{path} is missing.")
            return None
        value = parent[key]
        if value is None and nullable:
            return None
        bad_bool = isinstance(value, bool) and bool not in kinds
        if bad_bool or not isinstance(value, kinds):
            wanted = " or ".join(type_name(kind) for kind in kinds) + (" or null" if nullable else "")
            self.problems.append(f"{path} must be {wanted}; got {type_name(type(value))}.")
            return None
        return value

    def choice(self, parent: Any, key: str, where: str, choices: list[str]) -> str | None:
        value = self.get(parent, key, where, (str,))
        if value is not None and value not in choices:
            self.problems.append(f"{where}.{key} is {value!r}; expected one of {', '.join(choices)}.")
            return None
        return value
