"""server/openmp.py: executor threads give back their OpenMP team, so the engine's is the only one."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from hybrid_assistant.server import openmp

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="GNU OpenMP and /proc are Linux's")


def _threads() -> int:
    return len(list(Path("/proc/self/task").iterdir()))


@linux_only
def test_releasing_a_team_ends_its_worker_threads() -> None:
    if torch.get_num_threads() < 2:
        pytest.skip("one OpenMP thread: no team to release")
    big = torch.randn(512, 512)
    before: list[int] = []
    after: list[int] = []
    go_on = threading.Event()

    def work() -> None:
        big @ big  # starts this thread's team: its workers are new OS threads
        before.append(_threads())
        assert openmp.release_team()
        deadline = time.monotonic() + 5
        while _threads() >= before[0] and time.monotonic() < deadline:
            time.sleep(0.01)  # the workers exit on their own after the pause
        after.append(_threads())
        go_on.wait(10)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not after and time.monotonic() < deadline:
            time.sleep(0.01)
        assert after, "the worker did not finish"
        assert after[0] < before[0]  # the same thread, still alive, holds fewer threads
    finally:
        go_on.set()
        thread.join()
    x = torch.randn(64, 64)
    torch.testing.assert_close(big[:64, :64] @ x, (big[:64, :64].double() @ x.double()).float())


def test_the_executor_returns_results_and_errors_and_releases_after_each_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[str] = []

    def release() -> bool:
        released.append(threading.current_thread().name)
        return True

    monkeypatch.setattr(openmp, "release_team", release)
    with openmp.ReleasingExecutor(max_workers=1, thread_name_prefix="t") as pool:
        assert pool.submit(lambda a, b=0: a + b, 2, b=3).result() == 5
        failing = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result()
    assert len(released) == 2 and all(name.startswith("t") for name in released)


def test_without_the_runtime_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openmp, "_runtime", lambda: None)
    assert openmp.release_team() is False
