"""The build context as `docker build` sends it: every file that .dockerignore does not exclude.

Docker's rules (https://docs.docker.com/build/concepts/context/#dockerignore-files): patterns relative to
the context, * and ? within a path segment, ** across segments, a match on a folder covers what is inside,
the last matching pattern wins and ! brings a path back.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    regex: re.Pattern[str]
    reinclude: bool


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match plus `**` (any number of folders); a match on a folder covers what is inside."""
    out = []
    position = 0
    while position < len(pattern):
        if pattern.startswith("**/", position):
            out.append("(?:.*/)?")
            position += 3
        elif pattern.startswith("**", position):
            out.append(".*")
            position += 2
        elif pattern[position] == "*":
            out.append("[^/]*")
            position += 1
        elif pattern[position] == "?":
            out.append("[^/]")
            position += 1
        elif pattern[position] == "[" and "]" in pattern[position + 1 :]:
            end = pattern.index("]", position + 1)
            out.append("[" + pattern[position + 1 : end].replace("!", "^", 1) + "]")
            position = end + 1
        else:
            out.append(re.escape(pattern[position]))
            position += 1
    return re.compile("".join(out) + "(?:/.*)?")


def dockerignore_rules(text: str) -> list[IgnoreRule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        reinclude = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append(IgnoreRule(pattern, _pattern_regex(pattern), reinclude))
    return rules


def is_ignored(path: str, rules: list[IgnoreRule]) -> bool:
    """The last rule matching `path` (relative, with /) decides, as in Docker."""
    ignored = False
    for rule in rules:
        if rule.regex.fullmatch(path):
            ignored = not rule.reinclude
    return ignored


def context_files(source: Path) -> Iterator[str]:
    """Every file of the context rooted at `source`, relative, with /."""
    ignore_file = source / ".dockerignore"
    rules = dockerignore_rules(ignore_file.read_text()) if ignore_file.exists() else []
    reincluded = [rule.pattern for rule in rules if rule.reinclude]
    for folder, subfolders, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        kept = []
        for name in subfolders:
            path = (relative / name).as_posix()
            # An excluded folder is still walked when a `!` rule may bring back something inside it.
            if not is_ignored(path, rules) or any(p.startswith(f"{path}/") for p in reincluded):
                kept.append(name)
        subfolders[:] = kept
        for name in files:
            path = (relative / name).as_posix()
            if not is_ignored(path, rules):
                yield path


def build_context_copy(source: Path, target: Path) -> None:
    """Copy `source` to `target` without what its .dockerignore excludes."""
    for path in context_files(source):
        destination = target / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / path, destination, follow_symlinks=False)
