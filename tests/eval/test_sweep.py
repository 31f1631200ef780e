"""The data-size sweep: the same optimiser steps at every N, its plan, its inputs, its exemplar draws."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_assistant.adapters.peft_format import METADATA_FILE
from hybrid_assistant.adapters.train_config import BaseModel, TrainConfig
from hybrid_assistant.eval.dataset import Exemplar, load_style_spec
from hybrid_assistant.eval.demo_dataset import DEMO_DIR
from hybrid_assistant.eval.sweep import (
    FEWSHOT,
    FIXED_EPOCHS,
    FIXED_STEPS,
    SweepConfig,
    SweepInputError,
    SweepInputs,
    exemplar_pool,
    load_inputs,
    plan_adapters,
    run_sweep,
    step_budget,
    to_points,
    train_sweep_adapters,
)
from tests.adapters.conftest import fox_examples

RECIPE = TrainConfig(rank=4, alpha=16, epochs=1, learning_rate=1e-2, batch_size=2, max_length=64)


def test_the_sweep_holds_steps_constant_across_n(tiny_model_dir: Path, tmp_path: Path) -> None:
    examples = fox_examples(8)
    inputs = SweepInputs(
        pool=examples[:6], validation=examples[6:], spec=load_style_spec(DEMO_DIR / "style_spec.json"),
        items=[], exemplars=[], fewshot_arms=[],
    )  # fmt: skip
    plans = plan_adapters((1, 4), (0,), RECIPE, 3, fixed_epochs=True)
    base = BaseModel(tiny_model_dir, tiny_model_dir.name)
    results = train_sweep_adapters(plans, inputs, base, tmp_path / "adapters", notify=lambda _: None)

    def metadata(series: str) -> dict[int, dict[str, object]]:
        return {
            run.size: json.loads((tmp_path / "adapters" / run.name / METADATA_FILE).read_text())
            for run in plans[series]
        }

    fixed = metadata(FIXED_STEPS)
    assert {n: m["steps"] for n, m in fixed.items()} == {1: 3, 4: 3}  # the same work at every N
    assert {n: m["train_examples"] for n, m in fixed.items()} == {1: 1, 4: 4}
    assert {n: m["epochs_trained"] for n, m in fixed.items()} == {1: 3, 4: 2}  # 2 steps an epoch at N=4
    assert {n: m["val_examples"] for n, m in fixed.items()} == {1: 2, 4: 2}  # one validation set for all
    recipe = metadata(FIXED_EPOCHS)
    assert {n: m["steps"] for n, m in recipe.items()} == {1: 1, 4: 2}  # the recipe: fewer steps at small N
    assert len(results) == 4


def test_the_default_budget_is_the_recipes_steps_at_the_largest_n() -> None:
    assert step_budget((1, 10, 50, 100), TrainConfig()) == 39  # ceil(100 / 8) x 3 epochs
    assert step_budget((1, 4), RECIPE) == 2


def test_a_recipe_run_equal_to_a_fixed_steps_run_is_trained_once() -> None:
    plans = plan_adapters((1, 100), (0, 1), TrainConfig(), 39, fixed_epochs=True)
    steps_names = [r.name for r in plans[FIXED_STEPS]]
    epochs_names = [r.name for r in plans[FIXED_EPOCHS]]
    assert steps_names == ["style-n1-s0-39steps", "style-n1-s1-39steps", "style-n100-s0-39steps",
                           "style-n100-s1-39steps"]  # fmt: skip
    assert epochs_names == ["style-n1-s0-3steps", "style-n1-s1-3steps", *steps_names[2:]]
    assert all(r.config.max_steps == 39 and r.config.seed == r.seed for r in plans[FIXED_STEPS])
    assert plans[FIXED_EPOCHS][0].config.max_steps == 0
    assert FIXED_EPOCHS not in plan_adapters((1,), (0,), TrainConfig(), 39, fixed_epochs=False)


def test_exemplar_draws_seed_0_is_the_file_order() -> None:
    exemplars = [Exemplar(f"q{i}", f"a{i}") for i in range(10)]
    assert exemplar_pool(exemplars, 0) == exemplars
    assert exemplar_pool(exemplars, 1) == exemplar_pool(exemplars, 1) != exemplars
    assert sorted(exemplar_pool(exemplars, 2), key=lambda e: int(e.output[1:])) == exemplars


def test_points_group_seeds_by_size() -> None:
    points = to_points([(10, 1, 0.5), (0, 0, 0.0), (10, 0, 1.0)])
    assert [(p.size, p.seeds, p.scores) for p in points] == [(0, (0,), (0.0,)), (10, (0, 1), (1.0, 0.5))]
    assert points[1].mean == 0.75 and points[1].sd == pytest.approx(0.3536, abs=1e-4)


def test_bad_inputs_are_all_reported_before_training(tmp_path: Path) -> None:
    data = tmp_path / "fox.jsonl"
    data.write_text("".join(e.to_json() + "\n" for e in fox_examples(4)))
    questions = tmp_path / "questions.jsonl"
    item = {
        "id": "leak",
        "question": fox_examples(1)[0].messages[0].content,
        "answers": ["x"],
        "stratum": "kb",
    }
    questions.write_text(json.dumps(item) + "\n")
    exemplars = tmp_path / "exemplars.jsonl"
    exemplars.write_text(json.dumps({"question": "q?", "output": "{}"}) + "\n")
    config = SweepConfig(
        sizes=(1, 5), data=data, questions=questions, exemplars=exemplars, ks=(0, 2), steps=0
    )
    with pytest.raises(SweepInputError) as caught:
        load_inputs(config, RECIPE)
    message = str(caught.value)
    assert "questions ['leak'] are in the training data" in message
    assert "sizes [5] must be from 1 to 3 (4 examples, 1 held out for validation)" in message
    assert "steps must be >= 1, got 0" in message
    assert "arm 'fewshot@2' needs 2 style exemplars with a question, got 1" in message


def test_a_whole_sweep_against_the_real_server(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train, serve from a child server, ask adapters, base and few-shot arms; write JSON and plots."""
    monkeypatch.setenv("HA_MODEL_PATH", str(tiny_model_dir))
    data = tmp_path / "fox.jsonl"
    data.write_text("".join(e.to_json() + "\n" for e in fox_examples(5)))
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "".join(
            json.dumps(
                {"id": f"q{i}", "question": f"What is {i} plus {i}?", "answers": ["x"], "stratum": "kb"}
            )
            + "\n"
            for i in range(2)
        )
    )
    exemplars = tmp_path / "exemplars.jsonl"
    exemplars.write_text(
        "".join(
            json.dumps({"question": f"Name colour {i}.", "output": '{"answer": "red", "confidence": 0.9}'})
            + "\n"
            for i in range(3)
        )
    )
    config = SweepConfig(
        sizes=(1, 2), seeds=(0, 1), data=data, questions=questions, exemplars=exemplars, ks=(0, 1, 2),
        data_dir=tmp_path / "data", out=tmp_path / "sweep", recipe=RECIPE,
    )  # fmt: skip
    lines: list[str] = []
    summary = run_sweep(config, BaseModel(tiny_model_dir, tiny_model_dir.name), notify=lines.append)

    report = json.loads(summary.json_path.read_text())
    assert report["step_budget"] == 1 and "largest N (2 examples" in report["step_budget_source"]
    assert set(report["series"]) == {FIXED_STEPS, FIXED_EPOCHS, FEWSHOT}
    sizes = {name: [p["size"] for p in s["points"]] for name, s in report["series"].items()}
    assert sizes == {FIXED_STEPS: [0, 1, 2], FIXED_EPOCHS: [0, 1, 2], FEWSHOT: [0, 1, 2]}
    assert all(p["seeds"] == [0, 1] for s in report["series"].values() for p in s["points"][1:])
    assert all(0.0 <= p["mean"] <= 1.0 for s in report["series"].values() for p in s["points"])
    assert len(report["trained"]) == 4 and {t["steps"] for t in report["trained"]} == {1}  # shared runs
    assert len(lines) == 4 and report["validation_examples"] == 1
    for path in (summary.plot_path, summary.curves_path):
        assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
