"""A small, dependency-free JSON Schema checker for style specs (a documented subset of draft 2020-12).

Supported keywords: ``type`` (a name or a list of names), ``enum``, ``const``, ``properties``,
``required``, ``additionalProperties`` (boolean or schema), ``minProperties``, ``maxProperties``,
``items`` (one schema for every element), ``minItems``, ``maxItems``, ``minLength``,
``maxLength``, ``pattern`` (``re.search``, as JSON Schema specifies), ``minimum``, ``maximum``,
``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``. Annotations (``$schema``, ``$id``,
``title``, ``description``, ``default``, ``examples``, ``$comment``) are ignored. Any other
keyword makes :func:`schema_problems` report the schema as unsupported, so a spec never passes
a check it silently skipped.

As JSON Schema specifies, booleans are not numbers, and ``integer`` accepts ``1.0``. String
lengths count code points.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "default", "examples", "$comment"})
_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    }
)
_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_ok(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if name == "number":
        return _is_number(value) and math.isfinite(value)
    # integer
    return _is_number(value) and math.isfinite(value) and float(value).is_integer()


def schema_problems(schema: Any, path: str = "$") -> list[str]:
    """Problems that make ``schema`` unusable here (unsupported keywords, wrong keyword values)."""
    if isinstance(schema, bool):
        return []
    if not isinstance(schema, Mapping):
        return [f"{path}: a schema must be an object or a boolean, got {schema!r}"]
    problems: list[str] = []
    unknown = sorted(set(schema) - _KEYWORDS - _ANNOTATIONS)
    if unknown:
        problems.append(f"{path}: unsupported keyword(s) {unknown} (supported: {sorted(_KEYWORDS)})")
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        bad = [t for t in names if t not in _TYPES]
        if bad:
            problems.append(f"{path}.type: unknown type(s) {bad}")
    for key in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        if key in schema and (
            not isinstance(schema[key], int) or isinstance(schema[key], bool) or schema[key] < 0
        ):
            problems.append(f"{path}.{key}: must be a non-negative integer, got {schema[key]!r}")
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        if key in schema and not _is_number(schema[key]):
            problems.append(f"{path}.{key}: must be a number, got {schema[key]!r}")
    if "multipleOf" in schema and _is_number(schema["multipleOf"]) and schema["multipleOf"] <= 0:
        problems.append(f"{path}.multipleOf: must be positive, got {schema['multipleOf']!r}")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            problems.append(f"{path}.pattern: {schema['pattern']!r} does not compile: {exc}")
    if "required" in schema and (
        not isinstance(schema["required"], list) or not all(isinstance(r, str) for r in schema["required"])
    ):
        problems.append(f"{path}.required: must be a list of strings, got {schema['required']!r}")
    if "enum" in schema and not isinstance(schema["enum"], list):
        problems.append(f"{path}.enum: must be a list, got {schema['enum']!r}")
    props = schema.get("properties", {})
    if not isinstance(props, Mapping):
        problems.append(f"{path}.properties: must be an object, got {props!r}")
    else:
        for name, sub in props.items():
            problems += schema_problems(sub, f"{path}.properties.{name}")
    for key in ("additionalProperties", "items"):
        if key in schema:
            problems += schema_problems(schema[key], f"{path}.{key}")
    return problems


def validate(value: Any, schema: Any, path: str = "$") -> list[str]:
    """The ways ``value`` violates ``schema`` (empty when it conforms). ``schema`` must be supported."""
    if schema is True:
        return []
    if schema is False:
        return [f"{path}: no value is allowed here"]
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_type_ok(value, t) for t in names):
            return [f"{path}: expected {' or '.join(names)}, got {value!r}"]
    if "const" in schema and not _json_equal(value, schema["const"]):
        errors.append(f"{path}: must equal {schema['const']!r}, got {value!r}")
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        errors.append(f"{path}: must be one of {schema['enum']!r}, got {value!r}")
    if isinstance(value, str):
        errors += _string_errors(value, schema, path)
    if _is_number(value):
        errors += _number_errors(value, schema, path)
    if isinstance(value, list):
        errors += _array_errors(value, schema, path)
    if isinstance(value, dict):
        errors += _object_errors(value, schema, path)
    return errors


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _string_errors(value: str, schema: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']} characters: {value!r}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']} characters ({len(value)})")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        errors.append(f"{path}: does not match {schema['pattern']!r}: {value!r}")
    return errors


def _number_errors(value: float, schema: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value!r} is less than the minimum {schema['minimum']!r}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {value!r} is greater than the maximum {schema['maximum']!r}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{path}: {value!r} is not greater than {schema['exclusiveMinimum']!r}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(f"{path}: {value!r} is not less than {schema['exclusiveMaximum']!r}")
    if "multipleOf" in schema:
        ratio = value / schema["multipleOf"]
        if not math.isclose(ratio, round(ratio), rel_tol=0, abs_tol=1e-9):
            errors.append(f"{path}: {value!r} is not a multiple of {schema['multipleOf']!r}")
    return errors


def _array_errors(value: list[Any], schema: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: more than {schema['maxItems']} items")
    if "items" in schema:
        for i, element in enumerate(value):
            errors += validate(element, schema["items"], f"{path}[{i}]")
    return errors


def _object_errors(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    props: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{path}: missing required key {name!r}")
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(f"{path}: fewer than {schema['minProperties']} keys")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(f"{path}: more than {schema['maxProperties']} keys")
    extra_schema = schema.get("additionalProperties", True)
    for name, element in value.items():
        if name in props:
            errors += validate(element, props[name], f"{path}.{name}")
        elif extra_schema is False:
            errors.append(f"{path}: unexpected key {name!r}")
        else:
            errors += validate(element, extra_schema, f"{path}.{name}")
    return errors
