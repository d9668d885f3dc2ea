"""sidecar.schema: params and details are checked as JSON Schema 2020-12 says, fast or not."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from sidecar.errors import InvalidParams
from sidecar.schema import Schema, same_in_draft_07
from tests.fixture_handlers import SCHEMA_2020_12

KEYS = ["url", "start", "end", "range", "tags", "clip", "n", "stray"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 70) | st.sampled_from([0.5, 2.0, -1.0, 1e300, 0.3, 0.7])
    | st.sampled_from(["", "music", "live", "https://example.invalid/v/1", "x" * 12]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=12,
)

SCHEMAS: dict[str, dict[str, Any]] = {
    # read the same in draft-07: checked by the compiled checker
    "object with bounds": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 60},
                           "url": {"type": "string", "minLength": 1, "pattern": "^https://"}},
                           "required": ["url"], "additionalProperties": False},
    "array of unique strings": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "maxItems": 3},
    "combinators": {"anyOf": [{"type": "string"}, {"type": "array", "contains": {"const": "music"}}],
                    "not": {"enum": ["", []]}},
    "if then else": {"if": {"type": "object", "required": ["start"]}, "then": {"required": ["end"]},
                     "else": {"type": "object", "maxProperties": 1}},
    "local $ref alone": {"$defs": {"n": {"type": "integer", "multipleOf": 5}},
                         "type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}},
    # read otherwise by draft-07: checked by jsonschema
    "2020-12 keywords": SCHEMA_2020_12,
    "$ref beside assertions": {"$defs": {"o": {"type": "object"}}, "$ref": "#/$defs/o", "required": ["url"]},
    "draft-07 keywords 2020-12 ignores": {"type": "object", "dependencies": {"start": ["end"]},
                                          "properties": {"tags": {"additionalItems": False}}},
    "fractional multipleOf": {"type": "object", "properties": {"start": {"multipleOf": 0.1}}},
}
FAST = {"object with bounds", "array of unique strings", "combinators", "if then else", "local $ref alone"}


def accepts(schema: Schema, value: Any) -> bool:
    try:
        schema.check(copy.deepcopy(value))
    except InvalidParams:
        return False
    return True


@pytest.mark.parametrize("name", SCHEMAS)
def test_only_schemas_that_read_the_same_in_draft_07_are_checked_by_the_compiled_checker(name: str) -> None:
    assert same_in_draft_07(SCHEMAS[name]) is (name in FAST)
    assert Schema(SCHEMAS[name], trusted=False).fast is (name in FAST)


@pytest.mark.parametrize("name", SCHEMAS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
@example(value={"start": 0.3, "end": 0.7})  # multiples of 0.1 only to a checker that rounds
def test_a_value_is_accepted_exactly_when_json_schema_2020_12_accepts_it(name: str, value: Any) -> None:
    assert accepts(Schema(SCHEMAS[name], trusted=False), value) is Draft202012Validator(SCHEMAS[name]).is_valid(value)


def built_in_schemas() -> dict[str, Schema]:
    """Every method's params schema and every built-in handler's details schema, by name."""
    import sidecar.server  # noqa: F401  (registers the built-in handlers)
    from sidecar.handlers.registry import default_registry
    from sidecar.methods import build_methods

    class Anything:
        def __getattr__(self, name: str) -> Any:
            return Anything()

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return Anything()

    schemas = {spec.name: spec.validator for spec in build_methods(Anything())}  # type: ignore[arg-type]
    schemas |= {spec.type: spec.validator for spec in default_registry
                if spec.validator is not None and spec.fn.__module__.startswith("sidecar.")}
    assert {"tasks.createMany", "demo.sleep", "http.download", "process.run"} <= set(schemas)
    return schemas


def test_every_built_in_schema_is_checked_by_the_compiled_checker() -> None:
    # 25x faster on a 5,000-task createMany: a method's or built-in handler's schema that left the
    # compiled checker would slow every request of its kind
    assert [name for name, schema in built_in_schemas().items() if not schema.fast] == []


def _member_names(schema: Any, names: set[str]) -> set[str]:
    if isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            names.add(name)
            _member_names(sub, names)
        for key in ("items", "additionalProperties"):
            _member_names(schema.get(key), names)
        for sub in [*(schema.get("anyOf") or []), *(schema.get("oneOf") or []), *(schema.get("allOf") or []),
                    *(schema.get("$defs") or {}).values()]:
            _member_names(sub, names)
    return names


@pytest.mark.parametrize("name", sorted(built_in_schemas()))
def test_the_compiled_checker_and_json_schema_2020_12_agree_on_every_built_in_schema(name: str) -> None:
    # A refusal the compiled checker makes and jsonschema does not is answered with a vague
    # "does not match the schema"; an acceptance it makes and jsonschema does not lets bad input in.
    schema = built_in_schemas()[name]
    names = sorted(_member_names(schema.schema, set())) or ["x"]
    scalars = (st.none() | st.booleans() | st.integers(-2, 2**63) | st.sampled_from([0.5, 2.0, -1.0, 1e300])
               | st.sampled_from(["", "a", "QUEUED", "COMPLETED", "demo.noop", "fail", "continue", "x" * 300,
                                  "00000000-0000-0000-0000-000000000000", "https://example.invalid/a"]))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(names), inner, max_size=5), max_leaves=10)
    strict = Draft202012Validator(schema.schema)

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.dictionaries(st.sampled_from(names), values, max_size=6))
    def agree(params: dict[str, Any]) -> None:
        assert accepts(schema, params) is strict.is_valid(params)

    agree()


def test_a_frozen_build_takes_as_checked_exactly_the_schemas_its_build_checked(tmp_path) -> None:
    # build/task-sidecar.spec has write_checked_schemas load the handler modules from source (which
    # checks their schemas) and bundles their digests; the binary then registers those without
    # importing jsonschema (~40 ms) and still checks any other schema.
    import json
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    built = {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}
    other = {"type": "object", "properties": {"n": {"type": "strng"}}}  # broken: refused when checked
    (tmp_path / "myapp_built_handlers.py").write_text(
        f"from sidecar.handlers import handler\n@handler('myapp.built', details_schema={built!r})\ndef built(ctx):\n    return {{}}\n")
    (tmp_path / "sidecar").mkdir()
    wrote = subprocess.run(
        [sys.executable, "-c", "import sys; from sidecar.handlers.registry import write_checked_schemas; "
         "write_checked_schemas([sys.argv[1]], sys.argv[2])", str(tmp_path / "myapp_built_handlers.py"),
         str(tmp_path / "sidecar")], cwd=root, capture_output=True, text=True, timeout=60)
    assert wrote.returncode == 0, wrote.stderr
    code = textwrap.dedent("""
        import json, sys
        sys.frozen = FROZEN
        sys._MEIPASS = BUNDLE
        from sidecar.handlers.registry import Registry
        seen = {}
        for name, schema in (("built", BUILT), ("other", OTHER)):
            try:
                Registry().handler("myapp." + name, details_schema=schema)(lambda ctx: None)
                seen[name] = None
            except Exception as exc:
                seen[name] = type(exc).__name__
            seen["jsonschema after " + name] = "jsonschema" in sys.modules
        print(json.dumps(seen))
    """).replace("BUNDLE", repr(str(tmp_path))).replace("BUILT", repr(built)).replace("OTHER", repr(other))
    seen = {}
    for frozen in (True, False):
        out = subprocess.run([sys.executable, "-c", code.replace("FROZEN", str(frozen))],
                             cwd=root, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        seen[frozen] = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen[True] == {"built": None, "jsonschema after built": False,
                          "other": "SchemaError", "jsonschema after other": True}
    assert seen[False] == {"built": None, "jsonschema after built": True,
                           "other": "SchemaError", "jsonschema after other": True}
