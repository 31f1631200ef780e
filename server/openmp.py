"""One OpenMP thread team per process: the engine's. Other threads give theirs back after each task.

Why: torch's CPU kernels (and the row GEMV kernel) run their parallel loops on OpenMP, and GNU
OpenMP keeps one team of worker threads per thread that starts parallel work. The server starts
such work on several threads: the engine's scheduler, and the event loop's executor threads that
load the model, embed queries and documents, and read adapter weights. Each keeps its team alive.
Once the process holds more OpenMP threads than CPUs, libgomp stops spinning between parallel
regions (its "throttled" mode), so every region of the scheduler's decode step waits for its
workers to wake from sleep. Measured on 2 cores: a 1-row decode step on a long-lived thread took
33 ms while another thread's team was alive and 22 ms without (tests/unit/test_openmp.py has
the mechanism; ``python bench/openmp_teams.py`` the timing). ``omp_pause_resource_all`` frees the
calling thread's team, so executor threads call it after each task and only the scheduler keeps
one; the next task on that thread builds a new team in microseconds.

Only acts on the GNU OpenMP runtime torch already loaded (Linux wheels); elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: free the threads, keep nothing else to restore


@functools.cache
def _runtime() -> Any:
    """libgomp if this process has already loaded it (torch does, on Linux), else None."""
    try:
        # RTLD_NOLOAD: find the copy already in the process, never load a second runtime.
        return ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):  # not loaded, not Linux, or no RTLD_NOLOAD on this platform
        return None


def release_team() -> bool:
    """Free the calling thread's OpenMP worker threads; True when a runtime was there to ask."""
    runtime = _runtime()
    if runtime is None or not hasattr(runtime, "omp_pause_resource_all"):
        return False
    return bool(runtime.omp_pause_resource_all(_OMP_PAUSE_SOFT) == 0)


def _then_release(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        return fn(*args, **kwargs)
    finally:
        release_team()


class ReleasingExecutor(ThreadPoolExecutor):
    """A thread pool whose threads free their OpenMP team after every task (the loop's default)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return super().submit(functools.partial(_then_release, fn, *args, **kwargs))
