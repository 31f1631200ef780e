"""A trained adapter loads through the running server's LoadAdapter (real gRPC) and changes answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hybrid_assistant.adapters.train_config import BaseModel
from hybrid_assistant.adapters.training import train_adapter
from hybrid_assistant.client import AssistantClient
from hybrid_assistant.v1 import assistant_pb2 as pb
from tests.adapters.conftest import ANSWER, FAST, fox_examples
from tests.helpers import ServerThread


def test_trained_adapter_loads_in_the_server_and_changes_its_answer(
    tiny_base: BaseModel, tmp_path: Path, start_server: Callable[..., ServerThread]
) -> None:
    root = tmp_path / "adapters"
    train_adapter(fox_examples(), tiny_base, root / "fox", FAST, purpose="fox line", progress=False)
    server = start_server(adapter_roots=[root])
    question = "Tell me a story number 99."  # not a training question
    with AssistantClient(server.target) as client:
        base = client.generate(question, temperature=0, max_tokens=12).text
        loaded = client.load_adapter("fox", "fox").adapter
        assert (loaded.rank, loaded.base_model) == (4, tiny_base.name)
        adapted = client.generate(question, adapter="fox", temperature=0, max_tokens=12)
        listed = {a.name: a for a in client.list_adapters()}
    assert adapted.text != base
    assert adapted.text == ANSWER
    assert adapted.finish_reason == pb.FINISH_REASON_STOP  # it learned to end its turn
    meta = dict(listed["fox"].metadata)
    assert meta["purpose"] == "fox line" and meta["examples"] == "16"
