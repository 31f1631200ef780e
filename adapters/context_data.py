"""Training examples in the prompt shape the server builds when it retrieves: two recipes.

* **context** (style adapters): a share of the examples gets the retrieval system message the
  server would send, numbered passages included, built by the server's own layout
  (:func:`hybrid_assistant.retrieval.prompt_context.with_context`). An adapter trained only on
  bare questions meets a long, unfamiliar system message under RAG and its format can collapse;
  one that has seen that shape keeps it. Passages are drawn by seed from a document folder and
  never hold the example's own answer: a style example must not teach copying from context.
* **raft** (knowledge adapters, after RAFT, Zhang et al. 2024): every question comes with the
  chunk of its gold document that states the answer among ``k`` distractor chunks of other
  documents, in a seeded order; a share gets distractors only (the answer must then come from
  memory). The target is the answer, optionally followed by a short quote of its source; the
  loss is on the answer alone (:mod:`hybrid_assistant.adapters.chat_tokens` masks the prompt).

Passages are chunks cut by the retrieval chunker with the server's default size, so a passage
in training is the size of a passage at serving time. Everything is deterministic by seed.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_assistant.adapters.data import ChatExample, Message
from hybrid_assistant.adapters.train_config import DEFAULT_CONTEXT_SHARE
from hybrid_assistant.retrieval.chunker import Chunker, sentence_spans
from hybrid_assistant.retrieval.loaders import DocumentLoader
from hybrid_assistant.retrieval.prompt_context import ContextPassage, with_context
from hybrid_assistant.retrieval.settings import RetrievalSettings

CONTEXT, RAFT = "context", "raft"

_RETRIEVAL_DEFAULTS = RetrievalSettings()


class ContextDataError(ValueError):
    """The context recipe cannot be built as asked (no documents, too few passages without the
    answer, a gold document that is not in the folder, a bad share)."""


@dataclass(frozen=True)
class ContextRecipe:
    """How context goes into the training examples; recorded in the adapter's metadata."""

    recipe: str = CONTEXT
    """``context`` (a share of style examples under a retrieval prompt) or ``raft``."""
    share: float = DEFAULT_CONTEXT_SHARE
    """context: the share of examples given a retrieval system message. raft: the share whose
    passages include the gold chunk (the rest get distractors only)."""
    passages: int = 3
    """Passages in each context prompt (the demo's ``rag@3``): raft's gold chunk counts as one."""
    seed: int = 0
    """Which examples get context, which passages, in which order."""
    quote: bool = False
    """raft: the target adds the sentence of the gold chunk that states the answer."""

    def __post_init__(self) -> None:
        problems = []
        if self.recipe not in (CONTEXT, RAFT):
            problems.append(f"recipe must be {CONTEXT!r} or {RAFT!r}, got {self.recipe!r}")
        if not 0.0 <= self.share <= 1.0:
            problems.append(f"share must be in [0, 1], got {self.share!r}")
        if not 1 <= self.passages <= 16:
            problems.append(f"passages must be from 1 to 16, got {self.passages!r}")
        if self.recipe == RAFT and self.passages < 2 and self.share < 1.0:
            problems.append("raft needs at least 2 passages (the gold chunk and a distractor)")
        if problems:
            raise ContextDataError("invalid context recipe: " + "; ".join(problems))

    def metadata(self, source: Path | str) -> dict[str, str]:
        """String values for ``adapter_metadata.json`` (the server caps each at 2048 characters)."""
        return {
            "context_recipe": self.recipe,
            "context_share": f"{self.share:g}",
            "context_passages": str(self.passages),
            "context_seed": str(self.seed),
            "context_quote": str(self.quote).lower(),
            "context_source": str(source)[-512:],
        }


