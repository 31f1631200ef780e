"""Arms: the ways of answering that an evaluation compares, and the 2x2 designs among them.

Grammar of an arm (parts joined by ``+``, in any order; the canonical name puts the adapter
first)::

    base                       the base model, no context
    adapter:NAME               a LoRA adapter, no context
    rag | rag@K                retrieval from the server's index (top K; server default if absent)
    oracle                     the caller hands over the item's gold passages (retrieval's ceiling)
    adapter:NAME+rag@K, adapter:NAME+oracle, ...

``parse_arms("base,adapter:style,rag,adapter:style+rag,oracle")`` parses a comma-separated list.
Adapter names follow the server's rule: 1-64 letters, digits, ``.``, ``_`` or ``-``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RAG = re.compile(r"^rag(?:@(\d+))?$")


class ArmError(ValueError):
    """An arm specification is invalid; ``problems`` lists every problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid arms: " + "; ".join(self.problems))


@dataclass(frozen=True)
class Arm:
    """One way of answering: an adapter (or none) and a context source (none, retrieval, oracle)."""

    name: str
    adapter: str | None = None
    retrieval: bool = False
    oracle: bool = False
    top_k: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.retrieval and self.oracle:
            problems.append(f"arm {self.name!r}: retrieval and oracle context exclude each other")
        if self.top_k is not None and (not self.retrieval or self.top_k < 1):
            problems.append(f"arm {self.name!r}: top_k {self.top_k!r} needs retrieval and must be >= 1")
        if self.adapter is not None and not _ADAPTER_NAME.match(self.adapter):
            problems.append(f"arm {self.name!r}: adapter name {self.adapter!r} is not allowed")
        if not problems and self.name != canonical_name(self.adapter, self.context, self.top_k):
            expected = canonical_name(self.adapter, self.context, self.top_k)
            problems.append(f"arm name {self.name!r} is not canonical; expected {expected!r}")
        if problems:
            raise ArmError(problems)

    @classmethod
    def make(
        cls,
        adapter: str | None = None,
        *,
        retrieval: bool = False,
        oracle: bool = False,
        top_k: int | None = None,
    ) -> Arm:
        context = "oracle" if oracle else "rag" if retrieval else "none"
        name = canonical_name(adapter, context, top_k)
        return cls(name, adapter, retrieval, oracle, top_k)

    @property
    def context(self) -> str:
        """``"none"``, ``"rag"`` or ``"oracle"``."""
        return "oracle" if self.oracle else "rag" if self.retrieval else "none"

    @property
    def context_label(self) -> str:
        """The context part of the name: ``""``, ``"rag"``, ``"rag@3"`` or ``"oracle"``."""
        if self.oracle:
            return "oracle"
        if self.retrieval:
            return "rag" if self.top_k is None else f"rag@{self.top_k}"
        return ""

    @property
    def server_arm(self) -> str:
        """The arm label the server reports for such a request (it calls caller passages ``context``)."""
        parts = [f"adapter:{self.adapter}"] if self.adapter else []
        if self.oracle:
            parts.append("context")
        elif self.retrieval:
            parts.append("rag")
        return "+".join(parts) or "base"


def canonical_name(adapter: str | None, context: str = "none", top_k: int | None = None) -> str:
    parts = [f"adapter:{adapter}"] if adapter else []
    if context == "rag":
        parts.append("rag" if top_k is None else f"rag@{top_k}")
    elif context == "oracle":
        parts.append("oracle")
    return "+".join(parts) or "base"


def _parse_one(spec: str) -> tuple[Arm | None, list[str]]:
    text = spec.strip()
    if not text:
        return None, ["empty arm"]
    if text == "base":
        return Arm.make(), []
    adapter: str | None = None
    context = "none"
    top_k: int | None = None
    problems: list[str] = []
    for part in (p.strip() for p in text.split("+")):
        rag = _RAG.match(part)
        if part.startswith("adapter:"):
            name = part.removeprefix("adapter:")
            if adapter is not None:
                problems.append(f"{text!r}: more than one adapter")
            elif not _ADAPTER_NAME.match(name):
                problems.append(f"{text!r}: adapter name {name!r} is not allowed (1-64 of A-Z a-z 0-9 . _ -)")
            else:
                adapter = name
        elif rag or part == "oracle":
            if context != "none":
                problems.append(f"{text!r}: more than one context source")
            context = "rag" if rag else "oracle"
            if rag and rag.group(1) is not None:
                top_k = int(rag.group(1))
                if top_k < 1:
                    problems.append(f"{text!r}: top_k must be at least 1")
        elif part == "base":
            problems.append(f"{text!r}: 'base' cannot be combined with other parts")
        else:
            problems.append(
                f"{text!r}: unknown part {part!r} (expected base, adapter:NAME, rag, rag@K or oracle)"
            )
    if problems:
        return None, problems
    return Arm.make(adapter, retrieval=context == "rag", oracle=context == "oracle", top_k=top_k), []


def parse_arm(spec: str) -> Arm:
    arm, problems = _parse_one(spec)
    if arm is None:
        raise ArmError(problems)
    return arm


def parse_arms(specs: str | Sequence[str]) -> list[Arm]:
    """Parse a comma-separated string (or a list) of arms; every problem is reported at once.

    Duplicates (after canonicalisation, e.g. ``rag+adapter:x`` and ``adapter:x+rag``) are errors.
    """
    parts = specs.split(",") if isinstance(specs, str) else list(specs)
    arms: list[Arm] = []
    problems: list[str] = []
    seen: set[str] = set()
    for spec in parts:
        arm, arm_problems = _parse_one(spec)
        problems += arm_problems
        if arm is None:
            continue
        if arm.name in seen:
            problems.append(f"duplicate arm {arm.name!r}")
            continue
        seen.add(arm.name)
        arms.append(arm)
    if not arms and not problems:
        problems.append("no arms given")
    if problems:
        raise ArmError(problems)
    return arms


@dataclass(frozen=True)
class FactorialSet:
    """A 2x2 design: adapter (off/on) x context (off/on), four arms answering the same items.

    ``context`` is the context label (``rag``, ``rag@3`` or ``oracle``). The effects are
    computed by :func:`eval.stats.factorial_effects`.
    """

    adapter: str
    context: str
    base: str  # neither factor
    adapter_arm: str  # adapter only
    context_arm: str  # context only
    both: str  # adapter and context

    @property
    def name(self) -> str:
        return f"adapter:{self.adapter} x {self.context}"

    @property
    def arms(self) -> tuple[str, str, str, str]:
        return (self.base, self.adapter_arm, self.context_arm, self.both)


def factorial_sets(arms: Sequence[Arm]) -> list[FactorialSet]:
    """Every complete 2x2 among ``arms``: for each adapter A and context C (``rag``, ``rag@K``,
    ``oracle``), the set {base, adapter:A, C, adapter:A+C} when all four are present.

    Ordered by first appearance of the adapter, then of the context, in ``arms``.
    """
    names = {a.name for a in arms}
    adapters = list(dict.fromkeys(a.adapter for a in arms if a.adapter))
    contexts = list(dict.fromkeys(a.context_label for a in arms if a.context_label))
    sets = []
    if "base" not in names:
        return []
    for adapter in adapters:
        for context in contexts:
            candidate = FactorialSet(
                adapter=adapter,
                context=context,
                base="base",
                adapter_arm=f"adapter:{adapter}",
                context_arm=context,
                both=f"adapter:{adapter}+{context}",
            )
            if all(n in names for n in candidate.arms):
                sets.append(candidate)
    return sets
