"""JSON Schema for params and handlers' details: checked fast, explained precisely.

The dialect is JSON Schema 2020-12 (what ``jsonschema.Draft202012Validator`` implements). The fast
checker, fastjsonschema, implements draft-07, so it is used only for schemas that mean the same
in both (:func:`same_in_draft_07`); every other schema is checked by jsonschema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import fastjsonschema
import orjson

from sidecar.errors import InvalidParams

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Keywords that read the same in draft-07 and 2020-12, by what their value is.
_ASSERTIONS = frozenset((
    "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties",
    "minProperties", "required",
))
# ignored by both ("format" too: neither checker here is given a format checker)
_ANNOTATIONS = frozenset((
    "title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "format",
))
_ONE_SUBSCHEMA = frozenset(("items", "contains", "additionalProperties", "propertyNames", "not", "if", "then", "else"))
_LIST_OF_SUBSCHEMAS = frozenset(("allOf", "anyOf", "oneOf"))
_MAP_OF_SUBSCHEMAS = frozenset(("properties", "patternProperties", "$defs", "definitions"))


def schema_digest(schema: Any) -> str | None:
    """A fingerprint of a schema's content (None when it is not JSON): how a frozen build tells
    that the schema a handler registers is one the build checked (sidecar.handlers.registry)."""
    try:
        return hashlib.sha256(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)).hexdigest()
    except TypeError:  # orjson.JSONEncodeError
        return None


def same_in_draft_07(schema: Any, *, root: bool = True) -> bool:
    """True when ``schema`` validates exactly the same values under draft-07 as under 2020-12.

    Not so for 2020-12's own keywords (``prefixItems``, ``unevaluatedProperties``,
    ``dependentRequired``, ``minContains``...), which draft-07 ignores; for draft-07's
    ``dependencies`` and ``additionalItems``, which 2020-12 ignores; for an array of schemas under
    ``items``; for a ``$ref`` beside other assertions (draft-07 ignores them; 2020-12 applies
    them); for a ``$ref`` to another document; and for anything unknown, to be safe. Nor for a
    fractional ``multipleOf``, which fastjsonschema checks with a tolerance (0.3 is a multiple
    of 0.1 to it, not to jsonschema, whose float arithmetic says 2.9999999999999996).
    """
    if type(schema) is bool:
        return True
    if type(schema) is not dict:
        return False
    for key, value in schema.items():
        if key == "multipleOf" and type(value) is not int:
            return False
        if key in _ASSERTIONS or key in _ANNOTATIONS:
            continue
        if key in _ONE_SUBSCHEMA:
            if (key == "items" and type(value) is list) or not same_in_draft_07(value, root=False):
                return False
        elif key in _LIST_OF_SUBSCHEMAS:
            if type(value) is not list or not all(same_in_draft_07(sub, root=False) for sub in value):
                return False
        elif key in _MAP_OF_SUBSCHEMAS:
            if type(value) is not dict or not all(same_in_draft_07(sub, root=False) for sub in value.values()):
                return False
        elif key == "$ref":
            beside = set(schema) - _ANNOTATIONS - {"$ref", "$defs", "definitions"}
            if not (type(value) is str and value.startswith("#")) or beside:
                return False
        elif key == "$schema":
            if not root or value != DIALECT:
                return False
        else:
            return False
    return True


def _integer_plan(schema: Any) -> Any:
    """Where ``schema`` asks for integers, for :func:`_make_integers`: ``True`` for an integer,
    ``(properties, additional, declared names)`` for an object, ``[items]`` for an array; None
    where it asks for none (``$ref`` and combinators are not followed)."""
    if not isinstance(schema, dict):
        return None
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types or []
    if "integer" in types and "number" not in types:
        return True
    properties = {key: plan for key, sub in (schema.get("properties") or {}).items()
                  if (plan := _integer_plan(sub)) is not None}
    additional = _integer_plan(schema.get("additionalProperties"))
    if properties or additional is not None:
        return (properties, additional, frozenset(schema.get("properties") or ()))
    items = _integer_plan(schema.get("items"))
    return [items] if items is not None else None


def _make_integers(plan: Any, value: Any) -> Any:
    """``value`` with every whole float (``3.0``) where ``plan`` wants an integer made an int, in
    place. JSON Schema counts 3.0 as an integer, so the validators let it through; the sidecar
    then used it where Python wants an int (a slice, a thread count) and failed, or stored it."""
    if plan is True:
        return int(value) if type(value) is float else value
    if isinstance(plan, list):
        if type(value) is list:
            for index, item in enumerate(value):
                value[index] = _make_integers(plan[0], item)
        return value
    if type(value) is dict:
        properties, additional, declared = plan
        for key, sub in properties.items():
            if key in value:
                value[key] = _make_integers(sub, value[key])
        if additional is not None:
            for key in value:
                if key not in declared:
                    value[key] = _make_integers(additional, value[key])
    return value


class Schema:
    """A JSON Schema checked fast, explained precisely.

    fastjsonschema compiles the schema to Python (25x faster than jsonschema on a 5,000-item
    createMany); only when a value is refused does jsonschema walk it again to name the field.
    A schema that would not mean the same to fastjsonschema (:func:`same_in_draft_07`) is
    checked by jsonschema alone. A value that fits has its whole floats made ints where the
    schema asks for integers.
    """

    def __init__(self, schema: dict[str, Any], *, trusted: bool = True) -> None:
        if not trusted:  # an app's handler schema: refuse a broken one at registration
            from jsonschema import Draft202012Validator

            Draft202012Validator.check_schema(schema)
        self.schema = schema
        self._integers = _integer_plan(schema)
        self._compiled = False
        self._fast: Callable[[Any], Any] | None = None
        self._explainer: Draft202012Validator | None = None

    def _compile(self) -> None:
        # lazily: compiling every method's schema at start-up would cost ~100 ms before ready
        self._fast = None  # jsonschema alone: the schema reads otherwise in draft-07, or fastjsonschema cannot compile it
        if same_in_draft_07(self.schema):
            try:
                self._fast = fastjsonschema.compile(self.schema, use_default=False, use_formats=False)
            except fastjsonschema.JsonSchemaDefinitionException:
                pass
        self._compiled = True

    @property
    def fast(self) -> bool:
        """Whether values are checked by the compiled draft-07 checker (compiles it if need be)."""
        self.prepare()
        return self._fast is not None

    @property
    def _explain(self) -> "Draft202012Validator":
        if self._explainer is None:
            from jsonschema import Draft202012Validator

            self._explainer = Draft202012Validator(self.schema)
        return self._explainer

    def prepare(self) -> None:
        """Compile now rather than at the first check."""
        if not self._compiled:
            self._compile()

    def check(self, value: Any, prefix: str = "") -> None:
        """Raise :class:`InvalidParams` naming the field when ``value`` does not fit; when it fits,
        make its whole floats ints where the schema asks for integers (in place)."""
        if not self._compiled:
            self._compile()
        if self._fast is not None:
            try:
                self._fast(value)
            except fastjsonschema.JsonSchemaValueException:
                pass
            else:
                if self._integers is not None:
                    _make_integers(self._integers, value)
                return
        check(self._explain, value, prefix)
        if self._fast is not None:  # the two disagree: trust the strict one, say it plainly
            raise InvalidParams(prefix or "params", "does not match the schema")
        if self._integers is not None:
            _make_integers(self._integers, value)


def field_path(error: "ValidationError", prefix: str = "") -> str:
    """``details.seconds``, ``tasks[3].type``: where in the params an error is."""
    path = prefix
    for part in error.absolute_path:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            path = f"{path}.{missing[0]}" if path else missing[0]
    elif error.validator == "dependentRequired" and isinstance(error.instance, dict):
        missing = _missing_dependency(error)
        if missing is not None:
            path = f"{path}.{missing[1]}" if path else missing[1]
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            path = f"{path}.{extra[0]}" if path else extra[0]
    return path


def _missing_dependency(error: "ValidationError") -> tuple[str, str] | None:
    """(the member present, the one it needs) of a ``dependentRequired`` error."""
    for present, needed in error.validator_value.items():
        if present in error.instance:
            for name in needed:
                if name not in error.instance:
                    return present, name
    return None


_JSON_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number", "object": "an object",
                    "array": "an array", "boolean": "a boolean", "null": "null"}


_BOUNDS = {
    "minimum": "must be >= {}", "maximum": "must be <= {}",
    "exclusiveMinimum": "must be > {}", "exclusiveMaximum": "must be < {}",
    "minLength": "must be at least {} characters long", "maxLength": "must be at most {} characters long",
    "minItems": "must have at least {} items", "maxItems": "must have at most {} items",
    "minProperties": "must have at least {} members", "maxProperties": "must have at most {} members",
}
# what a parsed JSON value is, by its Python type (bool before int: True is an int)
_JSON_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
               list: "an array", dict: "an object"}


def _json_kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), "a value")


def validation_reason(error: "ValidationError") -> str:
    if error.validator == "required":
        return "is required"
    if error.validator == "additionalProperties":
        return "is not a known field"
    if error.validator == "dependentRequired" and isinstance(error.instance, dict):
        missing = _missing_dependency(error)
        if missing is not None:
            return f"is required when {missing[0]} is given"
    # in JSON's words, not Python's: the app's developer reads "null", not "None is not of type"
    if error.validator == "type":
        wanted = error.validator_value
        names = [_JSON_TYPE_NAMES.get(t, t) for t in ([wanted] if isinstance(wanted, str) else wanted)]
        return f"must be {' or '.join(names)}, not {_json_kind(error.instance)}"
    if error.validator == "enum":
        return f"must be one of {orjson.dumps(error.validator_value).decode()}"
    if error.validator == "minLength" and error.validator_value == 1:
        return "must not be empty"
    bound = _BOUNDS.get(str(error.validator))
    if bound is not None:
        return bound.format(orjson.dumps(error.validator_value).decode())
    return error.message


def check(validator: "Draft202012Validator", value: Any, prefix: str = "") -> None:
    """Raise :class:`InvalidParams` naming the field when ``value`` does not fit the schema."""
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value), key=_relevance)
    if error is not None:
        raise InvalidParams(field_path(error, prefix), validation_reason(error))


def _relevance(error: "ValidationError") -> tuple[int, int]:
    # prefer the deepest error: it names the most precise field
    return (-len(error.absolute_path), 0)
