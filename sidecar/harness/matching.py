"""Subset matching of expected values against actual JSON, with readable mismatch reports.

Rules: an expected object matches when each of its keys matches the actual object's value (extra
actual keys are ignored); an expected list matches an actual list of the same length item by item;
scalars compare equal (1 == 1.0, but True is not 1). An expected object whose keys all start with
``$`` is an operator: ``{$any: true}`` (present, any value), ``{$absent: true}`` (key missing),
``{$regex: "..."}`` (string search), ``{$contains: x}`` (substring or list item),
``{$gt|$gte|$lt|$lte: n}``, ``{$len: n}``, ``{$in: [..]}``, ``{$not: <expected>}``. A key
written ``$$name`` matches the literal key ``$name`` (``$ref`` in an OpenRPC document).

``pattern_problems`` checks an expected value written by hand (a scenario file): an unknown
``$`` key, operators mixed with plain keys, or a bad operator argument would otherwise silently
match as a literal, so a typo would make a check pass without checking.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

_MISSING = object()
OPERATORS = {"$any", "$absent", "$regex", "$contains", "$gt", "$gte", "$lt", "$lte", "$len", "$in", "$not"}


def is_operator(expected: Any) -> bool:
    return isinstance(expected, dict) and bool(expected) and all(k in OPERATORS for k in expected)


def _actual_key(key: str) -> str:
    """``$$name`` in an expected object stands for the literal key ``$name``."""
    return key[1:] if isinstance(key, str) and key.startswith("$$") else key


def pattern_problems(expected: Any, path: str = "") -> list[str]:
    """What is wrong with a hand-written expected value, as ``path: reason`` lines (empty: fine)."""
    where = path or "(top)"
    out: list[str] = []
    if isinstance(expected, list):
        for i, item in enumerate(expected):
            out += pattern_problems(item, f"{path}[{i}]")
        return out
    if not isinstance(expected, dict):
        return out
    dollar = [k for k in expected if isinstance(k, str) and k.startswith("$") and not k.startswith("$$")]
    unknown = [k for k in dollar if k not in OPERATORS]
    if unknown:
        valid = ", ".join(sorted(OPERATORS))
        return [f"{where}: unknown operator {', '.join(unknown)} (valid: {valid}; write $$name for a literal key $name)"]
    if dollar and len(dollar) != len(expected):
        plain = [str(k) for k in expected if k not in dollar]
        return [f"{where}: operators ({', '.join(dollar)}) mixed with plain keys ({', '.join(plain)}); nest one in the other"]
    for key, arg in expected.items():
        # an operator's argument applies at the same place; a plain key goes one level down
        at = path if key in OPERATORS else (f"{path}.{_actual_key(key)}" if path else str(_actual_key(key)))
        if key == "$regex":
            if not isinstance(arg, str):
                out.append(f"{where}: $regex needs a string, got {_short(arg)}")
                continue
            try:
                re.compile(arg)
            except re.error as exc:
                out.append(f"{where}: $regex {arg!r} is not a regular expression: {exc}")
        elif key in ("$gt", "$gte", "$lt", "$lte", "$len"):
            if not isinstance(arg, (int, float)) or isinstance(arg, bool):
                out.append(f"{where}: {key} needs a number, got {_short(arg)}")
        elif key == "$in":
            if not isinstance(arg, list):
                out.append(f"{where}: $in needs a list, got {_short(arg)}")
            else:  # each item is a candidate for the same place
                for item in arg:
                    out += pattern_problems(item, at)
        elif key in ("$contains", "$not") or key not in OPERATORS:
            out += pattern_problems(arg, at)
    return out


def mismatches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every place where ``actual`` does not match ``expected``, as ``path: reason`` lines."""
    where = path or "(top)"
    if is_operator(expected):
        return _operator_mismatches(expected, actual, where)
    if actual is _MISSING:
        return [f"{where}: missing (expected {_short(expected)})"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {_short(actual)}"]
        out: list[str] = []
        for key, exp in expected.items():
            key = _actual_key(key)
            out += mismatches(exp, actual.get(key, _MISSING), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {_short(actual)}"]
        if len(expected) != len(actual):
            return [f"{where}: expected {len(expected)} items, got {len(actual)}"]
        out = []
        for i, (exp, act) in enumerate(zip(expected, actual)):
            out += mismatches(exp, act, f"{path}[{i}]")
        return out
    if not _scalar_equal(expected, actual):
        return [f"{where}: expected {_short(expected)}, got {_short(actual)}"]
    return []


def matches(expected: Any, actual: Any) -> bool:
    return not mismatches(expected, actual)


def _scalar_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _operator_mismatches(ops: dict[str, Any], actual: Any, where: str) -> list[str]:
    out = []
    for op, arg in ops.items():
        if op == "$absent":
            if bool(arg) != (actual is _MISSING):
                out.append(f"{where}: expected {'no value' if arg else 'a value'}, got {_short(actual)}")
            continue
        if actual is _MISSING:
            out.append(f"{where}: missing (expected {op} {_short(arg)})")
            continue
        ok = True
        try:
            if op == "$any":
                ok = True
            elif op == "$regex":
                ok = isinstance(actual, str) and re.search(arg, actual) is not None
            elif op == "$contains":
                ok = (isinstance(actual, str) and isinstance(arg, str) and arg in actual) or (
                    isinstance(actual, list) and any(matches(arg, x) for x in actual)
                )
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                ok = isinstance(actual, (int, float)) and not isinstance(actual, bool) and {
                    "$gt": actual > arg, "$gte": actual >= arg, "$lt": actual < arg, "$lte": actual <= arg
                }[op]
            elif op == "$len":
                ok = hasattr(actual, "__len__") and len(actual) == arg
            elif op == "$in":
                ok = any(_scalar_equal(x, actual) if not isinstance(x, (dict, list)) else matches(x, actual) for x in arg)
            elif op == "$not":
                ok = not matches(arg, actual)
        except TypeError:
            ok = False
        if not ok:
            out.append(f"{where}: expected {op} {_short(arg)}, got {_short(actual)}")
    return out


def _short(value: Any, limit: int = 120) -> str:
    if value is _MISSING:
        return "nothing"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def project(expected: Any, actual: Any) -> Any:
    """The part of ``actual`` that ``expected`` talks about (so a diff shows only relevant keys)."""
    if isinstance(expected, dict) and not is_operator(expected) and isinstance(actual, dict):
        return {_actual_key(k): project(v, actual[_actual_key(k)]) for k, v in expected.items() if _actual_key(k) in actual}
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [project(e, a) for e, a in zip(expected, actual)]
    return actual


def render_diff(expected: Any, actual: Any, label: str = "") -> str:
    """Mismatch lines plus a unified diff of expected vs. the relevant part of actual."""
    problems = mismatches(expected, actual)
    exp_text = json.dumps(expected, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    act_text = json.dumps(project(expected, actual), indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    diff = difflib.unified_diff(exp_text, act_text, fromfile=f"expected{label}", tofile=f"actual{label}", lineterm="")
    lines = [f"  - {p}" for p in problems]
    lines += ["", *("    " + d for d in diff)]
    return "\n".join(lines)
