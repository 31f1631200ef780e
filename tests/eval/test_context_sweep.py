"""The context-share sweep: its inputs, one validation set for every share, the share chosen on
validation loss, and a whole run against the real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_assistant.adapters.peft_format import METADATA_FILE
from hybrid_assistant.adapters.train_config import BaseModel, TrainConfig
from hybrid_assistant.eval.context_sweep import (
    ContextSweepConfig,
    ShareResult,
    adapter_name,
    load_context_inputs,
    run_context_sweep,
    select_share,
)
from hybrid_assistant.eval.sweep import SweepInputError, SweepPoint
from tests.adapters.conftest import fox_examples

RECIPE = TrainConfig(rank=4, alpha=16, epochs=1, learning_rate=1e-2, batch_size=2, max_length=64)


def _documents(folder: Path, count: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"doc{i}.txt").write_text(f"Lighthouse {i} stands on the northern cape. Its lamp is green.")
    return folder


def _data(tmp_path: Path, count: int = 6) -> Path:
    data = tmp_path / "fox.jsonl"
    data.write_text("".join(e.to_json() + "\n" for e in fox_examples(count)))
    return data


def _questions(tmp_path: Path, texts: list[str]) -> Path:
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": text, "answers": ["x"], "stratum": "kb"}) + "\n"
            for i, text in enumerate(texts)
        )
    )
    return questions


def test_bad_inputs_are_all_reported_before_training(tmp_path: Path) -> None:
    config = ContextSweepConfig(
        shares=(0.0, 1.5, -0.1), data=_data(tmp_path),
        questions=_questions(tmp_path, [fox_examples(1)[0].messages[0].content]),
        documents=tmp_path / "missing", rag_k=0,
    )  # fmt: skip
    with pytest.raises(SweepInputError) as caught:
        load_context_inputs(config, RECIPE)
    message = str(caught.value)
    assert "shares [1.5, -0.1] must be in [0, 1]" in message
    assert "questions ['q0'] are in the training data" in message
    assert f"documents folder {str(tmp_path / 'missing')!r} does not exist" in message
    assert "rag_k must be >= 1, got 0" in message


def test_no_shares_no_seeds_and_clashing_names_are_refused(tmp_path: Path) -> None:
    base = {"data": _data(tmp_path), "questions": _questions(tmp_path, ["What is 1 plus 1?"]),
            "documents": _documents(tmp_path / "kb")}  # fmt: skip
    with pytest.raises(SweepInputError, match="no shares to sweep"):
        load_context_inputs(ContextSweepConfig(shares=(), **base), RECIPE)
    with pytest.raises(SweepInputError, match="no seeds"):
        load_context_inputs(ContextSweepConfig(seeds=(), **base), RECIPE)
    with pytest.raises(SweepInputError, match=r"shares \[0.25, 0.251\] give the same adapter names"):
        load_context_inputs(ContextSweepConfig(shares=(0.25, 0.251), **base), RECIPE)
    with pytest.raises(SweepInputError, match="3 needed"):
        load_context_inputs(
            ContextSweepConfig(**{**base, "documents": _documents(tmp_path / "two", 2)}), RECIPE
        )
    with pytest.raises(SweepInputError, match="val_fraction must be > 0"):
        load_context_inputs(ContextSweepConfig(**base), TrainConfig(val_fraction=0.0))


def test_every_share_trains_on_the_same_pool_and_validates_on_the_same_set(tmp_path: Path) -> None:
    config = ContextSweepConfig(
        shares=(0.0, 0.5, 1.0), seeds=(0, 1), data=_data(tmp_path, 10),
        questions=_questions(tmp_path, ["What is 1 plus 1?"]), documents=_documents(tmp_path / "kb"),
    )  # fmt: skip
    inputs = load_context_inputs(config, TrainConfig(val_fraction=0.2))
    assert [r.plan.name for r in inputs.runs] == [
        "style-ctx0-s0", "style-ctx0-s1", "style-ctx50-s0", "style-ctx50-s1",
        "style-ctx100-s0", "style-ctx100-s1",
    ]  # fmt: skip
    assert inputs.held_out == 2 and len(inputs.validation) == 4
    bare, under = inputs.validation[:2], inputs.validation[2:]
    assert all(e.messages[0].role == "user" for e in bare)
    assert all(e.messages[0].role == "system" and "Lighthouse" in e.messages[0].content for e in under)
    assert [e.messages[-2:] for e in under] == [e.messages for e in bare]  # the same examples
    for run in inputs.runs:
        assert len(run.examples) == 8 and run.plan.config.seed == run.plan.seed
        with_context = sum(e.messages[0].role == "system" for e in run.examples)
        assert with_context == round(8 * run.share)
        assert run.recipe.metadata(config.documents)["context_share"] == f"{run.share:g}"
    assert adapter_name(0.25, 3) == "style-ctx25-s3"


def _share(share: float, losses: tuple[float | None, ...]) -> ShareResult:
    point = SweepPoint(round(share * 100), (0,), (0.5,))
    return ShareResult(share, point, point, losses, (1.0,) * len(losses))


def test_the_share_is_selected_on_validation_loss_alone() -> None:
    results = [_share(0.0, (1.2, 1.0)), _share(0.25, (0.9, 0.9)), _share(0.5, (0.8, 1.0))]
    assert select_share(results) == 0.25  # mean 0.9 against 1.1 and 0.9: the smaller share on a tie
    assert select_share([_share(0.0, (None,))]) is None
    assert _share(0.5, (0.8, None)).val_loss is None


def test_a_whole_context_sweep_against_the_real_server(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train per share, serve from a child server with the documents ingested, ask each adapter
    without and with rag@K, base and rag@K; write JSON and plots."""
    monkeypatch.setenv("HA_MODEL_PATH", str(tiny_model_dir))
    monkeypatch.setenv("HA_EMBEDDER", "hashing")  # no embedding model download
    config = ContextSweepConfig(
        shares=(0.0, 0.5), seeds=(0,), data=_data(tmp_path, 6),
        questions=_questions(tmp_path, [f"What is {i} plus {i}?" for i in range(2)]),
        documents=_documents(tmp_path / "kb"), context_passages=2, rag_k=2,
        data_dir=tmp_path / "data", out=tmp_path / "sweep",
        recipe=TrainConfig(rank=4, alpha=16, max_steps=1, learning_rate=1e-2, batch_size=2, max_length=128),
    )  # fmt: skip
    lines: list[str] = []
    summary = run_context_sweep(config, BaseModel(tiny_model_dir, tiny_model_dir.name), notify=lines.append)

    report = json.loads(summary.json_path.read_text())
    assert [s["share"] for s in report["shares"]] == [0.0, 0.5]
    for s in report["shares"]:
        for field in ("without_rag", "with_rag"):
            assert s[field]["seeds"] == [0] and 0.0 <= s[field]["mean"] <= 1.0
        expected = s["with_rag"]["mean"] / s["without_rag"]["mean"] if s["without_rag"]["mean"] else None
        assert s["retention"] == expected
        assert isinstance(s["val_loss"], float) and s["train_s"] > 0
    losses = {s["share"]: s["val_loss"] for s in report["shares"]}
    assert report["selected_share"] == min(losses, key=lambda k: (losses[k], k))
    assert 0.0 <= report["base"] <= 1.0 and 0.0 <= report["rag"] <= 1.0 and report["rag_k"] == 2
    assert report["questions"] == 2 and report["validation_examples"] == 2 * report["held_out"] == 2
    assert report["ingested"]["documents"] == 4 and report["errors"] == {}
    assert report["sweep"]["shares"] == [0.0, 0.5] and report["config"]["max_steps"] == 1
    assert [t["name"] for t in report["trained"]] == ["style-ctx0-s0", "style-ctx50-s0"]
    assert {t["steps"] for t in report["trained"]} == {1}
    assert len([line for line in lines if line.startswith("trained ")]) == 2
    for name, share in (("style-ctx0-s0", "0"), ("style-ctx50-s0", "0.5")):
        metadata = json.loads((config.out / "adapters" / name / METADATA_FILE).read_text())
        assert metadata["context_share"] == share and metadata["context_recipe"] == "context"
    for path in (summary.plot_path, summary.curves_path):
        assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    # Knowledge from the eval's own analysis of the same answers, and the head to head against share 0.
    plain, half = report["shares"]
    for s in (plain, half):
        assert 0.0 <= s["knowledge_without_rag"] <= 1.0 and 0.0 <= s["knowledge_with_rag"] <= 1.0
    assert plain["versus_plain_per_seed"] == [{}]
    (delta,) = half["versus_plain_per_seed"]
    assert delta["contains"]["baseline"] == "adapter:style-ctx0-s0+rag@2"
    difference = half["knowledge_with_rag"] - plain["knowledge_with_rag"]
    assert delta["contains"]["estimate"] == pytest.approx(difference)
    low, high = delta["contains"]["ci"]
    assert low <= delta["contains"]["estimate"] <= high
    assert 0.0 <= report["knowledge_rag"] <= 1.0
    analysis = json.loads((config.out / "analysis.json").read_text())
    assert "adapter:style-ctx50-s0+rag@2" in analysis["meta"]["arms"]
