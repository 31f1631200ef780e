"""ListAdapters / LoadAdapter / UnloadAdapter over gRPC: hot swap, eviction, auth and every failure path."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.testing.models import build_adapter
from tests.helpers import ServerThread

Q = "Tell me a story about a cat."
TOKEN = "s3cret-token"


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


@pytest.fixture
def server(start_server: Callable[..., ServerThread]) -> ServerThread:
    return start_server(admin_token=TOKEN, max_resident_adapters=2)


def test_load_use_list_unload(server: ServerThread, tiny_adapters: dict[str, Path]) -> None:
    with AssistantClient(server.target, token=TOKEN) as client:
        base = client.generate(Q, temperature=0, max_tokens=10).text
        reply = client.load_adapter("alpha", "alpha")  # relative to the adapter root
        assert not reply.replaced
        assert reply.adapter.rank == 4
        assert list(reply.adapter.target_modules) == ["q_proj", "v_proj"]
        assert reply.adapter.load_ms > 0
        adapted = client.generate(Q, adapter="alpha", temperature=0, max_tokens=10).text
        assert adapted != base
        listed = {a.name: a for a in client.list_adapters()}
        assert listed["alpha"].resident and listed["alpha"].fingerprint
        assert not client.unload_adapter("alpha").deferred
        assert client.list_adapters() == []
        assert server.app.engine.resident_adapter_uids() == set()
        code, _ = code_of(lambda: client.generate(Q, adapter="alpha"))
        assert code is grpc.StatusCode.NOT_FOUND


def test_existing_name_needs_replace(server: ServerThread, tiny_adapters: dict[str, Path]) -> None:
    with AssistantClient(server.target, token=TOKEN) as client:
        client.load_adapter("x", str(tiny_adapters["alpha"]))
        code, details = code_of(lambda: client.load_adapter("x", str(tiny_adapters["beta"])))
        assert code is grpc.StatusCode.ALREADY_EXISTS
        assert "replace" in details
        before = client.generate(Q, adapter="x", temperature=0, max_tokens=10).text
        assert client.load_adapter("x", str(tiny_adapters["beta"]), replace=True).replaced
        after = client.generate(Q, adapter="x", temperature=0, max_tokens=10).text
        client.load_adapter("beta", str(tiny_adapters["beta"]))
        assert after == client.generate(Q, adapter="beta", temperature=0, max_tokens=10).text
        assert before != after


def test_unload_while_streaming_is_deferred(server: ServerThread) -> None:
    with AssistantClient(server.target, token=TOKEN) as client:
        client.load_adapter("alpha", "alpha")
        expected = client.generate(Q, adapter="alpha", temperature=0, max_tokens=80).text
        stream = client.stream(Q, adapter="alpha", temperature=0, max_tokens=80)
        first = next(stream)
        reply = client.unload_adapter("alpha")
        assert reply.deferred and reply.in_flight == 1
        code, _ = code_of(lambda: client.generate(Q, adapter="alpha"))
        assert code is grpc.StatusCode.NOT_FOUND  # new requests no longer see it
        rest = list(stream)
        text = first.delta + "".join(p.delta for p in rest[:-1])
        assert text == rest[-1].summary.text == expected
    assert server.app.engine.resident_adapter_uids() == set()  # freed after the last request


def test_lru_eviction_and_reload_on_demand(server: ServerThread, tiny_adapters: dict[str, Path]) -> None:
    with AssistantClient(server.target, token=TOKEN) as client:
        client.load_adapter("a1", "alpha")
        client.load_adapter("b1", "beta")
        a1 = client.generate(Q, adapter="a1", temperature=0, max_tokens=8).text
        client.generate(Q, adapter="b1", max_tokens=2)  # a1 is now least recently used
        client.load_adapter("a2", "alpha")  # cap is 2: evicts a1
        listed = {a.name: a.resident for a in client.list_adapters()}
        assert listed == {"a1": False, "b1": True, "a2": True}
        assert client.generate(Q, adapter="a1", temperature=0, max_tokens=8).text == a1  # reloaded
        assert {a.name: a.resident for a in client.list_adapters()}["a1"]


def test_a_load_at_the_cap_waits_for_an_adapter_to_go_idle(server: ServerThread) -> None:
    """Both resident adapters are in flight: the third load waits for one to finish, not fails.
    (The chaos churn saw RESOURCE_EXHAUSTED here whenever every slot was briefly busy.)"""
    with AssistantClient(server.target, token=TOKEN, timeout=60) as client:
        client.load_adapter("w1", "alpha")
        client.load_adapter("w2", "beta")
        streams = [client.stream(Q, adapter=name, max_tokens=120) for name in ("w1", "w2")]
        for stream in streams:
            next(iter(stream))  # both now in flight
        finished = threading.Event()

        def drain() -> None:
            for stream in streams:
                list(stream)
            finished.set()

        drainer = threading.Thread(target=drain)
        drainer.start()
        reply = client.load_adapter("w3", "alpha")  # waits for w1 or w2 to go idle, then evicts it
        drainer.join(60)
        assert reply.adapter.name == "w3" and finished.is_set()
        assert sum(a.resident for a in client.list_adapters()) == 2


def test_pinned_adapters_are_not_evicted(server: ServerThread) -> None:
    with AssistantClient(server.target, token=TOKEN) as client:
        client.load_adapter("p1", "alpha", pin=True)
        client.load_adapter("p2", "beta", pin=True)
        code, details = code_of(lambda: client.load_adapter("p3", "alpha"))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "pinned or in use" in details


def test_admin_calls_need_the_token(server: ServerThread) -> None:
    with AssistantClient(server.target) as anonymous:
        code, details = code_of(lambda: anonymous.load_adapter("alpha", "alpha"))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer" in details
        code, _ = code_of(lambda: anonymous.unload_adapter("alpha"))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        assert anonymous.list_adapters() == []  # reading is not an admin call
    with AssistantClient(server.target, token="wrong") as wrong:
        code, _ = code_of(lambda: wrong.load_adapter("alpha", "alpha"))
        assert code is grpc.StatusCode.UNAUTHENTICATED


def test_bad_paths_and_names(server: ServerThread, adapter_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(adapter_root / "alpha", outside)
    link = adapter_root / f"escape-{os.getpid()}"
    link.symlink_to(outside, target_is_directory=True)
    try:
        with AssistantClient(server.target, token=TOKEN) as client:
            for path in ("../outside", str(outside), link.name):
                code, details = code_of(lambda p=path: client.load_adapter("evil", p))
                assert code is grpc.StatusCode.INVALID_ARGUMENT, path
                assert "outside the adapter roots" in details
            code, _ = code_of(lambda: client.load_adapter("missing", "does-not-exist"))
            assert code is grpc.StatusCode.NOT_FOUND
            code, details = code_of(lambda: client.load_adapter("../bad name", "alpha"))
            assert code is grpc.StatusCode.INVALID_ARGUMENT
            assert "not allowed" in details
            code, _ = code_of(lambda: client.load_adapter("", "alpha"))
            assert code is grpc.StatusCode.INVALID_ARGUMENT
            code, _ = code_of(lambda: client.unload_adapter("never-loaded"))
            assert code is grpc.StatusCode.NOT_FOUND
    finally:
        link.unlink()


def test_invalid_adapter_reports_every_problem(
    server: ServerThread, adapter_root: Path, tiny_model_dir: Path
) -> None:
    bad = build_adapter(tiny_model_dir, adapter_root / f"bad-{os.getpid()}", rank=16, targets=("q_proj",))
    config = json.loads((bad / "adapter_config.json").read_text())
    config.update(use_dora=True, base_model_name_or_path="some-org/another-model")
    (bad / "adapter_config.json").write_text(json.dumps(config))
    try:
        with AssistantClient(server.target, token=TOKEN) as client:
            code, details = code_of(lambda: client.load_adapter("bad", bad.name))
            assert code is grpc.StatusCode.INVALID_ARGUMENT
            assert "DoRA" in details and "another-model" in details
            assert server.app.engine.resident_adapter_uids() == set()
    finally:
        shutil.rmtree(bad)


def test_load_during_traffic_fails_no_request(server: ServerThread) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        with AssistantClient(server.target) as client:
            while not stop.is_set():
                try:
                    client.generate(Q, max_tokens=6)
                except BaseException as exc:  # any failure is a test failure
                    errors.append(exc)

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        with AssistantClient(server.target, token=TOKEN) as client:
            for i in range(4):
                client.load_adapter("hot", "alpha" if i % 2 else "beta", replace=True)
                assert client.generate(Q, adapter="hot", max_tokens=3).adapter == "hot"
            client.unload_adapter("hot")
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    assert errors == []


def test_resident_gauge_follows_preload_eviction_reload_and_unload(
    start_server: Callable[..., ServerThread], tiny_adapters: dict[str, Path]
) -> None:
    # The gauge used to be set by the LoadAdapter/UnloadAdapter servicer only: a preload, an
    # eviction by a request's reload, or a deferred unload finishing left it stale.
    from hybrid_assistant.server.config import AdapterPreload

    server = start_server(
        admin_token=TOKEN,
        max_resident_adapters=2,
        preload_adapters=[AdapterPreload(name="pre", path="alpha", pin=False)],
    )
    engine = server.app.engine

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("hybrid_assistant_adapters_resident")

    def check(expected: int) -> None:
        assert gauge() == expected == len(engine.resident_adapter_uids())

    check(1)  # the preload, no LoadAdapter call
    with AssistantClient(server.target, token=TOKEN) as client:
        client.load_adapter("b1", "beta")
        check(2)
        client.generate(Q, adapter="pre", max_tokens=2)  # b1 is now least recently used
        client.load_adapter("a2", "alpha")  # evicts b1
        check(2)
        client.generate(Q, adapter="b1", max_tokens=2)  # reloads b1, evicting pre
        assert {a.name: a.resident for a in client.list_adapters()} == {"pre": False, "b1": True, "a2": True}
        check(2)
        stream = client.stream(Q, adapter="a2", max_tokens=80)
        next(stream)
        assert client.unload_adapter("a2").deferred
        check(2)  # its weights serve the stream still
        list(stream)
        check(1)  # freed by the request's end, not by an admin call
        client.unload_adapter("b1")
        check(0)
