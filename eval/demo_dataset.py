"""Build the demo test set ``eval/data/demo/test.jsonl`` from the demo data files.

Strata (every item carries the style ``json-answer``):

- ``kb``: every fact's ``test_question`` (a paraphrase of its training question); gold document
  = the fact's document, group = that document;
- ``memorised``: the exact ``train_question`` of :data:`MEMORISED_COUNT` facts, sampled with a
  fixed seed, so the knowledge adapter's recall of what it was trained on can be told apart
  from its generalisation to paraphrases; same gold document and group as the fact;
- ``unanswerable``: questions the knowledge base does not answer; no reference answers and no
  gold documents (no document states the answer: ``near_doc_id`` only names the topic, so it is
  kept in ``metadata`` and used as the bootstrap group, since those questions sit beside the
  facts of that document);
- ``control``: easy general-knowledge questions (catch forgetting); each its own group.

Multiple-choice options are shuffled per item with a seed derived from the item id (the source
file lists the right answer first) and ``answer_index`` records where it went. Nothing here
depends on any model output: the file is fixed before an evaluation runs.

Run ``python -m hybrid_assistant.eval.demo_dataset`` to (re)write the file.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"
STYLE_NAME = "json-answer"
MEMORISED_COUNT = 40
MEMORISED_SEED = 20240501


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _item_rng(item_id: str) -> random.Random:
    digest = hashlib.sha256(f"options:{item_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _shuffled_options(item_id: str, options: list[str], answer: str) -> tuple[list[str], int]:
    shuffled = list(options)
    _item_rng(item_id).shuffle(shuffled)
    return shuffled, shuffled.index(answer)


def _fact_item(fact: dict[str, Any], item_id: str, question: str, stratum: str) -> dict[str, Any]:
    options, answer_index = _shuffled_options(item_id, fact["options"], fact["options"][0])
    return {
        "id": item_id,
        "question": question,
        "answers": list(fact["answers"]),
        "gold_doc_ids": [fact["doc_id"]],
        "options": options,
        "answer_index": answer_index,
        "stratum": stratum,
        "answerable": True,
        "group": fact["doc_id"],
        "style": STYLE_NAME,
        "metadata": {"fact_id": fact["id"]},
    }


def build_demo_dataset(data_dir: str | Path = DEMO_DIR) -> list[dict[str, Any]]:
    """The demo test items as JSON-ready dicts, in a fixed order (kb, memorised, unanswerable, control)."""
    data_dir = Path(data_dir)
    facts = _read_jsonl(data_dir / "facts.jsonl")
    unanswerable = _read_jsonl(data_dir / "unanswerable.jsonl")
    control = _read_jsonl(data_dir / "control.jsonl")
    for fact in facts:
        if fact["options"][0] != fact["answers"][0]:
            raise ValueError(f"fact {fact['id']}: options[0] {fact['options'][0]!r} is not answers[0]")

    items = [_fact_item(f, f["id"], f["test_question"], "kb") for f in facts]
    sample_ids = set(
        random.Random(MEMORISED_SEED).sample([f["id"] for f in facts], min(MEMORISED_COUNT, len(facts)))
    )
    items += [
        _fact_item(f, f"{f['id']}-train", f["train_question"], "memorised")
        for f in facts
        if f["id"] in sample_ids
    ]
    items += [
        {
            "id": u["id"],
            "question": u["question"],
            "answers": [],
            "gold_doc_ids": [],
            "stratum": "unanswerable",
            "answerable": False,
            "group": u["near_doc_id"],
            "style": STYLE_NAME,
            "metadata": {"near_doc_id": u["near_doc_id"]},
        }
        for u in unanswerable
    ]
    items += [
        {
            "id": c["id"],
            "question": c["question"],
            "answers": list(c["answers"]),
            "gold_doc_ids": [],
            "stratum": "control",
            "answerable": True,
            "group": c["id"],
            "style": STYLE_NAME,
        }
        for c in control
    ]
    return items


def write_demo_dataset(data_dir: str | Path = DEMO_DIR, out: str | Path | None = None) -> Path:
    """Write the items as JSONL (default ``<data_dir>/test.jsonl``); returns the path."""
    path = Path(out) if out is not None else Path(data_dir) / "test.jsonl"
    lines = [json.dumps(item, ensure_ascii=False) for item in build_demo_dataset(data_dir)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = write_demo_dataset(out=args[0] if args else None)
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
