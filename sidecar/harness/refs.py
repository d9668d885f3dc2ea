"""``${name.path}`` references to values saved by earlier scenario steps.

``${t1}`` is the whole saved result, ``${t1.id}`` a field, ``${page.tasks.0.id}`` a list item.
A string that is exactly one reference becomes the referenced value (any JSON type); a reference
inside a longer string is replaced by its text.
"""

from __future__ import annotations

import json
import re
from typing import Any

_REF = re.compile(r"\$\{([A-Za-z_][\w-]*)((?:\.[\w-]+)*)\}")


class RefError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def lookup(saved: dict[str, Any], name: str, path: str = "") -> Any:
    if name not in saved:
        known = ", ".join(sorted(saved)) or "none yet"
        raise RefError(f"unknown reference ${{{name}{path}}}: nothing was saved as {name!r} (saved so far: {known})")
    value = saved[name]
    walked = name
    for part in [p for p in path.split(".") if p]:
        walked += "." + part
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise RefError(f"${{{walked}}} does not exist (in {json.dumps(value)[:200]})")
    return value


def substitute(value: Any, saved: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _REF.fullmatch(value)
        if whole:
            return lookup(saved, whole.group(1), whole.group(2))

        def text(m: re.Match[str]) -> str:
            v = lookup(saved, m.group(1), m.group(2))
            return v if isinstance(v, str) else json.dumps(v)

        return _REF.sub(text, value)
    if isinstance(value, dict):
        return {substitute(k, saved): substitute(v, saved) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, saved) for v in value]
    return value


def task_id(ref: Any, saved: dict[str, Any]) -> str:
    """A task id from ``t1`` (a saved Task), ``${t1.id}``, or a literal id."""
    if isinstance(ref, str) and ref in saved:
        value = saved[ref]
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            return value["id"]
        if isinstance(value, str):
            return value
        raise RefError(f"saved value {ref!r} is not a task (no id): {json.dumps(value)[:200]}")
    value = substitute(ref, saved)
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    if not isinstance(value, str):
        raise RefError(f"not a task reference: {ref!r}")
    return value
