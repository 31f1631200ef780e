"""The demo's answers do not move when the engine gets faster (issue 11: "same answers as before
on a fixed subset").

A handful of demo items, asked through the eval exactly as ``make demo`` asks them (the same
arms, 48-token greedy answers, options scored, 32 requests in flight so prefill chunks pack
several prompts and Score meets the prefix cache), must give the answers and option choices that
were recorded before the packed prefill and the lean Score (``data/demo_answers.json`` says
which version and machine). The arms need no adapter, so no training runs here. The options'
top-two log-likelihood margins are 0.2 nats or more, far above float32 rounding across CPUs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.eval.metrics import option_choice
from hybrid_assistant.eval.workflow import EvalConfig, run_eval
from hybrid_assistant.server.demo import demo_documents
from tests.helpers import ServerThread

pytestmark = pytest.mark.slow
DEMO = Path(__file__).resolve().parents[2] / "eval" / "data" / "demo"
PINNED = json.loads((Path(__file__).parent / "data" / "demo_answers.json").read_text())["answers"]


@pytest.fixture(scope="module")
def demo_server(smol_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from hybrid_assistant.server.config import load_settings

    # A data directory of its own (another module's index must not add documents to retrieve
    # from), sharing the converted model.
    data = tmp_path_factory.mktemp("demo-answers")
    (data / "models").symlink_to(smol_data_dir / "models", target_is_directory=True)
    server = ServerThread(load_settings(None, listen="127.0.0.1:0", data_dir=data))
    server.wait_ready(300)
    yield server
    server.stop()


def test_demo_answers_are_those_recorded_before(demo_server: ServerThread, tmp_path: Path) -> None:
    with AssistantClient(demo_server.target) as client:
        assert client.ingest(demo_documents()).added == 47  # what make demo ingests
    wanted = {a["item"] for a in PINNED}
    every = (DEMO / "test.jsonl").read_text().splitlines()
    lines = [line for line in every if json.loads(line)["id"] in wanted]
    assert len(lines) == len(wanted)
    dataset = tmp_path / "items.jsonl"
    dataset.write_text("\n".join(lines) + "\n")
    summary = run_eval(
        EvalConfig(
            dataset=dataset,
            arms="base,rag@3,oracle",
            out=tmp_path / "report",
            style_spec=DEMO / "style_spec.json",
            exemplars=DEMO / "style_exemplars.jsonl",
            documents=[DEMO / "kb"],
            max_tokens=48,  # the demo's
            target=demo_server.target,
            cache=False,
            progress=False,
        )
    )
    got = {(r.item_id, r.arm): r for r in summary.records}
    assert not [r.error for r in got.values() if r.error]
    for pinned in PINNED:
        where = (pinned["item"], pinned["arm"])
        record = got[where]
        assert record.text == pinned["text"], where
        if pinned["best_option"] is None:
            assert record.option_logprobs is None, where
        else:
            assert record.option_logprobs is not None, where
            assert option_choice(record.option_logprobs) == pinned["best_option"], where
