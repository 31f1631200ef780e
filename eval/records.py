"""What the runner produces for each (item, arm): the answer and how it was made.

Records are plain data with a JSON round trip (:meth:`AnswerRecord.to_dict` /
:meth:`AnswerRecord.from_dict`) and a JSONL file form (:func:`dump_records` /
:func:`load_records`), so a run can be cached, re-analysed and shared.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AnswerRecord:
    """One arm's answer to one item.

    ``contexts`` are the document ids of the passages placed in the prompt, in prompt order
    (a document may repeat when several of its chunks were used). ``option_logprobs`` and
    ``option_token_counts`` come from the Score call, in the item's option order. ``error`` is
    set when the request failed; the item is then scored as wrong, never dropped.
    """

    item_id: str
    arm: str
    text: str = ""
    contexts: tuple[str, ...] = ()
    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    option_logprobs: tuple[float, ...] | None = None
    option_token_counts: tuple[int, ...] | None = None
    error: str | None = None
    finish_reason: str | None = None  # "stop" | "length" | None (unknown)

    def __post_init__(self) -> None:
        # Accept lists from callers and JSON, store tuples so records stay immutable.
        object.__setattr__(self, "contexts", tuple(self.contexts))
        if self.option_logprobs is not None:
            object.__setattr__(self, "option_logprobs", tuple(float(x) for x in self.option_logprobs))
        if self.option_token_counts is not None:
            object.__setattr__(self, "option_token_counts", tuple(int(x) for x in self.option_token_counts))
        problems = []
        if not self.item_id:
            problems.append("item_id must be non-empty")
        if not self.arm:
            problems.append("arm must be non-empty")
        if self.option_logprobs is not None and not all(math.isfinite(x) for x in self.option_logprobs):
            problems.append(f"option_logprobs must be finite, got {self.option_logprobs!r}")
        if (
            self.option_logprobs is not None
            and self.option_token_counts is not None
            and len(self.option_logprobs) != len(self.option_token_counts)
        ):
            problems.append(
                f"{len(self.option_logprobs)} option_logprobs "
                f"but {len(self.option_token_counts)} option_token_counts"
            )
        if problems:
            raise ValueError(f"invalid AnswerRecord ({self.item_id!r}, {self.arm!r}): " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("contexts", "option_logprobs", "option_token_counts"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> AnswerRecord:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"unknown AnswerRecord key(s) {unknown}")
        return cls(**obj)


def records_to_json(records: Iterable[AnswerRecord]) -> str:
    """JSONL text, one record per line."""
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)


def records_from_json(text: str) -> list[AnswerRecord]:
    return [AnswerRecord.from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]


def dump_records(path: str | Path, records: Iterable[AnswerRecord]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(records_to_json(records), encoding="utf-8")
    return path


def load_records(path: str | Path) -> list[AnswerRecord]:
    return records_from_json(Path(path).read_text(encoding="utf-8"))
