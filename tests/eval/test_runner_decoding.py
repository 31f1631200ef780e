"""The eval names its decoding in every request: the server's sampling defaults never reach it.

A server fills temperature and top_p that a request leaves unset from its own defaults (the
model's generation_config.json, the operator's settings), so an eval that relied on them would
measure whatever the server was configured with. These tests catch the requests the runner
builds, as they would go on the wire.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hybrid_assistant.eval.arms import parse_arms
from hybrid_assistant.eval.dataset import EvalItem
from hybrid_assistant.eval.runner import RunConfig, Runner
from hybrid_assistant.requests import generate_request
from hybrid_assistant.v1 import assistant_pb2 as pb


class RecordingClient:
    """Stands in for AsyncAssistantClient: answers every call and keeps the Generate requests."""

    def __init__(self) -> None:
        self.sent: list[pb.GenerateRequest] = []

    async def __aenter__(self) -> RecordingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def wait_ready(self, timeout: float = 0) -> None:
        return None

    async def server_info(self) -> pb.ServerInfo:
        # A server whose defaults are far from greedy: nothing of them may show in the requests.
        return pb.ServerInfo(
            model="m",
            model_fingerprint="f" * 64,
            default_temperature=1.5,
            default_top_p=0.5,
            sampling_defaults_source="config",
        )

    async def list_adapters(self) -> list[pb.AdapterInfo]:
        return [pb.AdapterInfo(name="style", fingerprint="a" * 64)]

    async def generate(self, messages: Any, *, timeout: float | None = None, **options: Any) -> Any:
        self.sent.append(generate_request(messages, **options))
        return pb.GenerateResponse(text="Paris", finish_reason=pb.FINISH_REASON_STOP)

    async def score(self, messages: Any, continuations: list[str], **options: Any) -> pb.ScoreResponse:
        return pb.ScoreResponse(scores=[pb.ContinuationScore(logprob=-1.0, tokens=1) for _ in continuations])


def _run(config: RunConfig, monkeypatch: pytest.MonkeyPatch) -> list[pb.GenerateRequest]:
    client = RecordingClient()
    monkeypatch.setattr(Runner, "client", lambda self: client)
    items = [
        EvalItem(id="q1", question="What is the capital of France?", messages=None, answers=("Paris",)),
        EvalItem(
            id="q2", question="2 + 2?", messages=None, answers=("4",), options=("4", "5"), answer_index=0
        ),
    ]
    asyncio.run(Runner(config).run(items, parse_arms("base, adapter:style")))
    return client.sent


def test_every_eval_request_is_explicitly_greedy(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _run(RunConfig(progress=False), monkeypatch)
    assert len(sent) == 4  # 2 items x 2 arms
    for request in sent:
        sampling = request.sampling
        assert sampling.HasField("temperature") and sampling.temperature == 0.0
        assert sampling.HasField("top_p") and sampling.top_p == 1.0
        assert sampling.HasField("max_tokens") and sampling.max_tokens == 64
        assert sampling.HasField("seed")


def test_a_sampled_eval_still_names_every_value(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _run(RunConfig(progress=False, temperature=0.7, seed=3), monkeypatch)
    for request in sent:
        sampling = request.sampling
        assert sampling.HasField("temperature") and sampling.temperature == pytest.approx(0.7)
        assert sampling.HasField("top_p") and sampling.top_p == 1.0
        assert sampling.seed == 3
