"""Retrieved passages as the model reads them: the one text layout shared by serving and training.

The server (:func:`hybrid_assistant.server.prompt.build_prompt`) puts the passages it retrieved
into the system message with :func:`with_context`; ``adapters train`` builds its context-aware and
RAFT examples with the same function, so an adapter is trained on exactly the prompt shape it
is served with. Changing the layout here changes both; nothing else may format passages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Written once, before any evaluation was run; not tuned on the demo data (see README).
RAG_INSTRUCTION = (
    "Answer the user's question using the context passages below. "
    "If the passages do not contain the answer, say that you do not know."
)


@dataclass(frozen=True)
class ContextPassage:
    document_id: str
    chunk_id: str
    score: float
    text: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    index: int = 0  # its [n] in the prompt


def passage_line(passage: ContextPassage) -> str:
    return f"[{passage.index}] {passage.text.strip()}"


def context_block(passages: Sequence[ContextPassage]) -> str:
    """The instruction and the numbered passages, as they open (or follow) the system message."""
    return "\n".join([RAG_INSTRUCTION, "", "Context:", *(passage_line(p) for p in passages)])


def with_context(
    messages: Sequence[Mapping[str, str]], passages: Sequence[ContextPassage]
) -> list[dict[str, str]]:
    """The conversation with the passages in its system message (appended to one the caller sent)."""
    rest = [dict(m) for m in messages]
    if not passages:
        return rest
    block = context_block(passages)
    if rest and rest[0]["role"] == "system":
        return [{"role": "system", "content": f"{rest[0]['content']}\n\n{block}"}, *rest[1:]]
    return [{"role": "system", "content": block}, *rest]
