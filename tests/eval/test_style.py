"""Style metrics: format validity sub-checks, JSON Schema (draft 2020-12), similarity to exemplars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybrid_assistant.eval.dataset import DatasetError, StyleSpec, load_style_spec
from hybrid_assistant.eval.metrics.schema import schema_problems, validate
from hybrid_assistant.eval.metrics.style import format_checks, format_valid, style_scores, style_similarity

DEMO_SPEC = Path(__file__).resolve().parents[2] / "eval" / "data" / "demo" / "style_spec.json"


@pytest.fixture(scope="module")
def spec() -> StyleSpec:
    return load_style_spec(DEMO_SPEC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"answer": "Paris", "confidence": 0.9}',
            {"format_json": 1, "format_schema": 1, "format_length": 1},
        ),
        (
            '  {"answer": "Paris", "confidence": 0}\n',
            {"format_json": 1, "format_schema": 1, "format_length": 1},
        ),
        (
            'Answer: {"answer": "Paris", "confidence": 0.9}',
            {"format_json": 0, "format_schema": 0, "format_length": 1},
        ),
        ('{"answer": "Paris", "confidence": 0.9, "source": "x"}', {"format_json": 1, "format_schema": 0}),
        ('{"answer": "Paris", "confidence": 1.5}', {"format_json": 1, "format_schema": 0}),
        ('{"answer": "Paris", "confidence": -0.1}', {"format_json": 1, "format_schema": 0}),
        ('{"answer": "Paris", "confidence": true}', {"format_json": 1, "format_schema": 0}),
        ('{"answer": "Paris", "confidence": "0.9"}', {"format_json": 1, "format_schema": 0}),
        ('{"answer": "", "confidence": 0.5}', {"format_json": 1, "format_schema": 0}),
        ('{"answer": "Paris"}', {"format_json": 1, "format_schema": 0}),
        ('["Paris", 0.9]', {"format_json": 1, "format_schema": 0}),
        ("Paris", {"format_json": 0, "format_schema": 0, "format_length": 1}),
    ],
)
def test_format_checks_on_the_demo_spec(spec: StyleSpec, text: str, expected: dict[str, int]) -> None:
    checks = format_checks(text, spec)
    for key, value in expected.items():
        assert checks[key] == value, (key, text)
    assert checks["format_valid"] == float(all(v == 1.0 for k, v in checks.items() if k != "format_valid"))


def test_length_bound(spec: StyleSpec) -> None:
    long_answer = json.dumps({"answer": "word " * 23 + "end", "confidence": 0.5})
    assert len(long_answer) > 100
    assert format_checks(long_answer, spec)["format_schema"] == 1.0
    near_limit = json.dumps({"answer": "x" * 120, "confidence": 0.5})
    assert len(near_limit) <= 200 and format_valid(near_limit, spec) == 1.0
    over_limit = json.dumps({"answer": "x" * 121, "confidence": 0.5})
    assert format_checks(over_limit, spec)["format_schema"] == 0.0  # maxLength 120
    spec_short = StyleSpec(name="short", max_chars=10, min_chars=2)
    assert format_checks("a", spec_short) == {"format_length": 0.0, "format_valid": 0.0}
    assert format_checks("abcdefghijk", spec_short)["format_length"] == 0.0
    assert format_checks("  abc  ", spec_short)["format_valid"] == 1.0


def test_regex_spec_matches_the_whole_output() -> None:
    spec = StyleSpec(name="bullets", regex=r"(- .+\n?)+")
    assert format_checks("- one\n- two", spec) == {"format_regex": 1.0, "format_valid": 1.0}
    assert format_checks("intro\n- one", spec)["format_regex"] == 0.0


def test_answer_field_without_schema_requires_the_field() -> None:
    spec = StyleSpec(name="loose", answer_field="answer")
    assert format_checks('{"answer": 1, "x": 2}', spec)["format_valid"] == 1.0
    assert format_checks('{"reply": 1}', spec)["format_schema"] == 0.0


def test_schema_subset() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "multipleOf": 2},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
        "additionalProperties": {"type": "null"},
    }
    assert schema_problems(schema) == []
    assert validate({"n": 4.0, "tags": ["a"], "code": "ABC", "extra": None}, schema) == []
    errors = validate({"n": 3, "tags": ["c", "a", "b"], "code": "AB", "extra": 1}, schema)
    assert len(errors) == 5, errors
    assert validate(True, {"type": "integer"})  # booleans are not numbers


def test_schemas_that_would_check_nothing_are_rejected(tmp_path: Path) -> None:
    # Was test_unsupported_schema_keywords_are_rejected, whose first case was oneOf: jsonschema
    # supports all of draft 2020-12 now (see test_draft_2020_12_keywords). What is still refused:
    # a keyword outside the draft, a format that cannot be checked, a $ref that does not resolve.
    problems = schema_problems(
        {
            "properties": {"a": {"type": "string", "maxLenght": 3}, "b": {"format": "date_time"}},
            "allOf": [{"$ref": "https://example.com/remote.json"}],
        }
    )
    assert sorted(p.split(" is ")[0].split(" cannot ")[0] for p in problems) == [
        "$.allOf[0].$ref: 'https://example.com/remote.json'",
        "$.properties.a: 'maxLenght'",
        "$.properties.b.format: 'date_time'",
    ], problems
    assert schema_problems({"$schema": "http://json-schema.org/draft-07/schema#"})
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "x", "json_schema": {"$ref": "#/x"}, "regex": "(", "max_chars": -1}))
    with pytest.raises(DatasetError) as err:
        load_style_spec(path)
    assert len(err.value.problems) == 3, err.value.problems


def test_malformed_schemas_fail_the_meta_schema_with_one_message_each() -> None:
    problems = schema_problems({"type": "strin", "minLength": -1, "pattern": "(", "required": "a"})
    assert [p.split(":")[0] for p in problems] == ["$.type", "$.minLength", "$.pattern", "$.required"], (
        problems
    )
    assert schema_problems(5) == ["$: 5 is not of type 'object', 'boolean'"]


def test_draft_2020_12_keywords() -> None:
    """$ref into $defs, oneOf, format (asserted), and the rest of the draft now work."""
    schema = {
        "$defs": {"confidence": {"type": "number", "minimum": 0, "maximum": 1}},
        "type": "object",
        "properties": {
            "answer": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
            "confidence": {"$ref": "#/$defs/confidence"},
            "when": {"type": "string", "format": "date"},
            "contact": {"type": "string", "format": "email"},
        },
        "required": ["answer", "confidence"],
        "unevaluatedProperties": False,
    }
    assert schema_problems(schema) == []
    good = {"answer": "Paris", "confidence": 0.9, "when": "2024-02-29", "contact": "a@example.com"}
    assert validate(good, schema) == []
    assert validate({"answer": 42, "confidence": 1}, schema) == []
    assert validate({"answer": "x", "confidence": 1.5}, schema) == [
        "$.confidence: 1.5 is greater than the maximum of 1"
    ]
    (one_of,) = validate({"answer": 4.5, "confidence": 0}, schema)
    assert one_of.startswith("$.answer: 4.5 is not valid under any of the given schemas (closest: ")
    assert validate({"answer": "x", "confidence": 0, "when": "2023-02-29"}, schema) == [
        "$.when: '2023-02-29' is not a 'date'"
    ]
    assert validate({"answer": "x", "confidence": 0, "contact": "nobody"}, schema) == [
        "$.contact: 'nobody' is not a 'email'"
    ]
    assert validate({"answer": "x", "confidence": 0, "extra": 1}, schema)  # unevaluatedProperties


def test_non_finite_numbers_and_long_values() -> None:
    # json.loads accepts NaN and Infinity; they are not JSON numbers, so they fail "number".
    assert validate(float("nan"), {"type": "number", "minimum": 0})
    assert validate(float("inf"), {"type": "integer"})
    (too_long,) = validate("x" * 10_000, {"maxLength": 3})
    assert too_long.endswith("… is too long") and len(too_long) < 120


class FixedEmbedder:
    """Maps known texts to hand-picked vectors."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def test_style_similarity_is_cosine_to_the_exemplar_centroid() -> None:
    embedder = FixedEmbedder(
        {"e1": [1, 0, 0], "e2": [0, 1, 0], "same": [1, 1, 0], "other": [0, 0, 1], "e1x": [1, 0, 0]}
    )
    sims = style_similarity(["same", "other", "e1x"], ["e1", "e2"], embedder)
    assert sims == pytest.approx([1.0, 0.0, 1 / np.sqrt(2)])
    with pytest.raises(ValueError, match="exemplar"):
        style_similarity(["same"], [], embedder)


def test_style_scores_gathers_checks_and_similarity(spec: StyleSpec) -> None:
    scores = style_scores('{"answer": "a", "confidence": 0.5}', spec, similarity=0.7)
    assert scores["format_valid"] == 1.0 and scores["style_similarity"] == 0.7
    assert style_scores("x", None) == {}
