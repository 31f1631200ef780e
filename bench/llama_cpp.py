"""llama.cpp's ``llama-server`` as a peer for ``bench/engines.py``: build it, convert, serve, drive.

llama.cpp comes from the source vendored in the ``llama-cpp-python`` sdist on PyPI (a registry
these machines reach; GitHub they do not), pinned below. Only the ``llama-server`` target is
built (CMake + Ninja, native CPU flags, no curl/OpenSSL), about 9 minutes on 2 cores. Weights
are the same safetensors the other engines serve, converted to float32 GGUF with llama.cpp's own
``convert_hf_to_gguf.py``; LoRA adapters with its ``convert_lora_to_gguf.py``.

    make llama-cpp                      # = python bench/llama_cpp.py build
    python bench/engines.py --llama-cpp # the three engines side by side

Traffic is the same as the others get: each prompt is rendered with the server's own chat
rendering and sent to ``/completion`` as token ids, greedy, ``ignore_eos``, streamed. Every
adapter is loaded at start with scale 0 (``--lora-init-without-apply``); a request names its
adapter in the ``lora`` field with scale 1 and every other at 0, and a base request sets all to 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ROOT, load_row, request_plan
from hybrid_assistant.process import free_port

LLAMA_CPP_PYTHON = "0.3.36"
HOME = ROOT / "build" / "llama-cpp"
SOURCE = HOME / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
BINARY = SOURCE / "build" / "bin" / "llama-server"


def _run(argv: list[str], log: Path) -> None:
    """A build step with its output in ``log``; on failure, the log's tail in the error."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(argv)}\n{log.read_text()[-3000:]}")


