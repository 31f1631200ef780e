"""Evaluation items and style specifications: the file formats, their loaders and their validation.

Dataset format (JSONL, one JSON object per line; blank lines are skipped)::

    {"id": "F001",                                  # required, unique string
     "question": "In which sea does Orravay lie?",   # a question, or:
     "messages": [{"role": "user", "content": "..."}],  # a conversation (exactly one of the two)
     "answers": ["Grenmoor Sea"],        # required; [] for an unanswerable item
     "gold_doc_ids": ["orravay-isles"],  # documents that state the answer (default [])
     "options": ["Hessel Sea", "Grenmoor Sea", "Skarra Sea"],   # optional multiple choice
     "answer_index": 1,                  # optional: the correct option (else the option that
                                         #   matches an answer after SQuAD normalisation)
     "stratum": "kb",                    # label used to report results per stratum (default "all")
     "answerable": true,                 # default: true when answers is non-empty, else false
     "group": "orravay-isles",           # bootstrap cluster (default: first gold doc id, else id)
     "style": "json-answer",             # optional name of the style spec to check
     "metadata": {"source": "..."}}      # optional, free-form, carried into the report

Unknown keys are rejected (a misspelt ``gold_doc_id`` would otherwise vanish silently). Every
problem in the file is reported at once, each with its line number and the bad value.

Style spec format (JSON, one object): ``name``, ``description``, and any of ``json_schema`` (a
JSON Schema, draft 2020-12, checked by :mod:`eval.metrics.schema`), ``regex`` (the whole
stripped output must match), ``answer_field`` (the field of the JSON output that holds the
answer, used to score knowledge independently of the format), ``max_chars`` and ``min_chars``
(bounds on the stripped output's length).

Style exemplars (JSONL): ``{"question": ..., "output": ...}`` per line; ``output`` is required.
The outputs are the style similarity's references; an exemplar with a ``question`` can also be a
``fewshot@K`` arm's earlier turn (the question asked, the output as the answer).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hybrid_assistant.eval.metrics.schema import schema_problems

_ROLES = ("system", "user", "assistant")
_ITEM_KEYS = frozenset(
    {
        "id",
        "question",
        "messages",
        "answers",
        "gold_doc_ids",
        "options",
        "answer_index",
        "stratum",
        "answerable",
        "group",
        "style",
        "metadata",
    }
)
_SPEC_KEYS = frozenset(
    {"name", "description", "json_schema", "regex", "answer_field", "max_chars", "min_chars"}
)
DEFAULT_STRATUM = "all"


class DatasetError(ValueError):
    """A dataset, style spec or exemplar file is invalid; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n  {shown}{more}")


class Message(NamedTuple):
    role: str
    content: str


@dataclass(frozen=True)
class EvalItem:
    """One evaluation question, asked identically of every arm."""

    id: str
    question: str | None
    messages: tuple[Message, ...] | None
    answers: tuple[str, ...]
    gold_doc_ids: tuple[str, ...] = ()
    options: tuple[str, ...] | None = None
    answer_index: int | None = None
    stratum: str = DEFAULT_STRATUM
    answerable: bool = True
    group: str = ""
    style: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _item_invariants(self)
        if problems:
            raise DatasetError(f"item {self.id!r}", problems)
        if not self.group:
            object.__setattr__(self, "group", self.gold_doc_ids[0] if self.gold_doc_ids else self.id)

    @property
    def text(self) -> str:
        """The question as plain text: ``question``, or the last user message of ``messages``."""
        if self.question is not None:
            return self.question
        assert self.messages is not None
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else self.messages[-1].content

    def chat_messages(self) -> list[dict[str, str]]:
        """The conversation to send: ``[{"role": "user", "content": question}]`` for a plain question."""
        if self.messages is not None:
            return [{"role": m.role, "content": m.content} for m in self.messages]
        return [{"role": "user", "content": self.text}]


