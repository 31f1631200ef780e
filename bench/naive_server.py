"""The server a user would otherwise write: one request at a time, PEFT ``set_adapter`` per request.

It speaks the same gRPC contract (Assistant.GenerateStream / Generate), so the benchmark sends
it exactly the same traffic as the real server. Run: ``python bench/naive_server.py --port P
--model DIR --adapter NAME=DIR ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

from hybrid_assistant.v1 import assistant_pb2 as pb
from hybrid_assistant.v1 import assistant_pb2_grpc as pb_grpc


class NaiveServicer(pb_grpc.AssistantServicer):
    def __init__(self, model_dir: Path, adapters: dict[str, Path]) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        names = list(adapters)
        if names:
            model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
            for name in names[1:]:
                model.load_adapter(str(adapters[name]), adapter_name=name)
        self.model = model.eval()
        self.lock = asyncio.Lock()  # one request at a time: the whole point of the baseline

    def _adapter(self, name: str) -> contextlib.AbstractContextManager[object]:
        if not isinstance(self.model, PeftModel):
            return contextlib.nullcontext()
        if not name:
            return self.model.disable_adapter()
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        accepted = time.perf_counter()
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        async with self.lock:
            started = time.perf_counter()
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            adapter = request.adapter if request.HasField("adapter") else ""

            sampling = request.sampling
            # min_tokens as HF's min_new_tokens (EOS masked until then); ignore_eos as min_tokens =
            # max_tokens: the same token count as the real server's, which is what the bench compares.
            min_new = sampling.max_tokens if sampling.ignore_eos else sampling.min_tokens
            made: list[int] = []

            def run() -> None:
                with torch.inference_mode(), self._adapter(adapter):
                    out = self.model.generate(
                        input_ids=ids,
                        max_new_tokens=sampling.max_tokens,
                        min_new_tokens=min_new or None,
                        do_sample=False,
                        streamer=streamer,
                    )
                made.append(int(out.shape[1] - ids.shape[1]))

            worker = threading.Thread(target=run)
            worker.start()
            parts: list[str] = []
            iterator = iter(streamer)
            while True:
                piece = await asyncio.to_thread(next, iterator, None)
                if piece is None:
                    break
                if piece:
                    parts.append(piece)
                    yield pb.GenerateStreamResponse(delta=piece)
            await asyncio.to_thread(worker.join)
        full = "".join(parts)
        tokens = made[0] if made else len(self.tokenizer(full, add_special_tokens=False)["input_ids"])
        total = (time.perf_counter() - accepted) * 1000
        summary = pb.GenerateResponse(
            text=full,
            usage=pb.Usage(prompt_tokens=int(ids.shape[1]), completion_tokens=tokens),
            adapter=adapter,
            timings=pb.Timings(queue_ms=(started - accepted) * 1000, total_ms=total),
        )
        yield pb.GenerateStreamResponse(summary=summary)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--adapter", action="append", default=[], help="NAME=DIR")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    adapters = {a.split("=", 1)[0]: Path(a.split("=", 1)[1]) for a in args.adapter}
    server = grpc.aio.server()
    pb_grpc.add_AssistantServicer_to_server(NaiveServicer(args.model, adapters), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
