"""A live server in a child process for the robustness suite, and a health-latency probe.

The robustness checks must see what a client sees: a real socket, a real process that can
crash, be killed with SIGKILL or run out of disk. An in-process server (the tests'
ServerThread) would take pytest down with it when a hostile request kills the engine, so
everything here runs the server with :class:`hybrid_assistant.process.ServerProcess` on the tiny
test model (fast on 2 cores), or on any model given by path (SmolLM2 for the bench).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybrid_assistant.process import ServerProcess

ADMIN_TOKEN = "robustness-admin-token"
ADAPTERS = ("alpha", "beta", "gamma", "delta")


@dataclass(frozen=True)
class Workspace:
    """A model, an adapter root holding :data:`ADAPTERS`, and a place for data directories."""

    root: Path
    model_dir: Path
    adapter_root: Path

    @classmethod
    def prepare(cls, root: Path, model_dir: Path | None = None) -> Workspace:
        """Build the tiny model (unless ``model_dir`` is given) and four small adapters for it."""
        from hybrid_assistant.testing.models import build_adapter, build_tiny_model

        root.mkdir(parents=True, exist_ok=True)
        model = model_dir or root / "models" / "tiny-llama"
        if model_dir is None and not (model / "config.json").exists():
            build_tiny_model(model)
        adapter_root = root / "adapters"
        for i, name in enumerate(ADAPTERS):
            if not (adapter_root / name / "adapter_config.json").exists():
                targets = ("q_proj", "v_proj") if i % 2 == 0 else ("q_proj", "o_proj")
                build_adapter(model, adapter_root / name, seed=10 + i, rank=4 + 4 * (i % 2), targets=targets)
        return cls(root, model, adapter_root)


class LiveServer:
    """``hybrid-assistant serve`` in a child process that can be restarted, killed and measured.

    ``preload`` names adapters of the workspace to preload (pinned). ``env`` adds HA_* settings.
    ``http`` serves the OpenAI-compatible API as well, on a free port (off otherwise).
    The data directory survives restarts, so a restart after ``kill()`` reopens the same files.
    """

    def __init__(
        self,
        workspace: Workspace,
        data_dir: Path,
        *,
        preload: Sequence[str] = ("alpha", "beta"),
        token: str | None = ADMIN_TOKEN,
        env: dict[str, str] | None = None,
        knowledge: bool = True,
        http: bool = False,
    ) -> None:
        self.workspace = workspace
        self.http = http  # serve the OpenAI-compatible API too, on a free port (process.http_url)
        self.data_dir = data_dir
        self.token = token
        self.preload = tuple(preload)
        self.env = {
            "HA_EMBEDDER": "hashing",
            "HA_KNOWLEDGE": "true" if knowledge else "false",
            "HA_MAX_TOTAL_TOKENS": "512",
            "HA_MAX_PROMPT_TOKENS": "384",
            "HA_DEFAULT_MAX_TOKENS": "16",
            "HA_SHUTDOWN_GRACE_S": "2",
            "HA_LOG_LEVEL": "WARNING",
            "TOKENIZERS_PARALLELISM": "false",
            **(env or {}),
        }
        self.starts = 0
        self.process: ServerProcess | None = None

    @property
    def target(self) -> str:
        assert self.process is not None, "not started"
        return self.process.target

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-server-{self.starts}.log"

    def start(self, timeout: float = 300) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        extra = ["--model-path", str(self.workspace.model_dir), "--data-dir", str(self.data_dir)]
        extra += ["--adapter-root", str(self.workspace.adapter_root), "--threads", "1"]
        extra += [a for name in self.preload for a in ("--preload", f"{name}={name}")]
        if self.token:
            extra += ["--admin-token", self.token]
        self.process = ServerProcess(extra, log=self.log_path, env=self.env, http=self.http)
        self.process.wait_ready(timeout)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.proc.poll()

    def log_tail(self, chars: int = 3000) -> str:
        path = self.log_path
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would stop it."""
        if self.process is not None and self.alive():
            self.process.proc.kill()
            self.process.proc.wait()
        self.stop()

    def stop(self) -> int | None:
        if self.process is None:
            return None
        code = self.process.stop(timeout=30)
        self.process = None
        return code

    def restart(self) -> LiveServer:
        self.kill()
        return self.start()

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def metadata(self, token: str | None = "default") -> tuple[tuple[str, str], ...]:
        value = self.token if token == "default" else token
        return (("authorization", f"Bearer {value}"),) if value else ()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process: psutil if installed, else /proc/PID/status (VmRSS)."""
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count()}


# ---------------------------------------------------------------------------- health probe


def summarize_ms(values: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max (milliseconds) of latencies given in seconds."""
    if not values:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return {"n": len(ordered), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": ordered[-1] * 1000}


@dataclass
class _Sample:
    sent: float
    latency: float
    ok: bool


@dataclass
class HealthProbe:
    """grpc.health.v1 Check every ``interval_s`` on its own channel, in a thread.

    A check that does not answer within ``timeout_s`` counts with latency ``timeout_s`` (and
    not ok): a frozen event loop must show up as a long latency, not as a missing sample.
    """

    target: str
    interval_s: float = 0.02
    timeout_s: float = 5.0
    samples: list[_Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)
        self._lock = threading.Lock()

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self._stop.is_set():
                sent = time.perf_counter()
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout_s)
                    ok = reply.status == health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    ok = False
                latency = time.perf_counter() - sent
                with self._lock:
                    self.samples.append(_Sample(sent, latency, ok))
                self._stop.wait(max(0.0, self.interval_s - latency))

    def start(self) -> HealthProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 5)

    def between(self, start: float, end: float) -> list[float]:
        """Latencies (s) of checks sent in [start, end], or still in flight then."""
        with self._lock:
            return [s.latency for s in self.samples if s.sent + s.latency >= start and s.sent <= end]

    def failures_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for s in self.samples if s.sent + s.latency >= start and s.sent <= end and not s.ok)

    @contextmanager
    def window(self) -> Iterator[dict[str, float]]:
        """Measure the checks sent while the block runs; the dict is filled in on exit."""
        out: dict[str, float] = {}
        start = time.perf_counter()
        try:
            yield out
        finally:
            # Let a check sent during the block finish, so a stall that outlives the request counts.
            time.sleep(self.interval_s * 3)
            end = time.perf_counter()
            out.update(summarize_ms(self.between(start, end)))
            out["failed_checks"] = self.failures_between(start, end)
            out["wall_s"] = end - start

    def all_latencies(self) -> list[float]:
        with self._lock:
            return [s.latency for s in self.samples]

    def __enter__(self) -> HealthProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
