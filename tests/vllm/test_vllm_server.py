"""End to end: `python -m hybrid_assistant.server serve --engine vllm` on the tiny model, over gRPC.

Per-request adapters, load / unload (vLLM's remove_lora really runs), a deadline that
aborts the request, and engine death: the server goes away with exit code 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.process import free_port
from hybrid_assistant.server.sampling_defaults import BUILTIN_TEMPERATURE, BUILTIN_TOP_P

pytestmark = pytest.mark.vllm

Q = "Tell me a story about a cat."


@pytest.fixture
def vllm_server(
    tiny_model_dir: Path, adapter_root: Path, tiny_adapters: dict[str, Path], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "HA_MODEL_PATH": str(tiny_model_dir),
        "HA_DATA_DIR": str(tmp_path / "data"),
        "HA_ADAPTER_ROOTS": f'["{adapter_root}"]',
        "HA_ADMIN_TOKEN": "tok",
        "HA_EMBEDDER": "hashing",
        "HA_MAX_TOTAL_TOKENS": "512",
        "HA_MAX_PROMPT_TOKENS": "384",
        "HA_VLLM__KV_CACHE_MEMORY_BYTES": str(64 << 20),
        "HA_VLLM__MAX_LORAS": "2",
    }
    cmd = [
        sys.executable,
        "-m",
        "hybrid_assistant.server",
        "serve",
        "--engine",
        "vllm",
        "--listen",
        f"127.0.0.1:{port}",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, "--preload", "alpha=alpha"], env=env, stdout=out, stderr=out)
    target = f"127.0.0.1:{port}"
    try:
        with AssistantClient(target) as client:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
                try:
                    client.wait_ready(timeout=1)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
        yield proc, target, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def test_serves_adapters_per_request_unloads_for_real_and_exits_when_vllm_dies(
    vllm_server: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    proc, target, log = vllm_server
    with AssistantClient(target, token="tok") as client:
        info = client.server_info()
        assert info.engine == "vllm"
        # Sampling defaults are resolved in the core, as for the embedded engine: the tiny model's
        # generation_config.json names none, so a request that sets none gets the built-in values.
        assert info.sampling_defaults_source == "built-in"
        unset = client.generate(Q, seed=5, max_tokens=8).text
        sent = client.generate(Q, temperature=BUILTIN_TEMPERATURE, top_p=BUILTIN_TOP_P, seed=5, max_tokens=8)
        assert unset == sent.text
        base = client.generate(Q, temperature=0, max_tokens=8)
        alpha = client.generate(Q, adapter="alpha", temperature=0, max_tokens=8)
        assert alpha.adapter == "alpha"
        assert alpha.text != base.text
        assert client.generate(Q, adapter="alpha", temperature=0, max_tokens=8).text == alpha.text

        client.load_adapter("beta", "beta")
        beta = client.generate(Q, adapter="beta", temperature=0, max_tokens=8)
        assert beta.text not in (base.text, alpha.text)
        assert client.unload_adapter("beta").deferred is False
        with pytest.raises(grpc.RpcError) as missing:
            client.generate(Q, adapter="beta", max_tokens=4)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert "removed from vLLM: True" in log.read_text()  # remove_lora ran and vLLM held it

        with pytest.raises(grpc.RpcError) as late:
            client.generate(Q, temperature=0, max_tokens=400, timeout=0.2)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert client.generate(Q, temperature=0, max_tokens=8).text == base.text

    # Engine death: kill vLLM's engine process; the server must stop serving and exit 1.
    cores = [p for p in psutil.Process(proc.pid).children(recursive=True) if "EngineCor" in p.name()]
    assert cores, "no VLLM::EngineCore child process found"
    cores[0].send_signal(signal.SIGKILL)
    assert proc.wait(90) == 1
    assert "engine died" in log.read_text()
