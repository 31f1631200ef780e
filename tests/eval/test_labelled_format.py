"""The second demo format (labelled-lines): its files are what the derivation writes, and valid."""

from __future__ import annotations

import importlib.util
import json

from hybrid_assistant.eval.dataset import load_style_exemplars, load_style_spec
from hybrid_assistant.eval.demo_dataset import DEMO_DIR
from hybrid_assistant.eval.metrics.style import format_valid


def test_committed_files_equal_the_derivation() -> None:
    spec = importlib.util.spec_from_file_location("derive_labelled", DEMO_DIR / "derive_labelled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, content in module.derived().items():
        assert (DEMO_DIR / name).read_text(encoding="utf-8") == content, (
            f"rerun {DEMO_DIR / 'derive_labelled.py'}"
        )
    assert module.confidence_word(0.9) == "high" and module.confidence_word(0.7) == "medium"
    assert module.confidence_word(0.69) == "low"


def test_every_training_answer_and_exemplar_is_valid_and_not_json() -> None:
    spec = load_style_spec(DEMO_DIR / "labelled_spec.json")
    rows = [json.loads(line) for line in (DEMO_DIR / "labelled_train.jsonl").read_text().splitlines()]
    outputs = [row["messages"][-1]["content"] for row in rows]
    outputs += [e.output for e in load_style_exemplars(DEMO_DIR / "labelled_exemplars.jsonl")]
    assert len(outputs) == 173
    assert all(format_valid(o, spec) == 1.0 for o in outputs)
    assert not spec.is_json and not any(o.lstrip().startswith("{") for o in outputs)
    assert format_valid('{"answer": "Canberra", "confidence": 0.9}', spec) == 0.0