def _item_invariants(item: EvalItem) -> list[str]:
    problems: list[str] = []
    if (item.question is None) == (item.messages is None):
        problems.append("exactly one of 'question' and 'messages' must be given")
    if item.answerable and not item.answers:
        problems.append("an answerable item needs at least one answer (or set answerable: false)")
    if (
        item.options is not None
        and item.answer_index is not None
        and not (0 <= item.answer_index < len(item.options))
    ):
        problems.append(f"answer_index {item.answer_index} is outside the {len(item.options)} options")
    return problems


@dataclass(frozen=True)
class StyleSpec:
    """A machine-checkable output style (see the module docstring for the file format)."""

    name: str
    description: str = ""
    json_schema: Mapping[str, Any] | None = None
    regex: str | None = None
    answer_field: str | None = None
    max_chars: int | None = None
    min_chars: int | None = None

    def __post_init__(self) -> None:
        problems = _spec_problems(self)
        if problems:
            raise DatasetError(f"style spec {self.name!r}", problems)

    @property
    def is_json(self) -> bool:
        """Whether outputs must be one JSON value (a schema or an answer field implies it)."""
        return self.json_schema is not None or self.answer_field is not None


def _spec_problems(spec: StyleSpec) -> list[str]:
    problems: list[str] = []
    if not spec.name:
        problems.append("name must be a non-empty string")
    if spec.json_schema is not None:
        problems += [f"json_schema: {p}" for p in schema_problems(spec.json_schema)]
    if spec.regex is not None:
        try:
            re.compile(spec.regex)
        except re.error as exc:
            problems.append(f"regex {spec.regex!r} does not compile: {exc}")
    for key in ("max_chars", "min_chars"):
        value = getattr(spec, key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            problems.append(f"{key} must be a non-negative integer, got {value!r}")
    if (
        isinstance(spec.min_chars, int)
        and isinstance(spec.max_chars, int)
        and spec.min_chars > spec.max_chars
    ):
        problems.append(f"min_chars {spec.min_chars} is greater than max_chars {spec.max_chars}")
    return problems


# ---------------------------------------------------------------- loading


def _str_list(value: Any, key: str, problems: list[str]) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{key} must be a list of strings, got {value!r}")
        return None
    if any(not v.strip() for v in value):
        problems.append(f"{key} must not contain empty strings, got {value!r}")
        return None
    return tuple(value)


def _parse_messages(value: Any, problems: list[str]) -> tuple[Message, ...] | None:
    if not isinstance(value, list) or not value:
        problems.append(f"messages must be a non-empty list, got {value!r}")
        return None
    out: list[Message] = []
    for i, m in enumerate(value):
        if (
            not isinstance(m, dict)
            or set(m) != {"role", "content"}
            or m["role"] not in _ROLES
            or not isinstance(m["content"], str)
        ):
            problems.append(f"messages[{i}] must be {{role: {'|'.join(_ROLES)}, content: str}}, got {m!r}")
            continue
        out.append(Message(m["role"], m["content"]))
    if out and out[-1].role != "user":
        problems.append(f"the last message must be from the user, got role {out[-1].role!r}")
    return tuple(out)


def _match_option(options: tuple[str, ...], answers: tuple[str, ...]) -> list[int]:
    from hybrid_assistant.eval.metrics.knowledge import normalize_answer

    wanted = {normalize_answer(a) for a in answers}
    return [i for i, o in enumerate(options) if normalize_answer(o) in wanted]


def parse_item(obj: Any) -> tuple[EvalItem | None, list[str]]:
    """Validate one decoded JSON object; returns the item (or None) and the problems found."""
    problems: list[str] = []
    if not isinstance(obj, dict):
        return None, [f"expected a JSON object, got {obj!r}"]
    unknown = sorted(set(obj) - _ITEM_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {unknown}; allowed: {sorted(_ITEM_KEYS)}")
    item_id = obj.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        problems.append(f"id must be a non-empty string, got {item_id!r}")
    question = obj.get("question")
    messages = None
    if question is not None and (not isinstance(question, str) or not question.strip()):
        problems.append(f"question must be a non-empty string, got {question!r}")
    if "messages" in obj:
        messages = _parse_messages(obj["messages"], problems)
    if ("question" in obj) == ("messages" in obj):
        problems.append("exactly one of 'question' and 'messages' must be given")
    if "answers" not in obj:
        problems.append("answers is required (use [] with answerable: false for an unanswerable item)")
    answers = _str_list(obj.get("answers", []), "answers", problems) or ()
    gold = _str_list(obj.get("gold_doc_ids", []), "gold_doc_ids", problems) or ()
    answerable = obj.get("answerable", bool(answers))
    if not isinstance(answerable, bool):
        problems.append(f"answerable must be true or false, got {answerable!r}")
        answerable = bool(answers)
    if answerable and not answers:
        problems.append("an answerable item needs at least one answer (or set answerable: false)")
    options: tuple[str, ...] | None = None
    answer_index = obj.get("answer_index")
    if obj.get("options") is not None:
        options = _str_list(obj["options"], "options", problems)
        if options is not None and len(options) < 2:
            problems.append(f"options needs at least 2 entries, got {list(options)!r}")
        if options is not None and len(set(options)) != len(options):
            problems.append(f"options must be distinct, got {list(options)!r}")
    if answer_index is not None:
        if options is None:
            problems.append("answer_index given without options")
        elif not isinstance(answer_index, int) or isinstance(answer_index, bool):
            problems.append(f"answer_index must be an integer, got {answer_index!r}")
        elif not 0 <= answer_index < len(options):
            problems.append(f"answer_index {answer_index} is outside the {len(options)} options")
    elif options is not None and answers:
        matches = _match_option(options, answers)
        if len(matches) != 1:
            problems.append(
                f"cannot tell the correct option: {len(matches)} of {list(options)!r} match answers "
                f"{list(answers)!r}; give answer_index"
            )
        else:
            answer_index = matches[0]
    for key in ("stratum", "group", "style"):
        value = obj.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{key} must be a non-empty string, got {value!r}")
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        problems.append(f"metadata must be an object, got {metadata!r}")
    if problems or not isinstance(item_id, str):
        return None, problems
    item = EvalItem(
        id=item_id,
        question=question,
        messages=messages,
        answers=answers,
        gold_doc_ids=gold,
        options=options,
        answer_index=answer_index,
        stratum=obj.get("stratum", DEFAULT_STRATUM),
        answerable=answerable,
        group=obj.get("group", ""),
        style=obj.get("style"),
        metadata=metadata,
    )
    return item, []


def item_to_dict(item: EvalItem) -> dict[str, Any]:
    """The JSONL form of an item (inverse of :func:`parse_item`)."""
    out: dict[str, Any] = {"id": item.id}
    if item.messages is not None:
        out["messages"] = [{"role": m.role, "content": m.content} for m in item.messages]
    else:
        out["question"] = item.question
    out["answers"] = list(item.answers)
    out["gold_doc_ids"] = list(item.gold_doc_ids)
    if item.options is not None:
        out["options"] = list(item.options)
        out["answer_index"] = item.answer_index
    out.update(stratum=item.stratum, answerable=item.answerable, group=item.group)
    if item.style is not None:
        out["style"] = item.style
    if item.metadata:
        out["metadata"] = dict(item.metadata)
    return out


def _json_lines(path: Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line; a line that is not JSON is added
    to ``problems`` and skipped, so a file's every problem is reported at once."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"line {lineno}: not UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})")


def load_dataset(path: str | Path) -> list[EvalItem]:
    """Read a JSONL dataset; raises :class:`DatasetError` listing every problem with its line number."""
    path = Path(path)
    items: list[EvalItem] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, obj in _json_lines(path, problems):
        item, item_problems = parse_item(obj)
        problems += [f"line {lineno}: {p}" for p in item_problems]
        if item is None:
            continue
        if item.id in first_line:
            problems.append(f"line {lineno}: duplicate id {item.id!r} (first on line {first_line[item.id]})")
            continue
        first_line[item.id] = lineno
        items.append(item)
    if not items and not problems:
        problems.append("the dataset is empty")
    if problems:
        raise DatasetError(str(path), problems)
    return items


def parse_style_spec(obj: Any, source: str = "style spec") -> StyleSpec:
    """Validate a decoded style spec object; raises :class:`DatasetError` with every problem."""
    if not isinstance(obj, dict):
        raise DatasetError(source, [f"expected a JSON object, got {obj!r}"])
    problems: list[str] = []
    unknown = sorted(set(obj) - _SPEC_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {unknown}; allowed: {sorted(_SPEC_KEYS)}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"name must be a non-empty string, got {name!r}")
    for key in ("description", "regex", "answer_field"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            problems.append(f"{key} must be a string, got {obj[key]!r}")
    if obj.get("json_schema") is not None and not isinstance(obj["json_schema"], dict):
        problems.append(f"json_schema must be an object, got {obj['json_schema']!r}")
    if problems:
        raise DatasetError(source, problems)
    try:
        return StyleSpec(
            name=name,  # type: ignore[arg-type]  # checked above
            description=obj.get("description") or "",
            json_schema=obj.get("json_schema"),
            regex=obj.get("regex"),
            answer_field=obj.get("answer_field"),
            max_chars=obj.get("max_chars"),
            min_chars=obj.get("min_chars"),
        )
    except DatasetError as exc:
        raise DatasetError(source, exc.problems) from None


def load_style_spec(path: str | Path) -> StyleSpec:
    """Read a style spec JSON file (format of ``eval/data/demo/style_spec.json``)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(str(path), [f"not valid JSON ({exc.msg} at line {exc.lineno})"]) from None
    except UnicodeDecodeError as exc:
        raise DatasetError(str(path), [f"not UTF-8 ({exc.reason} at byte {exc.start})"]) from None
    return parse_style_spec(obj, str(path))


@dataclass(frozen=True)
class Exemplar:
    """One style exemplar: the question it answers (None when the file gives none) and the output."""

    question: str | None
    output: str


def load_style_exemplars(path: str | Path) -> list[Exemplar]:
    """Read style exemplars (JSONL of ``{"question", "output"}``), in file order.

    ``output`` is required; ``question`` is optional (an exemplar without one still serves the
    similarity metric, but cannot be a few-shot turn). Every problem is reported at once.
    """
    path = Path(path)
    exemplars: list[Exemplar] = []
    problems: list[str] = []
    for lineno, obj in _json_lines(path, problems):
        if not isinstance(obj, dict):
            problems.append(f"line {lineno}: expected a JSON object, got {obj!r}")
            continue
        output, question = obj.get("output"), obj.get("question")
        if not isinstance(output, str) or not output.strip():
            problems.append(f"line {lineno}: 'output' must be a non-empty string, got {output!r}")
            continue
        if question is not None and (not isinstance(question, str) or not question.strip()):
            problems.append(f"line {lineno}: 'question' must be a non-empty string, got {question!r}")
            continue
        exemplars.append(Exemplar(question, output))
    if not exemplars and not problems:
        problems.append("no exemplars")
    if problems:
        raise DatasetError(str(path), problems)
    return exemplars


def load_exemplars(path: str | Path) -> list[str]:
    """Read style exemplars (JSONL of ``{"question", "output"}``); returns the outputs."""
    return [e.output for e in load_style_exemplars(path)]


def stratified_subset(items: Sequence[EvalItem], count: int) -> list[EvalItem]:
    """A deterministic subset of ``count`` items that keeps each stratum's share of the dataset.

    Within a stratum the picks are evenly spaced in file order, so they spread over its
    documents instead of taking the first few; every stratum keeps at least one item. The
    subset depends only on the file, never on results, and keeps the file's order.
    """
    if count >= len(items):
        return list(items)
    strata: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        strata.setdefault(item.stratum, []).append(index)
    exact = {name: count * len(members) / len(items) for name, members in strata.items()}
    quota = {name: max(1, math.floor(share)) for name, share in exact.items()}
    # Largest remainders take what is left over.
    for name in sorted(exact, key=lambda s: exact[s] - math.floor(exact[s]), reverse=True):
        if sum(quota.values()) >= count:
            break
        quota[name] = min(len(strata[name]), quota[name] + 1)
    chosen: set[int] = set()
    for name, members in strata.items():
        step = len(members) / quota[name]
        chosen.update(members[int((i + 0.5) * step)] for i in range(quota[name]))
    return [item for index, item in enumerate(items) if index in chosen]
