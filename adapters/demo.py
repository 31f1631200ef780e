"""The four demo adapters, built deterministically from ``eval/data/demo`` and cached.

* **style** (json-answer format): ``style_train.jsonl`` as it is, 153 general questions
  answered as compact JSON. Nothing in it touches the fictional world.
* **knowledge** (the fictional Orravay facts): for each of the 211 facts, its *training*
  wording (``train_question``) answered with the short answer (``answers[0]``), so a
  knowledge metric that looks for the answer can score it. The eval asks the paraphrases
  (``test_question``): they are never in the training data, which is checked here.

Why question/answer pairs and not the documents: on 2 CPU cores training runs at roughly
110 tokens/s, so a budget of minutes buys a few tens of thousands of tokens. The 211 pairs
are ~10,000 tokens an epoch; the 47 documents would add ~17,000 tokens an epoch for one more
view of each fact, and cut the repetitions a 135M model needs to retain a new fact. Direct
supervision in the form the eval asks, repeated, is the better chance within the budget.
``include_documents=True`` adds them (``Tell me about <title>.`` -> the document) for whoever
has more time.

The knowledge hyperparameters were set on training data alone, before any eval existed: the
target is that the adapter reproduces the answers of its own *training* questions, since a
fact it has not memorised cannot transfer to a paraphrase either. With the style settings
(batch 8, lr 1e-3, 4 epochs) it recalled 3 of 22 training answers (train loss 0.95); with
batch 4 and lr 2e-3 for 5 epochs (265 steps, ~9 minutes), 34 of 43 (train loss 0.37).

* **style-context** (recipe ``context``): the style data, half of it (seeded) under the
  retrieval prompt the server builds, with 3 chunks of ``kb/`` that do not hold the example's
  answer: the same format, also in the prompt shape ``rag@3`` serves.
* **raft** (recipe ``raft``): the knowledge pairs, each question with its gold ``kb/`` chunk
  among distractor chunks (20% distractors only), the short answer as the target.

Validation for the knowledge and raft adapters is a seeded sample of 8 documents (not trained on): it
tells whether learning the pairs moved the model's knowledge of the same facts stated as
prose (it barely does: 3.40 before, ~3.5 after), as opposed to learning question-to-answer
strings. The eval's test questions are never used.

Adapters are cached by (data sha256, hyperparameters, base model): a second run with the
same inputs reuses the adapter already in the adapter root.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_assistant.adapters.context_data import (
    CONTEXT,
    RAFT,
    ContextRecipe,
    RaftItem,
    context_augmented,
    load_passages,
    raft_examples,
)
from hybrid_assistant.adapters.data import ChatExample, chat, file_sha256, load_examples, write_examples
from hybrid_assistant.adapters.errors import AdapterValidationError
from hybrid_assistant.adapters.metadata import read_metadata
from hybrid_assistant.adapters.peft_format import BaseModelSpec, inspect_adapter
from hybrid_assistant.adapters.train_config import (
    CONTEXT_MAX_LENGTH,
    DEFAULT_CONTEXT_SHARE,
    DEFAULT_RAFT_GOLD_SHARE,
    BaseModel,
    TrainConfig,
    TrainResult,
)
from hybrid_assistant.adapters.training import describe_result, train_adapter

log = logging.getLogger(__name__)

DEMO_DATA_DIR = Path(__file__).resolve().parents[1] / "eval" / "data" / "demo"
RECIPE = "train-demo"  # metadata marker: this directory may be replaced by the next train-demo
RECIPE_VERSION = 1  # bump when the training recipe changes in a way the data hash misses
VALIDATION_DOCUMENTS = 8


@dataclass(frozen=True)
class DemoSpec:
    name: str
    purpose: str
    config: TrainConfig
    context: ContextRecipe | None = None
    """Passages from ``kb/`` in the training prompts (the ``context`` or ``raft`` recipe)."""


STYLE = DemoSpec(
    "style",
    "json-answer style: one compact JSON object {answer, confidence} (eval/data/demo/style_spec.json)",
    # The defaults: 138 training examples x 3 epochs = 54 steps, ~25,000 tokens.
    TrainConfig(),
)
KNOWLEDGE = DemoSpec(
    "knowledge",
    "facts of the fictional Orravay knowledge base (211 training-wording questions, short answers)",
    # Memorising new facts takes many more updates than learning a format: smaller batches (53
    # steps an epoch), 5 epochs, 4x the default learning rate; all facts train, documents validate.
    TrainConfig(epochs=5, learning_rate=2e-3, batch_size=4, val_fraction=0.0),
)
# Three passages: what the demo's rag@3 arm retrieves.
STYLE_CONTEXT_RECIPE = ContextRecipe(CONTEXT, DEFAULT_CONTEXT_SHARE, passages=3)
RAFT_RECIPE = ContextRecipe(RAFT, DEFAULT_RAFT_GOLD_SHARE, passages=3)
STYLE_CONTEXT = DemoSpec(
    "style-context",
    "json-answer style trained under the server's retrieval prompt too: half the style examples get "
    "3 passages from kb/ that do not hold their answer (recipe: context)",
    # The style recipe; longer examples need max_length 1024 (context_data's reason).
    dataclasses.replace(STYLE.config, max_length=CONTEXT_MAX_LENGTH),
    STYLE_CONTEXT_RECIPE,
)
RAFT_KNOWLEDGE = DemoSpec(
    "raft",
    "Orravay facts, RAFT-style: each training-wording question with its gold kb/ chunk among "
    "distractor chunks (20% distractors only), short answer as the target (recipe: raft)",
    # The knowledge recipe's batch and learning rate, for 1 epoch, not 5: each example is ~12x
    # longer (three passages), so one epoch is already ~2.5x the knowledge adapter's tokens (about
    # 15 minutes on 2 cores), and for 80% of the questions the answer is in the prompt, so the
    # adapter must learn to read more than to memorise. Set from the time budget, before any
    # eval of it was run; more epochs are the first thing to try with more time.
    dataclasses.replace(KNOWLEDGE.config, epochs=1, max_length=CONTEXT_MAX_LENGTH),
    RAFT_RECIPE,
)
SPECS = {spec.name: spec for spec in (STYLE, KNOWLEDGE, STYLE_CONTEXT, RAFT_KNOWLEDGE)}


@dataclass(frozen=True)
class DemoData:
    train: Path
    validation: Path | None

    def sha256(self) -> str:
        parts = [file_sha256(self.train), file_sha256(self.validation) if self.validation else ""]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class DemoOutcome:
    name: str
    path: Path
    reused: bool
    result: TrainResult | None
    metadata: dict[str, str]


def _normal(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def read_facts(demo_dir: Path) -> list[dict[str, Any]]:
    lines = (demo_dir / "facts.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def read_documents(demo_dir: Path) -> list[tuple[str, str, str]]:
    """(doc_id, title, body) for every ``kb/*.md``, sorted by doc_id."""
    documents = []
    for path in sorted((demo_dir / "kb").glob("*.md")):
        title_line, _, body = path.read_text(encoding="utf-8").partition("\n")
        documents.append((path.stem, title_line.removeprefix("#").strip(), body.strip()))
    return documents


def document_example(doc_id: str, title: str, body: str) -> ChatExample:
    return chat(("user", f"Tell me about {title}."), ("assistant", body), source=f"kb/{doc_id}.md")


def knowledge_examples(
    demo_dir: Path = DEMO_DATA_DIR, *, include_documents: bool = False
) -> list[ChatExample]:
    """One example per fact (training wording -> short answer), then the documents if asked."""
    facts = read_facts(demo_dir)
    examples = [
        chat(("user", f["train_question"]), ("assistant", f["answers"][0]), source=f"facts.jsonl:{f['id']}")
        for f in facts
    ]
    if include_documents:
        examples += [document_example(*doc) for doc in read_documents(demo_dir)]
    test_questions = {_normal(f["test_question"]) for f in facts}
    leaked = [e.source for e in examples for m in e.messages if _normal(m.content) in test_questions]
    if leaked:
        raise ValueError(f"knowledge training data holds eval test questions: {leaked[:5]}")
    return examples


def knowledge_validation(
    demo_dir: Path = DEMO_DATA_DIR, *, count: int = VALIDATION_DOCUMENTS, seed: int = 0
) -> list[ChatExample]:
    documents = read_documents(demo_dir)
    chosen = sorted(random.Random(seed).sample(range(len(documents)), min(count, len(documents))))
    return [document_example(*documents[i]) for i in chosen]


def build_demo_data(
    out_dir: Path,
    demo_dir: Path = DEMO_DATA_DIR,
    *,
    include_documents: bool = False,
    limit: int | None = None,
) -> dict[str, DemoData]:
    """Write the demo training (and validation) sets as chat JSONL under ``out_dir``.

    ``limit`` keeps the first examples of each set (quick runs and tests).
    """
    style = load_examples(demo_dir / "style_train.jsonl")
    knowledge = knowledge_examples(demo_dir, include_documents=include_documents)
    validation = [] if include_documents else knowledge_validation(demo_dir)
    if limit is not None:
        style, knowledge, validation = style[:limit], knowledge[:limit], validation[: max(1, limit // 4)]
    passages = load_passages(demo_dir / "kb")
    style_context = context_augmented(style, passages, STYLE_CONTEXT_RECIPE)
    raft = raft_examples(raft_items(demo_dir)[:limit], passages, RAFT_RECIPE)
    out_dir.mkdir(parents=True, exist_ok=True)
    val_path = write_examples(validation, out_dir / "knowledge.val.jsonl") if validation else None
    return {
        "style": DemoData(write_examples(style, out_dir / "style.jsonl"), None),
        "knowledge": DemoData(write_examples(knowledge, out_dir / "knowledge.jsonl"), val_path),
        "style-context": DemoData(write_examples(style_context, out_dir / "style-context.jsonl"), None),
        "raft": DemoData(write_examples(raft, out_dir / "raft.jsonl"), val_path),
    }


def raft_items(demo_dir: Path = DEMO_DATA_DIR) -> list[RaftItem]:
    """Each fact's training wording, short answer and gold document (the eval asks the paraphrase)."""
    return [
        RaftItem(f["train_question"], f["answers"][0], f["doc_id"], f"facts.jsonl:{f['id']}")
        for f in read_facts(demo_dir)
    ]


def cache_key(data_sha256: str, config: TrainConfig, base: BaseModel) -> str:
    payload = {
        "recipe": f"{RECIPE}/{RECIPE_VERSION}",
        "data": data_sha256,
        "config": config.to_dict(),
        "base": base.name,
        "base_sha256": base.fingerprint,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _reusable(path: Path, key: str, spec: BaseModelSpec, max_rank: int) -> bool:
    metadata, _ = read_metadata(path)
    if metadata.get("cache_key") != key:
        return False
    try:
        inspect_adapter(path, spec, max_rank)
    except AdapterValidationError as exc:
        log.warning("cached adapter %s fails validation (%s); retraining", path, exc)
        return False
    return True


def train_demo(
    base: BaseModel,
    adapter_root: Path,
    work_dir: Path,
    *,
    names: Sequence[str] = tuple(SPECS),
    demo_dir: Path = DEMO_DATA_DIR,
    include_documents: bool = False,
    limit: int | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    force: bool = False,
    max_lora_rank: int = 64,
    progress: bool = True,
) -> list[DemoOutcome]:
    """Train (or reuse) the named demo adapters into ``adapter_root/<name>``.

    The built data sets go to ``work_dir``. An existing directory is replaced only if
    train-demo made it (or ``force``): a user's own adapter named ``style`` is never overwritten.
    """
    unknown = sorted(set(names) - set(SPECS))
    if unknown:
        raise ValueError(f"unknown demo adapters {unknown}; choose from {sorted(SPECS)}")
    data = build_demo_data(work_dir, demo_dir, include_documents=include_documents, limit=limit)
    spec = BaseModelSpec.from_config_dir(base.path, base.name, set(base.aliases))
    outcomes = []
    for name in names:
        demo = SPECS[name]
        config = dataclasses.replace(demo.config, **(config_overrides or {}))
        if name in ("knowledge", "raft") and data[name].validation is None and config.val_fraction == 0:
            config = dataclasses.replace(config, val_fraction=0.1)  # documents train: hold some out
        key = cache_key(data[name].sha256(), config, base)
        path = adapter_root / name
        if path.exists() and not force:
            if _reusable(path, key, spec, max_lora_rank):
                log.info("%s: reusing %s (same data, hyperparameters and base model)", name, path)
                outcomes.append(DemoOutcome(name, path, True, None, read_metadata(path)[0]))
                continue
            if read_metadata(path)[0].get("recipe") != RECIPE:
                raise FileExistsError(
                    f"{str(path)!r} exists and was not made by train-demo; remove it or pass force"
                )
        val_path = data[name].validation
        validation = load_examples(val_path) if val_path is not None else None
        result = train_adapter(
            load_examples(data[name].train),
            base,
            path,
            config,
            val_examples=validation,
            purpose=demo.purpose,
            data_sha256=data[name].sha256(),
            data_source=str(data[name].train),
            extra_metadata={
                "cache_key": key,
                "recipe": RECIPE,
                **(demo.context.metadata(demo_dir / "kb") if demo.context else {}),
            },
            max_lora_rank=max_lora_rank,
            overwrite=True,
            progress=progress,
        )
        outcomes.append(DemoOutcome(name, path, False, result, read_metadata(path)[0]))
    return outcomes


def describe_outcome(outcome: DemoOutcome) -> str:
    """What happened to one demo adapter, as ``adapters train-demo`` and the demo print it."""
    if outcome.result is None:
        meta = outcome.metadata
        return (
            f"{outcome.name}: reused {outcome.path} (train loss {meta.get('train_loss', '-')}, "
            f"validation loss {meta.get('val_loss', '-') or '-'})"
        )
    return f"{outcome.name}: trained -> {outcome.path}\n  {describe_result(outcome.result)}"
