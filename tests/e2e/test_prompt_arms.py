"""Prompting arms through a real server on the tiny model: what ``prompt`` and ``fewshot@K`` send is
what the server tokenises, the answers are the server's answers to those messages, the cache keys
on them, and an arm that lacks its instruction or exemplars fails before any request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.eval.arms import parse_arm
from hybrid_assistant.eval.dataset import load_dataset, load_style_exemplars, load_style_spec
from hybrid_assistant.eval.prompting import arm_messages
from hybrid_assistant.eval.workflow import EvalConfig, EvalInputError, run_eval
from hybrid_assistant.server.prompt import render_chat
from tests.e2e.test_eval_run import write_dataset
from tests.helpers import ServerThread

DESCRIPTION = 'Reply with one JSON object and nothing else: {"answer": "<the answer>"}.'
EXEMPLARS = [
    {"question": "What colour is the Hallow bridge?", "output": '{"answer": "red"}'},
    # q2's own question: a few-shot arm must never show it to q2.
    {"question": "What does the Osterby mill grind?", "output": '{"answer": "barley"}'},
    {"output": '{"answer": "no question, so never a turn"}'},
    {"question": "How old is the Tarn lighthouse?", "output": '{"answer": "90 years"}'},
]
MAX_TOKENS = 4


def write_inputs(tmp: Path, description: str = DESCRIPTION) -> tuple[Path, Path, Path, Path]:
    dataset, spec, docs = write_dataset(tmp)
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "description": description}))
    exemplars = tmp / "exemplars.jsonl"
    exemplars.write_text("".join(json.dumps(e) + "\n" for e in EXEMPLARS))
    return dataset, spec, docs, exemplars


def test_prompt_and_fewshot_arms_end_to_end(
    start_server: Callable[..., ServerThread], tiny_model_dir: Path, tmp_path: Path
) -> None:
    server = start_server()
    dataset, spec_path, docs, exemplars_path = write_inputs(tmp_path)
    out = tmp_path / "report"
    config = EvalConfig(
        dataset=dataset,
        arms="base,prompt,fewshot@2,prompt+fewshot@2+oracle",
        out=out,
        style_spec=spec_path,
        exemplars=exemplars_path,
        documents=[docs],
        max_tokens=MAX_TOKENS,
        resamples=50,
        sequential_sample=4,  # one answer per arm: the probe sends the prompting arms' messages too
        target=server.target,
        progress=False,
    )
    summary = run_eval(config)
    assert (summary.stats.requests, summary.stats.failed, summary.stats.cached) == (20, 0, 0)
    assert summary.sequential_s_per_answer is not None

    items = {it.id: it for it in load_dataset(dataset)}
    spec, exemplars = load_style_spec(spec_path), load_style_exemplars(exemplars_path)
    records = {(r.item_id, r.arm): r for r in summary.records}
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with AssistantClient(server.target) as client:
        for item in items.values():
            base = records[(item.id, "base")]
            prompt = records[(item.id, "prompt")]
            fewshot = records[(item.id, "fewshot@2")]
            assert prompt.prompt_tokens > base.prompt_tokens
            assert fewshot.prompt_tokens > base.prompt_tokens
            for arm_name in ("base", "prompt", "fewshot@2"):
                messages = arm_messages(item, parse_arm(arm_name), spec, exemplars)
                # The server tokenised exactly these messages...
                assert records[(item.id, arm_name)].prompt_tokens == len(render_chat(tokenizer, messages))
                # ...and answers them as it answered the eval (greedy, same decoding).
                again = client.generate(messages, max_tokens=MAX_TOKENS, temperature=0.0, top_p=1.0, seed=0)
                assert again.text == records[(item.id, arm_name)].text
    # q2 is never shown its own exemplar: it gets the first and the fourth, the others the first two.
    q2 = arm_messages(items["q2"], parse_arm("fewshot@2"), spec, exemplars)
    assert [m["content"] for m in q2 if m["role"] == "user"][:2] == [
        EXEMPLARS[0]["question"],
        EXEMPLARS[3]["question"],
    ]
    # Instruction, exemplars and the oracle passages combine: the server still cites the gold document.
    combined = records[("q3", "prompt+fewshot@2+oracle")]
    assert combined.contexts == ("tower",)
    assert combined.prompt_tokens > records[("q3", "fewshot@2")].prompt_tokens
    lever_pairs = {(c.arm, c.baseline) for c in summary.analysis.lever_comparisons}
    assert lever_pairs == {("fewshot@2", "prompt")}

    # The answer cache keys on the messages sent: a new instruction re-asks only the arms that carry it.
    spec_path.write_text(
        json.dumps({**json.loads(spec_path.read_text()), "description": "Answer in one word."})
    )
    rerun = run_eval(EvalConfig(**{**config.__dict__, "sequential_sample": 0}))
    assert (rerun.stats.requests, rerun.stats.cached) == (20, 10)
    assert {r.arm for r in rerun.records if records[(r.item_id, r.arm)].prompt_tokens != r.prompt_tokens} == {
        "prompt",
        "prompt+fewshot@2+oracle",
    }


@pytest.mark.parametrize(
    ("arms", "description", "with_exemplars", "message"),
    [
        ("base,prompt", "", True, r"arm 'prompt' needs a style spec with a non-empty description"),
        (
            "base,fewshot@4",
            DESCRIPTION,
            True,
            r"arm 'fewshot@4' needs 4 style exemplars with a question, got 3",
        ),
        # q2's own exemplar cannot be one of its three.
        ("fewshot@3+rag", DESCRIPTION, True, r"arm 'fewshot@3\+rag' .* items \['q2'\]"),
        ("fewshot@1", DESCRIPTION, False, r"arm 'fewshot@1' needs 1 style exemplars with a question, got 0"),
    ],
)
def test_prompting_arms_without_what_they_need_fail_before_any_request(
    tmp_path: Path, arms: str, description: str, with_exemplars: bool, message: str
) -> None:
    dataset, spec, _, exemplars = write_inputs(tmp_path, description)
    config = EvalConfig(
        dataset=dataset,
        arms=arms,
        out=tmp_path / "out",
        style_spec=spec,
        exemplars=exemplars if with_exemplars else None,
        target="127.0.0.1:1",  # nothing listens: an input error must come before any connection
        ready_timeout=0.5,
        progress=False,
    )
    with pytest.raises(EvalInputError, match=message):
        run_eval(config)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"cost_sample": -1}, "cost_sample must be at least 0, got -1"),
        ({"cost_sample": 2, "cost_concurrency": 0}, "cost_concurrency must be at least 1, got 0"),
    ],
)
def test_bad_cost_probe_settings_fail_before_any_request(
    tmp_path: Path, setting: dict[str, int], message: str
) -> None:
    dataset, spec, _, _ = write_inputs(tmp_path)
    config = EvalConfig(
        dataset=dataset,
        arms="base",
        out=tmp_path / "out",
        style_spec=spec,
        target="127.0.0.1:1",  # nothing listens: the error must come before the main run
        ready_timeout=0.5,
        progress=False,
        **setting,  # type: ignore[arg-type]
    )
    with pytest.raises(EvalInputError, match=message):
        run_eval(config)
    assert not (tmp_path / "out").exists()


def test_eval_help_documents_the_prompting_arms() -> None:
    cmd = [sys.executable, "-m", "hybrid_assistant.server", "eval", "--help"]
    shown = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"}
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = " ".join(shown.stdout.split())
    for phrase in (
        "prompt (the style spec's description as a system instruction)",
        "fewshot@K (K style exemplars",
    ):
        assert phrase in text


def test_the_cost_probe_prices_every_arm_and_feeds_the_decision(
    start_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    server = start_server()
    dataset, spec_path, _docs, exemplars_path = write_inputs(tmp_path)
    out = tmp_path / "costs"
    summary = run_eval(
        EvalConfig(
            dataset=dataset,
            arms="base,prompt",
            out=out,
            style_spec=spec_path,
            exemplars=exemplars_path,
            max_tokens=MAX_TOKENS,
            resamples=50,
            cost_sample=2,
            target=server.target,
            progress=False,
        )
    )
    # Asked after the main run, uncached: the main run's 10 answers, then 2 per arm in the probe.
    assert summary.stats.requests == 10 and "cost_probe_s" in summary.phases_s
    costs = summary.analysis.costs
    assert set(costs) == {"base", "prompt"}
    assert all(c["n"] == 2 and c["errors"] == 0 and c["answers_per_s"] > 0 for c in costs.values())
    assert costs["prompt"]["prompt_tokens_mean"] > costs["base"]["prompt_tokens_mean"]
    assert costs["prompt"]["item_ids"] == costs["base"]["item_ids"]  # the same items, in the same order
    report = json.loads((out / "report.json").read_text())
    assert report["costs"] == json.loads(json.dumps(costs))
    assert {r["goal"] for r in report["decision"]["recommendations"]} == {"knowledge", "style"}
    html = (out / "report.html").read_text()
    assert "Cost per arm" in html and "Decision" in html
