"""JSON Schema (draft 2020-12) for style specs, through the ``jsonschema`` package, with one plain
message a problem (``"$.confidence: 1.5 is greater than the maximum of 1"``).

:func:`schema_problems` checks a schema up front, so that a bad spec fails when it is loaded and
not in the middle of an eval: its shape against the draft 2020-12 meta-schema (patterns must
compile), then three things the meta-schema lets through but that would make a check pass
without checking anything:

- a keyword draft 2020-12 does not define (a misspelt ``maxLenght`` would check nothing);
- a ``format`` the format checker cannot check (formats are asserted here, not annotations);
- a ``$ref`` that does not resolve inside the schema. Remote references are never fetched:
  an eval does not depend on the network; put shared definitions under ``$defs``.

:func:`validate` lists the ways a value violates a checked schema. Two rules of the old
hand-written checker are kept on purpose: ``number`` and ``integer`` exclude NaN and the
infinities (``json.loads`` accepts them), and a ``$schema`` other than draft 2020-12 is refused
rather than read with the wrong draft's rules. As JSON Schema specifies, booleans are not
numbers, ``integer`` accepts ``1.0``, string lengths count code points and ``pattern`` is a
search, not a full match.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import referencing.exceptions
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

if TYPE_CHECKING:
    from referencing._core import Resolver  # not re-exported by referencing, but its public type

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# Keywords that assert nothing in draft 2020-12 (identifiers, containers, annotations); every
# other keyword must be one the validator checks.
_NON_ASSERTING = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$dynamicAnchor",
        "$defs",
        "definitions",  # the pre-2019 name of $defs, still a valid place for $ref targets
        "$comment",
        "$vocabulary",
        "title",
        "description",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "examples",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    }
)
_KNOWN = frozenset(Draft202012Validator.VALIDATORS) | _NON_ASSERTING
_FORMATS: FormatChecker = Draft202012Validator.FORMAT_CHECKER
_VALUE_CHARS = 80  # a value quoted in a message is cut to this (outputs can be long)


def _finite_number(checker: Any, value: Any) -> bool:
    return bool(Draft202012Validator.TYPE_CHECKER.is_type(value, "number") and math.isfinite(value))


def _finite_integer(checker: Any, value: Any) -> bool:
    return bool(Draft202012Validator.TYPE_CHECKER.is_type(value, "integer") and math.isfinite(value))


_Validator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _finite_number, "integer": _finite_integer}
    ),
)


def _no_remote(uri: str) -> Resource[Any]:
    raise referencing.exceptions.NoSuchResource(uri)


# References resolve inside the schema, never over the network.
_REGISTRY: Registry[Any] = Registry(retrieve=_no_remote)  # type: ignore[call-arg]


def _where(base: str, path: Iterable[str | int]) -> str:
    out = base
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _message(error: ValidationError) -> str:
    """jsonschema's message, with a long quoted value cut short and, for anyOf/oneOf, the
    closest alternative's own problem."""
    text = error.message
    quoted = repr(error.instance)
    if len(quoted) > _VALUE_CHARS:
        text = text.replace(quoted, quoted[: _VALUE_CHARS - 1] + "…")
    if error.validator in ("anyOf", "oneOf") and error.context:
        closest = best_match(error.context)
        at = f"at {_where('', closest.relative_path)}: " if closest.relative_path else ""
        text += f" (closest: {at}{_message(closest)})"
    return text


def schema_problems(schema: Any, path: str = "$") -> list[str]:
    """Problems that make ``schema`` unusable as a style check (empty when it is usable)."""
    if isinstance(schema, Mapping) and str(schema.get("$schema", DRAFT)).rstrip("#") != DRAFT:
        return [f"{path}.$schema: only draft 2020-12 ({DRAFT}) is supported, got {schema['$schema']!r}"]
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=_FORMATS)
    # dict.fromkeys: the meta-schema's allOf can report one problem once per vocabulary.
    problems = list(
        dict.fromkeys(f"{_where(path, e.absolute_path)}: {_message(e)}" for e in meta.iter_errors(schema))
    )
    if problems or isinstance(schema, bool):
        return problems  # the walk below needs a well-formed schema
    root = DRAFT202012.create_resource(schema)
    resolver = _REGISTRY.with_resource(root.id() or "", root).resolver(root.id() or "")
    for where, subschema, scope in _subschemas(root, resolver, path):
        if not isinstance(subschema, Mapping):
            continue
        problems += [f"{where}: {k!r} is not a draft 2020-12 keyword" for k in subschema if k not in _KNOWN]
        if "format" in subschema and subschema["format"] not in _FORMATS.checkers:
            problems.append(
                f"{where}.format: {subschema['format']!r} cannot be checked "
                f"(known formats: {', '.join(sorted(_FORMATS.checkers))})"
            )
        for keyword in ("$ref", "$dynamicRef"):
            if keyword in subschema:
                problems += _unresolved(scope, subschema[keyword], f"{where}.{keyword}")
    return problems


def _unresolved(scope: Resolver[Any], ref: str, where: str) -> list[str]:
    try:
        scope.lookup(ref)
    except referencing.exceptions.PointerToNowhere as exc:
        return [f"{where}: {ref!r} points at nothing ({exc.ref!r} is not in the schema)"]
    except referencing.exceptions.Unresolvable:
        return [f"{where}: {ref!r} is not in this schema (remote references are not fetched; use $defs)"]
    return []


def _subschemas(
    resource: Resource[Any], scope: Resolver[Any], where: str
) -> Iterator[tuple[str, Any, Resolver[Any]]]:
    """Every subschema (the schema included) with its path and the resolver for its base URI."""
    yield where, resource.contents, scope
    for child in resource.subresources():
        yield from _subschemas(child, scope.in_subresource(child), _locate(resource.contents, child, where))


def _locate(parent: Mapping[str, Any], child: Resource[Any], where: str) -> str:
    """The path of ``child`` inside ``parent``: one keyword down (``items``), or a keyword and a
    key or an index (``properties.name``, ``allOf[0]``)."""
    for key, value in parent.items():
        if value is child.contents:
            return f"{where}.{key}"
        if isinstance(value, Mapping):
            inner: Iterable[tuple[str | int, Any]] = value.items()
        elif isinstance(value, list):
            inner = enumerate(value)
        else:
            continue
        for name, element in inner:
            if element is child.contents:
                return _where(f"{where}.{key}", [name])
    return where


def validate(value: Any, schema: Any, path: str = "$") -> list[str]:
    """The ways ``value`` violates ``schema`` (empty when it conforms); check the schema first
    with :func:`schema_problems`."""
    validator = _Validator(schema, format_checker=_FORMATS, registry=_REGISTRY)
    return list(
        dict.fromkeys(f"{_where(path, e.absolute_path)}: {_message(e)}" for e in validator.iter_errors(value))
    )