def load_passages(
    folder: Path | str,
    *,
    chunk_size: int = _RETRIEVAL_DEFAULTS.chunk_size,
    chunk_overlap: int = _RETRIEVAL_DEFAULTS.chunk_overlap,
) -> list[ContextPassage]:
    """Every chunk of every document in ``folder`` (document id: the file's stem), in file order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ContextDataError(f"context documents: {str(folder)!r} is not a folder")
    chunker = Chunker(chunk_size, chunk_overlap)
    passages = []
    for document in sorted(DocumentLoader().iter_documents([folder]), key=lambda d: d.id):
        doc_id = Path(document.id).stem
        for number, chunk in enumerate(chunker.chunk(document.text)):
            passages.append(ContextPassage(doc_id, f"{doc_id}#{number}", 0.0, chunk.text))
    if not passages:
        raise ContextDataError(f"context documents: no readable documents in {str(folder)!r}")
    return passages


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def mentions(text: str, answer: str) -> bool:
    """``answer`` occurs in ``text`` as whole words, ignoring case and spacing ("7" is not in "1874")."""
    needle = _normal(answer)
    if not needle:
        return False
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", _normal(text)) is not None


def answer_strings(example: ChatExample) -> list[str]:
    """What a passage must not contain for this example: each assistant reply, the string values
    of a reply that is a JSON object, and what follows the label of each ``Label: value`` line
    (the answer of a labelled format); parts shorter than three characters are not checked."""
    found = []
    for message in example.messages:
        if message.role != "assistant":
            continue
        parts = [message.content]
        try:
            value: Any = json.loads(message.content)
        except ValueError:
            value = None
        if isinstance(value, dict):
            parts += [v for v in value.values() if isinstance(v, str)]
        parts += [line.partition(": ")[2] for line in message.content.splitlines() if ": " in line]
        found += [p for p in parts if len(p.strip()) >= 3]
    return found


def _numbered(passages: Sequence[ContextPassage]) -> list[ContextPassage]:
    return [
        ContextPassage(p.document_id, p.chunk_id, p.score, p.text, p.metadata, i)
        for i, p in enumerate(passages, start=1)
    ]


def with_passages(example: ChatExample, passages: Sequence[ContextPassage], tag: str) -> ChatExample:
    """The example as the server would prompt it with these passages retrieved."""
    messages = with_context(example.as_dicts(), _numbered(passages))
    return ChatExample(tuple(Message(m["role"], m["content"]) for m in messages), f"{example.source}+{tag}")


def _chosen(count: int, share: float, rng: random.Random) -> set[int]:
    return set(rng.sample(range(count), round(count * share)))


def context_augmented(
    examples: Sequence[ChatExample], passages: Sequence[ContextPassage], recipe: ContextRecipe
) -> list[ChatExample]:
    """The examples in order, ``recipe.share`` of them (seeded) under a retrieval prompt."""
    if recipe.recipe != CONTEXT:
        raise ContextDataError(f"context_augmented needs the {CONTEXT!r} recipe, got {recipe.recipe!r}")
    rng = random.Random(recipe.seed)
    chosen = _chosen(len(examples), recipe.share, rng)
    out = []
    for i, example in enumerate(examples):
        if i not in chosen:
            out.append(example)
            continue
        answers = answer_strings(example)
        free = [p for p in passages if not any(mentions(p.text, a) for a in answers)]
        if len(free) < recipe.passages:
            raise ContextDataError(
                f"{example.source or f'example {i}'}: only {len(free)} passages do not contain its "
                f"answer; {recipe.passages} needed"
            )
        out.append(with_passages(example, rng.sample(free, recipe.passages), "context"))
    return out


@dataclass(frozen=True)
class RaftItem:
    """A question, its short answer and the document that states it."""

    question: str
    answer: str
    doc_id: str
    source: str = ""


def load_raft_items(path: Path | str) -> list[RaftItem]:
    """``{"question", "answer", "doc_id"}`` per JSONL line; every bad line reported at once."""
    path = Path(path)
    items, problems = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ContextDataError(f"{path}: cannot read: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: invalid JSON: {exc.msg}")
            continue
        fields = {k: obj.get(k) if isinstance(obj, dict) else None for k in ("question", "answer", "doc_id")}
        bad = [k for k, v in fields.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            problems.append(f"{where}: needs non-empty strings {bad}")
            continue
        items.append(RaftItem(fields["question"], fields["answer"], fields["doc_id"], where))  # type: ignore[arg-type]
    if not items and not problems:
        problems.append(f"{path.name}: no items")
    if problems:
        raise ContextDataError(f"{path}: " + "; ".join(problems[:20]))
    return items


def _gold_chunk(item: RaftItem, by_doc: dict[str, list[ContextPassage]]) -> ContextPassage:
    chunks = by_doc.get(item.doc_id)
    if not chunks:
        raise ContextDataError(
            f"{item.source or item.question!r}: document {item.doc_id!r} is not in the folder"
        )
    stating = [c for c in chunks if mentions(c.text, item.answer)]
    if not stating:
        raise ContextDataError(
            f"{item.source or item.question!r}: no chunk of {item.doc_id!r} states the answer {item.answer!r}"
        )
    return stating[0]


def quote_of(passage: ContextPassage, answer: str) -> str:
    """The sentence of ``passage`` that states ``answer`` (the whole passage if none does alone)."""
    for start, end in sentence_spans(passage.text):
        if mentions(passage.text[start:end], answer):
            return passage.text[start:end].strip()
    return passage.text.strip()


def raft_examples(
    items: Sequence[RaftItem], passages: Sequence[ContextPassage], recipe: ContextRecipe
) -> list[ChatExample]:
    """One example per item: gold chunk (for ``recipe.share`` of them) among distractor chunks of
    other documents that do not mention the answer, ``recipe.passages`` passages in all."""
    if recipe.recipe != RAFT:
        raise ContextDataError(f"raft_examples needs the {RAFT!r} recipe, got {recipe.recipe!r}")
    by_doc: dict[str, list[ContextPassage]] = {}
    for passage in passages:
        by_doc.setdefault(passage.document_id, []).append(passage)
    rng = random.Random(recipe.seed)
    with_gold = _chosen(len(items), recipe.share, rng)
    out = []
    for i, item in enumerate(items):
        gold = _gold_chunk(item, by_doc)
        free = [p for p in passages if p.document_id != item.doc_id and not mentions(p.text, item.answer)]
        wanted = recipe.passages - (1 if i in with_gold else 0)
        if len(free) < wanted:
            raise ContextDataError(
                f"{item.source}: only {len(free)} distractors without the answer; {wanted} needed"
            )
        chosen = rng.sample(free, wanted)
        target = item.answer
        if i in with_gold:
            at = rng.randrange(len(chosen) + 1)
            chosen.insert(at, gold)
            if recipe.quote:
                target = f'{item.answer}\nSource [{at + 1}]: "{quote_of(gold, item.answer)}"'
        bare = ChatExample((Message("user", item.question), Message("assistant", target)), item.source)
        out.append(with_passages(bare, chosen, "raft" if i in with_gold else "raft-distractors"))
    return out


def recipe_examples(
    data: Path | str,
    recipe: ContextRecipe,
    documents: Path | str,
    *,
    subset: int | None = None,
    chunk_size: int = _RETRIEVAL_DEFAULTS.chunk_size,
    chunk_overlap: int = _RETRIEVAL_DEFAULTS.chunk_overlap,
) -> list[ChatExample]:
    """The training examples of ``data`` under ``recipe``, passages from the ``documents`` folder
    cut at the serving index's chunk size: chat/pair JSONL for ``context``, question/answer/doc_id
    JSONL for ``raft``. ``subset`` takes the first N of a shuffle by ``recipe.seed`` *before* the
    recipe applies, so that the share it records is the share of what is trained."""
    from hybrid_assistant.adapters.data import load_examples, take_subset

    passages = load_passages(documents, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    if recipe.recipe == RAFT:
        items = load_raft_items(data)
        if subset:
            items = take_subset(items, subset, recipe.seed)
        return raft_examples(items, passages, recipe)
    examples = load_examples(data)
    if subset:
        examples = take_subset(examples, subset, recipe.seed)
    return context_augmented(examples, passages, recipe)