def build(jobs: int) -> Path:
    """Download the pinned sdist, unpack it, build ``llama-server``; a no-op once built."""
    if BINARY.exists():
        return BINARY
    HOME.mkdir(parents=True, exist_ok=True)
    log = HOME / "build.log"
    sdist = HOME / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.exists():
        print(f"downloading llama-cpp-python {LLAMA_CPP_PYTHON} (sdist, ~75 MB)", flush=True)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-d",
                str(HOME),
                f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
            ],
            log,
        )
    if not SOURCE.exists():
        with tarfile.open(sdist) as archive:
            archive.extractall(HOME, filter="data")
    started = time.perf_counter()
    print(f"building llama-server with {jobs} jobs (about 9 min on 2 cores; log: {log})", flush=True)
    _run(
        ["cmake", "-S", str(SOURCE), "-B", str(SOURCE / "build"), "-DCMAKE_BUILD_TYPE=Release"]
        + ["-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF"]
        + ["-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]
        + (["-G", "Ninja"] if _has("ninja") else []),
        log,
    )
    _run(["cmake", "--build", str(SOURCE / "build"), "--target", "llama-server", "-j", str(jobs)], log)
    print(f"built {BINARY} in {time.perf_counter() - started:.0f} s", flush=True)
    return BINARY


def _has(program: str) -> bool:
    return any((Path(p) / program).exists() for p in os.environ.get("PATH", "").split(os.pathsep))


def convert_model(model_dir: Path, out: Path) -> Path:
    """float32 GGUF of the served weights (the same bytes the other engines load)."""
    if not out.exists():
        _run(
            [
                sys.executable,
                str(SOURCE / "convert_hf_to_gguf.py"),
                str(model_dir),
                "--outtype",
                "f32",
                "--outfile",
                str(out),
            ],
            out.with_suffix(".log"),
        )
    return out


def convert_adapter(model_dir: Path, adapter_dir: Path, out: Path) -> Path:
    _run(
        [
            sys.executable,
            str(SOURCE / "convert_lora_to_gguf.py"),
            "--base",
            str(model_dir),
            "--outtype",
            "f32",
            "--outfile",
            str(out),
            str(adapter_dir),
        ],
        out.with_suffix(".log"),
    )
    return out


class LlamaServer:
    """``llama-server`` on a free port: 2 threads, 32 slots (the others' batch limit), one KV pool."""

    def __init__(self, model: Path, adapters: dict[str, Path], work: Path, threads: int, slots: int = 32):
        self.names = list(adapters)
        self.threads, self.slots = threads, slots
        self.url = f"http://127.0.0.1:{free_port()}"
        argv = [str(BINARY), "-m", str(model), "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1]]
        argv += ["-t", str(threads), "-tb", str(threads), "-np", str(slots), "-c", str(slots * 256)]
        argv += ["--kv-unified", "--no-webui", "--lora-init-without-apply"]
        for path in adapters.values():
            argv += ["--lora", str(path)]
        self.retries = 0
        # Kept after the run (the work folder is temporary): the place to look when it fails.
        self.log = HOME / "server.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> LlamaServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"llama-server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    loaded = httpx.get(f"{self.url}/lora-adapters", timeout=5).json()
                    if len(loaded) != len(self.names):
                        sys.exit(f"llama-server loaded {len(loaded)} adapters, expected {len(self.names)}")
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"llama-server not healthy after {timeout} s; log: {self.log}")

    def lora(self, adapter: str) -> list[dict[str, Any]]:
        return [{"id": i, "scale": 1.0 if name == adapter else 0.0} for i, name in enumerate(self.names)]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


async def _one_stream(
    client: httpx.AsyncClient,
    server: LlamaServer,
    requests: list[tuple[list[int], str]],
    max_tokens: int,
    out: list[dict[str, float]],
) -> None:
    for ids, adapter in requests:
        body = {
            "prompt": ids,
            "n_predict": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "lora": server.lora(adapter),
        }
        for attempt in range(3):
            sent = time.perf_counter()
            first = last = 0.0
            tokens = 0
            try:
                async with client.stream("POST", f"{server.url}/completion", json=body) as response:
                    response.raise_for_status()
                    async for line in response.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        now = time.perf_counter()
                        event = json.loads(line[6:])
                        if event.get("stop"):
                            tokens = int(event["tokens_predicted"])
                        elif event.get("tokens") or event.get("content"):
                            first = first or now
                            last = now
                break
            except httpx.RemoteProtocolError:
                # Seen once in a full run: a connection closed before any response. Nothing was
                # generated for it, so it is sent again (and counted); twice more at most.
                if first or attempt == 2:
                    raise
                server.retries += 1
        itl = (last - first) / (tokens - 1) if tokens > 1 else float("nan")
        latency = time.perf_counter() - sent
        out.append({"ttft": first - sent, "itl": itl, "tokens": tokens, "latency": latency})


def complete(server: LlamaServer, ids: list[int], adapter: str, max_tokens: int) -> str:
    """One greedy answer, not streamed: to check the engines agree on the same weights."""
    body = {"prompt": ids, "n_predict": max_tokens, "temperature": 0, "lora": server.lora(adapter)}
    response = httpx.post(f"{server.url}/completion", json=body, timeout=300)
    response.raise_for_status()
    return str(response.json()["content"])


async def load(
    server: LlamaServer,
    prompt_ids: dict[str, list[int]],
    streams: int,
    adapters: list[str],
    per_stream: int,
    max_tokens: int,
) -> dict[str, Any]:
    """Same plan and summary as ``bench.serve.load``, over llama-server's HTTP API."""
    plans = [[(prompt_ids[p], a) for p, a in plan] for plan in request_plan(streams, per_stream, adapters)]
    records: list[dict[str, float]] = []
    retries = server.retries
    limits = httpx.Limits(max_connections=streams + 1)
    async with httpx.AsyncClient(timeout=1800, limits=limits) as client:
        await _one_stream(client, server, [(next(iter(prompt_ids.values())), "")], 2, [])
        started = time.perf_counter()
        await asyncio.gather(*(_one_stream(client, server, plan, max_tokens, records) for plan in plans))
        wall = time.perf_counter() - started
    row = load_row(records, streams, len(adapters), wall, max_tokens)
    return {**row, "retries": server.retries - retries}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if args.command == "build":
        print(build(args.jobs))


if __name__ == "__main__":
    main()
