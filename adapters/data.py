"""Training examples from JSONL: load, validate every line, split and subsample deterministically.

Two line formats are accepted:

* chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
* pair: ``{"prompt": "...", "response": "..."}`` with an optional ``"system"``

Every line is checked before anything trains, and all problems are reported at once with
``file:line`` so a user fixes the file in one pass instead of one error per run.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROLES = ("system", "user", "assistant")
MAX_LISTED_PROBLEMS = 20

T = TypeVar("T")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class ChatExample:
    """One conversation; the loss is taken on its assistant turns."""

    messages: tuple[Message, ...]
    source: str = ""  # "file:line", for messages about this example

    def as_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def to_json(self) -> str:
        return json.dumps({"messages": self.as_dicts()}, ensure_ascii=False)


class DataValidationError(ValueError):
    """A training file has problems; ``problems`` holds every one as ``file:line: what``."""

    def __init__(self, path: Path | str, problems: Sequence[str], limit: int = MAX_LISTED_PROBLEMS) -> None:
        self.path = str(path)
        self.problems = list(problems)
        shown = "; ".join(self.problems[:limit])
        more = len(self.problems) - limit
        suffix = f"; ... and {more} more" if more > 0 else ""
        count = len(self.problems)
        super().__init__(f"{self.path} has {count} problem{'s' if count != 1 else ''}: {shown}{suffix}")


def chat(*turns: tuple[str, str], source: str = "") -> ChatExample:
    """Build an example from ``(role, content)`` pairs (tests and generated data sets)."""
    return ChatExample(tuple(Message(role, content) for role, content in turns), source)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_text(value: Any, what: str, problems: list[str]) -> str | None:
    if not isinstance(value, str):
        problems.append(f"{what} must be a string, got {type(value).__name__} {_short(value)}")
        return None
    if not value.strip():
        problems.append(f"{what} is empty")
        return None
    return value


def _parse_messages(raw: Any, problems: list[str]) -> list[Message]:
    if not isinstance(raw, list):
        problems.append(f"'messages' must be a list, got {type(raw).__name__} {_short(raw)}")
        return []
    if not raw:
        problems.append("'messages' is empty")
        return []
    messages: list[Message] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            problems.append(f"messages[{i}] must be an object, got {type(item).__name__} {_short(item)}")
            continue
        role = item.get("role")
        if role not in ROLES:
            problems.append(f"messages[{i}] has unknown role {_short(role)}; expected one of {list(ROLES)}")
            continue
        content = _check_text(item.get("content"), f"messages[{i}] ({role}) content", problems)
        if content is not None:
            messages.append(Message(role, content))
    if len(messages) != len(raw):
        return []  # per-message problems are already listed; structure checks would only add noise
    _check_order(messages, problems)
    return messages


def _check_order(messages: Sequence[Message], problems: list[str]) -> None:
    # Chat templates (and the server) expect: optional system, then user/assistant alternating.
    turns = list(messages)
    if turns and turns[0].role == "system":
        turns = turns[1:]
    if any(m.role == "system" for m in turns):
        problems.append("a system message is only allowed as the first message")
        return
    if not any(m.role == "assistant" for m in turns):
        problems.append("no assistant turn: nothing to learn from")
        return
    roles = [m.role for m in turns]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if roles != expected:
        problems.append(f"turns must alternate user/assistant starting with user, got {roles}")
    elif roles[-1] != "assistant":
        problems.append("the last turn must be the assistant's")


def _parse_pair(obj: Mapping[str, Any], problems: list[str]) -> list[Message]:
    messages: list[Message] = []
    if "system" in obj:
        system = _check_text(obj["system"], "'system'", problems)
        if system is not None:
            messages.append(Message("system", system))
    prompt = _check_text(obj.get("prompt"), "'prompt'", problems)
    response = _check_text(obj.get("response"), "'response'", problems)
    if prompt is None or response is None:
        return []
    return [*messages, Message("user", prompt), Message("assistant", response)]


def parse_line(text: str, problems: list[str]) -> list[Message]:
    """Messages of one JSONL line; appends what is wrong (without location) to ``problems``."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"invalid JSON: {exc.msg} (column {exc.colno})")
        return []
    if not isinstance(obj, dict):
        problems.append(f"expected a JSON object, got {type(obj).__name__} {_short(obj)}")
        return []
    has_chat, has_pair = "messages" in obj, "prompt" in obj or "response" in obj
    if has_chat and has_pair:
        problems.append("has both 'messages' and 'prompt'/'response': use one format per line")
        return []
    if has_chat:
        return _parse_messages(obj["messages"], problems)
    if has_pair:
        return _parse_pair(obj, problems)
    problems.append(f"expected 'messages' or 'prompt' + 'response', got keys {sorted(obj)}")
    return []


def load_examples(path: Path | str) -> list[ChatExample]:
    """Every example in a JSONL file, or DataValidationError listing every bad line."""
    path = Path(path)
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DataValidationError(path, [f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    examples: list[ChatExample] = []
    problems: list[str] = []
    for number, raw in enumerate(raw_lines, start=1):
        where = f"{path.name}:{number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})")
            continue
        if not text.strip():
            continue  # blank lines (a trailing newline, spacing) carry no example
        line_problems: list[str] = []
        messages = parse_line(text, line_problems)
        problems.extend(f"{where}: {p}" for p in line_problems)
        if messages and not line_problems:
            examples.append(ChatExample(tuple(messages), where))
    if not examples and not problems:
        problems.append(f"{path.name}: no examples (the file is empty)")
    if problems:
        raise DataValidationError(path, problems)
    return examples


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def examples_sha256(examples: Sequence[ChatExample]) -> str:
    """Content hash of examples (order matters), for data that never lived in a file."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.to_json().encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def write_examples(examples: Sequence[ChatExample], path: Path) -> Path:
    """Write chat-format JSONL (one example a line), the format :func:`load_examples` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(e.to_json() + "\n" for e in examples), encoding="utf-8")
    return path


def _shuffled(count: int, seed: int) -> list[int]:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def split_examples(
    examples: Sequence[ChatExample], val_fraction: float, seed: int
) -> tuple[list[ChatExample], list[ChatExample]]:
    """(train, validation), the same for the same seed. At least one of each when possible."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not examples:
        raise ValueError("no examples to split")
    n_val = 0
    if val_fraction > 0 and len(examples) >= 2:
        n_val = min(max(round(len(examples) * val_fraction), 1), len(examples) - 1)
    order = _shuffled(len(examples), seed)
    val_idx = set(order[:n_val])
    train = [e for i, e in enumerate(examples) if i not in val_idx]
    val = [e for i, e in enumerate(examples) if i in val_idx]
    return train, val


def take_subset(examples: Sequence[T], n: int, seed: int) -> list[T]:
    """The first ``n`` of a seeded shuffle: for one seed, smaller subsets nest inside larger ones."""
    if not 1 <= n <= len(examples):
        raise ValueError(f"subset size must be between 1 and {len(examples)}, got {n!r}")
    return [examples[i] for i in _shuffled(len(examples), seed)[:n]]
