"""Property-based fuzzing of every RPC against a live server (a child process on a socket).

Each RPC gets a few dozen hypothesis examples of structurally valid requests with hostile
values (huge, empty, NUL and unicode strings; NaN, inf and denormal floats; edge integers; long
repeated fields; huge maps), sent with the admin token, with none or with a wrong one; then raw
garbage bytes go to every method. Only documented statuses may come back, an admin method must
refuse a missing or wrong token, and after every request the server must still answer its
health check (SERVING) and a plain Generate. The long run is bench/chaos.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hybrid_assistant.testing.fuzz import (
    BY_LABEL,
    CI_LIMITS,
    RPCS,
    FuzzRunner,
    Rpc,
    fuzz_garbage,
    fuzz_rpc,
    known_hostile,
    seed_server,
)
from hybrid_assistant.testing.live import LiveServer

EXAMPLES_PER_RPC = 30
GARBAGE_EXAMPLES = 60


@pytest.fixture(scope="module")
def seeded(live_server: LiveServer) -> LiveServer:
    runner = FuzzRunner(live_server)
    seed_server(runner)
    runner.close()
    return live_server


@pytest.fixture
def runner(seeded: LiveServer) -> Iterator[FuzzRunner]:
    fuzz = FuzzRunner(seeded, timeout_s=60)
    yield fuzz
    fuzz.close()


def _rpc_params() -> list[Any]:
    return [pytest.param(r, id=r.label) for r in RPCS]


@pytest.mark.parametrize("rpc", _rpc_params())
def test_hostile_requests_get_documented_statuses(runner: FuzzRunner, rpc: Rpc) -> None:
    fuzz_rpc(runner, rpc, EXAMPLES_PER_RPC, CI_LIMITS)
    assert runner.requests > 0  # fewer than asked when the space is small (no fields)
    assert not runner.violations, runner.report()


def test_garbage_bytes_get_documented_statuses(runner: FuzzRunner) -> None:
    fuzz_garbage(runner, GARBAGE_EXAMPLES)
    assert not runner.violations, runner.report()


@pytest.mark.parametrize(
    ("label", "request_"), [(k[1], k[2]) for k in known_hostile()], ids=[k[0] for k in known_hostile()]
)
def test_known_hostile_inputs_get_documented_statuses(runner: FuzzRunner, label: str, request_: Any) -> None:
    runner.run(BY_LABEL[label], request_)
    assert not runner.violations, runner.report()
