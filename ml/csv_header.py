"""Checks of a CSV file's header row that every upload shares: a header at all, names present, unique."""

from __future__ import annotations

from collections.abc import Sequence

#: Long lists of column names help nobody; the first ones locate the problem.
MAX_LISTED_COLUMNS = 50
_SEPARATORS = ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes"))


def name_list(names: Sequence[str], *, limit: int = MAX_LISTED_COLUMNS) -> str:
    """'a', 'b' and 3 more."""
    shown = ", ".join(repr(name) for name in names[:limit])
    if len(names) > limit:
        shown += f" and {len(names) - limit} more"
    return shown


def looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def header_problems(header: Sequence[str]) -> list[str]:
    """Every problem of the header row itself, in the order a person would fix them.

    A first row of numbers or blanks is not a header at all; that is the only problem reported then.
    """
    if all(not name.strip() or looks_numeric(name) for name in header):
        return [
            "The first row does not look like a header: every field is a number or blank. "
            "Add a header row with the column names."
        ]
    problems = []
    blank = [str(position + 1) for position, name in enumerate(header) if not name.strip()]
    if blank:
        problems.append(f"Column {', '.join(blank)} has no name in the header row; every column needs one.")
    counts: dict[str, int] = {}
    for name in header:
        counts[name] = counts.get(name, 0) + 1
    duplicates = [name for name, count in counts.items() if count > 1 and name.strip()]
    if duplicates:
        problems.append(f"Column names must be unique; these appear more than once: {name_list(duplicates)}.")
    if len(header) == 1:
        label = next((label for separator, label in _SEPARATORS if separator in header[0]), None)
        if label:
            problems.append(
                f"The file seems to separate fields with {label}; only comma-separated files are accepted."
            )
    return problems
