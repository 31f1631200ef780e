"""Prompting arms: the messages a ``prompt`` or ``fewshot@K`` arm sends, and what they need.

``prompt`` puts the style spec's description in a system message, before the item's own system
message if it has one (blank line between). ``fewshot@K`` puts K exemplar question/answer pairs
as earlier turns before the item's conversation: the first K exemplars in file order that have a
question other than the asked item's, so every item sees the same exemplars in the same order
(one shared prefix for the server's prefix cache) and no item sees its own answer. The server
then adds retrieved or oracle passages to the first system message, as for every arm.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybrid_assistant.eval.arms import Arm
    from hybrid_assistant.eval.dataset import EvalItem, Exemplar, StyleSpec


class PromptingError(ValueError):
    """A prompting arm lacks what it needs (a description, enough exemplars)."""


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def select_exemplars(exemplars: Sequence[Exemplar], item: EvalItem, k: int) -> list[Exemplar]:
    """The first ``k`` exemplars, in file order, that have a question other than the item's.

    The same order for every item (only the asked item's own exemplar is skipped), so the
    prompts of a few-shot arm share their prefix. Questions are compared case- and
    whitespace-insensitively. Fewer than ``k`` come back when there are not enough.
    """
    asked = _fold(item.text)
    usable = (e for e in exemplars if e.question is not None and _fold(e.question) != asked)
    return list(itertools.islice(usable, max(0, k)))


def prompting_problems(
    items: Sequence[EvalItem],
    arms: Sequence[Arm],
    style: StyleSpec | None,
    exemplars: Sequence[Exemplar],
) -> list[str]:
    """Why the prompting arms cannot be asked (empty when they can), each problem naming its arm."""
    problems: list[str] = []
    for arm in arms:
        if arm.prompt and (style is None or not style.description.strip()):
            why = "no style spec was given" if style is None else f"style spec {style.name!r} has none"
            problems.append(f"arm {arm.name!r} needs a style spec with a non-empty description ({why})")
        if arm.fewshot:
            usable = sum(1 for e in exemplars if e.question is not None)
            short = [i.id for i in items if len(select_exemplars(exemplars, i, arm.fewshot)) < arm.fewshot]
            if usable < arm.fewshot:
                problems.append(
                    f"arm {arm.name!r} needs {arm.fewshot} style exemplars with a question, "
                    f"got {usable} (of {len(exemplars)} exemplars)"
                )
            elif short:
                problems.append(
                    f"arm {arm.name!r} needs {arm.fewshot} style exemplars other than the asked item; "
                    f"items {short[:5]} leave fewer"
                )
    return problems


def arm_messages(
    item: EvalItem,
    arm: Arm,
    style: StyleSpec | None = None,
    exemplars: Sequence[Exemplar] = (),
) -> list[dict[str, str]]:
    """The conversation an arm sends for an item: its instruction and exemplars, then the item's."""
    messages = item.chat_messages()
    system: str | None = None
    if messages and messages[0]["role"] == "system":
        system = messages.pop(0)["content"]
    if arm.prompt:
        if style is None or not style.description.strip():
            raise PromptingError(f"arm {arm.name!r} needs a style spec with a non-empty description")
        system = style.description if system is None else f"{style.description}\n\n{system}"
    turns: list[dict[str, str]] = []
    if arm.fewshot:
        chosen = select_exemplars(exemplars, item, arm.fewshot)
        if len(chosen) < arm.fewshot:
            raise PromptingError(
                f"arm {arm.name!r}: only {len(chosen)} usable style exemplars for item {item.id!r}"
            )
        for exemplar in chosen:
            assert exemplar.question is not None  # select_exemplars keeps only those with one
            turns += [
                {"role": "user", "content": exemplar.question},
                {"role": "assistant", "content": exemplar.output},
            ]
    head = [] if system is None else [{"role": "system", "content": system}]
    return head + turns + messages
