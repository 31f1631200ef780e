"""Arms: the ways of answering that an evaluation compares, and the 2x2 designs among them.

Grammar of an arm (parts joined by ``+``, in any order; the canonical name puts the adapter
first)::

    base                       the base model, no context
    adapter:NAME               a LoRA adapter, no context
    prompt                     the style spec's ``description`` as a system instruction
    fewshot@K                  K style exemplars as earlier chat turns (never the asked item)
    rag | rag@K                retrieval from the server's index (top K; server default if absent)
    oracle                     the caller hands over the item's gold passages (retrieval's ceiling)
    adapter:NAME+rag@K, prompt+rag, fewshot@4+oracle, adapter:NAME+prompt, ...

Two kinds of part: a **style lever** (an adapter, ``prompt``, ``fewshot@K``, or several of them)
and a **context** (none, ``rag``/``rag@K`` or ``oracle``). The canonical name lists the adapter,
then ``prompt``, then ``fewshot@K``, then the context.

``parse_arms("base,adapter:style,rag,adapter:style+rag,oracle")`` parses a comma-separated list.
Adapter names follow the server's rule: 1-64 letters, digits, ``.``, ``_`` or ``-``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RAG = re.compile(r"^rag(?:@(\d+))?$")
_FEWSHOT = re.compile(r"^fewshot@(\d+)$")
#: More exemplars than this would crowd the prompt of a small model; larger K is refused.
MAX_FEWSHOT = 64


class ArmError(ValueError):
    """An arm specification is invalid; ``problems`` lists every problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid arms: " + "; ".join(self.problems))


@dataclass(frozen=True)
class Arm:
    """One way of answering: a style lever (adapter, instruction, exemplars; or none) and a
    context source (none, retrieval, oracle)."""

    name: str
    adapter: str | None = None
    retrieval: bool = False
    oracle: bool = False
    top_k: int | None = None
    prompt: bool = False  # the style spec's description as a system message
    fewshot: int = 0  # style exemplars as earlier chat turns

    def __post_init__(self) -> None:
        problems = []
        if self.retrieval and self.oracle:
            problems.append(f"arm {self.name!r}: retrieval and oracle context exclude each other")
        if self.top_k is not None and (not self.retrieval or self.top_k < 1):
            problems.append(f"arm {self.name!r}: top_k {self.top_k!r} needs retrieval and must be >= 1")
        if self.adapter is not None and not _ADAPTER_NAME.match(self.adapter):
            problems.append(f"arm {self.name!r}: adapter name {self.adapter!r} is not allowed")
        if not 0 <= self.fewshot <= MAX_FEWSHOT:
            problems.append(f"arm {self.name!r}: fewshot {self.fewshot!r} must be from 1 to {MAX_FEWSHOT}")
        expected = canonical_name(
            self.adapter, self.context, self.top_k, prompt=self.prompt, fewshot=self.fewshot
        )
        if not problems and self.name != expected:
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
        prompt: bool = False,
        fewshot: int = 0,
    ) -> Arm:
        context = "oracle" if oracle else "rag" if retrieval else "none"
        name = canonical_name(adapter, context, top_k, prompt=prompt, fewshot=fewshot)
        return cls(name, adapter, retrieval, oracle, top_k, prompt, fewshot)

    @property
    def style_lever(self) -> str:
        """The style part of the name: ``""`` (none), ``"adapter:x"``, ``"prompt"``, ``"fewshot@4"``,
        or a combination such as ``"adapter:x+prompt"``."""
        return canonical_name(self.adapter, prompt=self.prompt, fewshot=self.fewshot).removeprefix("base")

    @property
    def prompted(self) -> bool:
        """Whether the request carries style instructions or exemplars in its messages."""
        return self.prompt or self.fewshot > 0

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


def canonical_name(
    adapter: str | None,
    context: str = "none",
    top_k: int | None = None,
    *,
    prompt: bool = False,
    fewshot: int = 0,
) -> str:
    parts = [f"adapter:{adapter}"] if adapter else []
    if prompt:
        parts.append("prompt")
    if fewshot:
        parts.append(f"fewshot@{fewshot}")
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
    prompt = False
    fewshot = 0
    problems: list[str] = []
    for part in (p.strip() for p in text.split("+")):
        rag = _RAG.match(part)
        shots = _FEWSHOT.match(part)
        if part == "prompt":
            if prompt:
                problems.append(f"{text!r}: 'prompt' given twice")
            prompt = True
        elif shots or part.startswith("fewshot"):
            if fewshot:
                problems.append(f"{text!r}: more than one fewshot@K")
            elif not shots:
                problems.append(f"{text!r}: {part!r} needs a number of exemplars, as in fewshot@4")
            elif not 1 <= int(shots.group(1)) <= MAX_FEWSHOT:
                problems.append(f"{text!r}: fewshot@K needs K from 1 to {MAX_FEWSHOT}")
            else:
                fewshot = int(shots.group(1))
        elif part.startswith("adapter:"):
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
                f"{text!r}: unknown part {part!r} "
                "(expected base, adapter:NAME, prompt, fewshot@K, rag, rag@K or oracle)"
            )
    if problems:
        return None, problems
    arm = Arm.make(
        adapter,
        retrieval=context == "rag",
        oracle=context == "oracle",
        top_k=top_k,
        prompt=prompt,
        fewshot=fewshot,
    )
    return arm, []


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
    """A 2x2 design: style lever (off/on) x context (off/on), four arms answering the same items.

    ``lever`` is the style part of an arm's name (``adapter:x``, ``prompt``, ``fewshot@4``...);
    ``context`` is the context label (``rag``, ``rag@3`` or ``oracle``). The effects are computed
    by :func:`eval.stats.factorial_effects`.
    """

    lever: str
    context: str
    base: str  # neither factor
    lever_arm: str  # style lever only
    context_arm: str  # context only
    both: str  # lever and context

    @property
    def name(self) -> str:
        return f"{self.lever} x {self.context}"

    @property
    def arms(self) -> tuple[str, str, str, str]:
        return (self.base, self.lever_arm, self.context_arm, self.both)


def factorial_sets(arms: Sequence[Arm]) -> list[FactorialSet]:
    """Every complete 2x2 among ``arms``: for each style lever L (an adapter, ``prompt``,
    ``fewshot@K`` or a combination) and context C (``rag``, ``rag@K``, ``oracle``), the set
    {base, L, C, L+C} when all four are present.

    Ordered by first appearance of the lever, then of the context, in ``arms``.
    """
    by_name = {a.name: a for a in arms}
    levers = list(dict.fromkeys(a.style_lever for a in arms if a.style_lever))
    contexts = list(dict.fromkeys(a.context_label for a in arms if a.context_label))
    sets = []
    if "base" not in by_name:
        return []
    for lever in levers:
        for context in contexts:
            candidate = FactorialSet(
                lever=lever,
                context=context,
                base="base",
                lever_arm=lever,
                context_arm=context,
                both=f"{lever}+{context}",
            )
            if all(n in by_name for n in candidate.arms):
                sets.append(candidate)
    return sets
