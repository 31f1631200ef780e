"""The official ``openai`` package, unchanged, against the server: sync, async and streaming, plus
one raw ``httpx`` read of the SSE wire format; adapters as models, retrieval with citations, an
experiment's arm, and the same greedy answer as gRPC."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from openai import AsyncOpenAI, OpenAI

from hybrid_assistant.client import AssistantClient
from tests.helpers import ServerThread
from tests.http.conftest import EXPERIMENT

Q = "What is the capital of France?"
GREEDY: dict[str, Any] = {"max_tokens": 12, "temperature": 0}


def _chat(client: OpenAI, model: str, **kw: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": Q}], **kw)


def test_models_list_the_base_model_and_every_adapter_with_the_defaults(
    openai_client: OpenAI, base_model: str
) -> None:
    models = {m.id: m for m in openai_client.models.list()}
    assert set(models) == {base_model, "alpha", "beta"}
    base = models[base_model]
    assert base.object == "model" and base.owned_by == "hybrid-assistant"
    defaults = base.model_extra["defaults"]  # type: ignore[index]
    assert defaults["max_tokens"] == 16
    assert models["alpha"].model_extra["parent"] == base_model  # type: ignore[index]
    assert openai_client.models.retrieve("alpha").id == "alpha"


def test_sync_chat_completion(openai_client: OpenAI, base_model: str) -> None:
    reply = _chat(openai_client, base_model, **GREEDY)
    assert reply.object == "chat.completion" and reply.model == base_model
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= reply.usage.completion_tokens <= 12  # type: ignore[union-attr]
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens  # type: ignore[union-attr]
    extra = reply.model_extra or {}
    assert extra["adapter"] == "" and extra["arm"] == "base" and extra["citations"] == []
    assert reply.id == f"chatcmpl-{extra['request_id']}"
    # Greedy is deterministic: the same request, the same answer.
    assert _chat(openai_client, base_model, **GREEDY).choices[0].message.content == choice.message.content


def test_stream_joins_to_the_unary_answer_and_reports_usage_last(
    openai_client: OpenAI, base_model: str
) -> None:
    unary = _chat(openai_client, base_model, **GREEDY)
    chunks = list(
        _chat(openai_client, base_model, stream=True, stream_options={"include_usage": True}, **GREEDY)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == unary.choices[0].message.content
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == [unary.choices[0].finish_reason]
    assert (finishing[0].model_extra or {})["arm"] == "base"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == unary.usage.completion_tokens  # type: ignore[union-attr]
    assert all(c.usage is None for c in chunks[:-1])


def test_text_completion_is_the_prompt_as_one_user_message(openai_client: OpenAI, base_model: str) -> None:
    chat = _chat(openai_client, base_model, **GREEDY)
    completion = openai_client.completions.create(model=base_model, prompt=Q, **GREEDY)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == chat.choices[0].message.content
    streamed = list(openai_client.completions.create(model=base_model, prompt=Q, stream=True, **GREEDY))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text


async def test_async_client_serves_concurrent_requests_like_sequential_ones(
    openai_client: OpenAI, async_openai: AsyncOpenAI, base_model: str
) -> None:
    models = [base_model, "alpha", "beta"]
    alone = [_chat(openai_client, m, **GREEDY).choices[0].message.content for m in models]
    async with async_openai:
        replies = await asyncio.gather(
            *(
                async_openai.chat.completions.create(
                    model=m, messages=[{"role": "user", "content": Q}], **GREEDY
                )
                for m in models
            )
        )
        assert [r.choices[0].message.content for r in replies] == alone
        stream = await async_openai.chat.completions.create(
            model="alpha", messages=[{"role": "user", "content": Q}], stream=True, **GREEDY
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == alone[1]


def test_raw_sse_wire_format(http_server: ServerThread, base_model: str) -> None:
    body = {"model": base_model, "messages": [{"role": "user", "content": Q}], "stream": True, **GREEDY}
    with httpx.stream("POST", f"{http_server.http_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payloads[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert payloads[-1]["request_id"] and payloads[-1]["citations"] == []


def test_an_adapter_is_a_model(openai_client: OpenAI, base_model: str) -> None:
    base = _chat(openai_client, base_model, **GREEDY)
    alpha = _chat(openai_client, "alpha", **GREEDY)
    assert alpha.model == "alpha" and (alpha.model_extra or {})["adapter"] == "alpha"
    assert (alpha.model_extra or {})["arm"] == "adapter:alpha"
    assert alpha.choices[0].message.content != base.choices[0].message.content


def test_retrieval_cites_the_passages_it_used(openai_client: OpenAI, base_model: str) -> None:
    reply = _chat(
        openai_client, base_model, extra_body={"retrieval": True, "top_k": 2, "mode": "lexical"}, **GREEDY
    )
    extra = reply.model_extra or {}
    assert extra["arm"] == "rag"
    citations = extra["citations"]
    assert 1 <= len(citations) <= 2
    assert citations[0]["document_id"] == "paris" and "Paris" in citations[0]["text"]
    assert [c["index"] for c in citations] == list(range(1, len(citations) + 1))
    assert set(citations[0]) >= {"document_id", "chunk_id", "score", "index", "text"}
    assert reply.usage.prompt_tokens > _chat(openai_client, base_model, **GREEDY).usage.prompt_tokens  # type: ignore[union-attr]
    chunks = list(
        _chat(openai_client, base_model, stream=True, extra_body={"retrieval": True, "top_k": 2}, **GREEDY)
    )
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert (finishing[0].model_extra or {})["citations"][0]["document_id"] == "paris"


def test_an_experiment_assigns_the_same_arm_as_over_grpc(
    openai_client: OpenAI, http_server: ServerThread, base_model: str
) -> None:
    arms = {a["name"]: a.get("adapter", "") for a in EXPERIMENT["arms"]}  # type: ignore[union-attr]
    seen = set()
    with AssistantClient(http_server.target, timeout=60) as grpc_client:
        for subject in ("user-1", "user-2", "user-3", "user-4", "user-5", "user-6"):
            body = {"experiment": EXPERIMENT["name"], "subject_key": subject}
            reply = _chat(openai_client, base_model, extra_body=body, **GREEDY)
            extra = reply.model_extra or {}
            assert extra["experiment"] == EXPERIMENT["name"] and extra["adapter"] == arms[extra["arm"]]
            over_grpc = grpc_client.generate(Q, experiment=EXPERIMENT["name"], subject_key=subject, **GREEDY)
            assert over_grpc.arm == extra["arm"] and over_grpc.text == reply.choices[0].message.content
            seen.add(extra["arm"])
            # `user` is the subject key when the body names none.
            by_user = _chat(
                openai_client, base_model, user=subject, extra_body={"experiment": "style-ab"}, **GREEDY
            )
            assert (by_user.model_extra or {})["arm"] == extra["arm"]
    assert seen == set(arms)  # six subjects reach both arms (50/50; fixed by the hash)


def test_grpc_and_http_give_the_same_greedy_answer(
    openai_client: OpenAI, http_server: ServerThread, base_model: str
) -> None:
    """The contract: one request, two transports, one answer (and the same token counts)."""
    with AssistantClient(http_server.target, timeout=60) as grpc_client:
        for model, adapter in ((base_model, None), ("beta", "beta")):
            options: dict[str, Any] = {"adapter": adapter} if adapter else {}
            over_grpc = grpc_client.generate(Q, max_tokens=20, temperature=0, **options)
            over_http = _chat(openai_client, model, max_tokens=20, temperature=0)
            assert over_http.choices[0].message.content == over_grpc.text
            assert over_http.usage.prompt_tokens == over_grpc.usage.prompt_tokens  # type: ignore[union-attr]
            assert over_http.usage.completion_tokens == over_grpc.usage.completion_tokens  # type: ignore[union-attr]
            streamed = "".join(
                d.delta for d in grpc_client.stream(Q, max_tokens=20, temperature=0, **options)
            )
            assert streamed == over_grpc.text
