"""Every error status of the HTTP API, in OpenAI's shape, and hostile bodies that must get a clear
status (never a crash or a hang), after which the server still answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.helpers import ServerThread
from tests.http.conftest import TOKEN

Q = "What is the capital of France?"


def _post(server: ServerThread, path: str, body: Any = None, **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.http_url}{path}", json=body, timeout=60, **kw)


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_400_lists_every_problem_at_once(openai_client: OpenAI, base_model: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model=base_model,
            messages=[{"role": "user", "content": Q}],
            n=2,
            logprobs=True,
            tools=[{"type": "function", "function": {"name": "f"}}],
            presence_penalty=0.5,
            response_format={"type": "json_object"},
            extra_body={"colour": "blue", "top_k": "many"},
        )
    assert info.value.status_code == 400
    error = info.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error"
    message = error["message"]
    for field in ("n", "logprobs", "tools", "presence_penalty", "response_format", "colour", "top_k"):
        assert f"{field}:" in message, (field, message)
    assert "not supported" in message and "unknown field" in message
    assert error["param"] == "top_k"  # the first field at fault


def test_400_from_the_core_lists_its_problems_too(openai_client: OpenAI, base_model: str) -> None:
    """The core's own checks (the same as gRPC's), all in one message."""
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model=base_model,
            messages=[{"role": "robot", "content": " "}],
            temperature=5,
            top_p=0,
            stop=["x" * 200],
        )
    message = info.value.body["message"]  # type: ignore[index]
    for part in ("messages[0].role", "messages[0].content is empty", "temperature", "top_p", "stop[0]"):
        assert part in message, (part, message)
    assert info.value.body["code"] == "invalid_argument"  # type: ignore[index]


def test_neutral_values_of_unsupported_fields_are_accepted(openai_client: OpenAI, base_model: str) -> None:
    reply = openai_client.chat.completions.create(
        model=base_model,
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": Q}],
        n=1,
        logprobs=False,
        presence_penalty=0,
        frequency_penalty=0.0,
        tools=[],
        response_format={"type": "text"},
        max_completion_tokens=4,
        stop="\n\n",
    )
    assert reply.usage is not None and reply.usage.completion_tokens <= 4


def test_404_unknown_model(openai_client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": Q}])
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found" and body["param"] == "model"
    assert "alpha" in body["message"]
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("gpt-4o")


def test_admin_endpoints_need_the_token_and_load_an_adapter_as_a_model(
    http_server: ServerThread, openai_client: OpenAI, tiny_adapters: dict[str, Any]
) -> None:
    body = {"lora_name": "gamma", "lora_path": str(tiny_adapters["alpha"])}
    error = _error(_post(http_server, "/v1/load_lora_adapter", body), 401)
    assert error["type"] == "authentication_error" and "Bearer" in error["message"]
    wrong = {"Authorization": "Bearer nope"}
    _error(_post(http_server, "/v1/load_lora_adapter", body, headers=wrong), 401)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    loaded = _post(http_server, "/v1/load_lora_adapter", body, headers=admin)
    assert loaded.status_code == 200 and "gamma" in loaded.text
    try:
        assert "gamma" in {m.id for m in openai_client.models.list()}
        reply = openai_client.chat.completions.create(
            model="gamma", messages=[{"role": "user", "content": Q}], max_tokens=12, temperature=0
        )
        alpha = openai_client.chat.completions.create(
            model="alpha", messages=[{"role": "user", "content": Q}], max_tokens=12, temperature=0
        )
        assert reply.choices[0].message.content == alpha.choices[0].message.content  # same weights
        conflict = _error(_post(http_server, "/v1/load_lora_adapter", body, headers=admin), 409)
        assert conflict["code"] == "already_exists"
        replaced = _post(http_server, "/v1/load_lora_adapter", {**body, "load_inplace": True}, headers=admin)
        assert replaced.status_code == 200
        outside = {"lora_name": "evil", "lora_path": "/etc"}
        assert _error(_post(http_server, "/v1/load_lora_adapter", outside, headers=admin), 400)["message"]
    finally:
        unloaded = _post(http_server, "/v1/unload_lora_adapter", {"lora_name": "gamma"}, headers=admin)
    assert unloaded.status_code == 200
    _error(_post(http_server, "/v1/unload_lora_adapter", {"lora_name": "gamma"}, headers=admin), 404)
    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="gamma", messages=[{"role": "user", "content": Q}])


def test_429_when_the_queue_is_full(start_http_server: Callable[..., ServerThread]) -> None:
    server = start_http_server(max_batch_size=1, max_queue=1)
    model = server.app.engine.model_info.name
    body = {"model": model, "messages": [{"role": "user", "content": Q}], "max_tokens": 60, "temperature": 0}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=120) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(6)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert 429 in statuses and 200 in statuses, statuses
    error = _error(next(r for r in responses if r.status_code == 429), 429)
    assert error["type"] == "rate_limit_error" and error["code"] == "resource_exhausted"
    assert "max_queue" in error["message"]
    # And the server still serves afterwards.
    assert _post(server, "/v1/chat/completions", {**body, "max_tokens": 2}).status_code == 200


def test_503_and_health_while_not_serving(start_http_server: Callable[..., ServerThread]) -> None:
    server = start_http_server(wait=False)
    body = {"model": "any", "messages": [{"role": "user", "content": Q}], "max_tokens": 2}

    def check_not_serving(client: httpx.Client) -> bool:
        """True if the server answered as warming up (503 twice), False once it serves."""
        health = client.get("/health")
        response = client.post("/v1/chat/completions", json=body)
        if response.status_code != 503:  # ready: now the unknown model is what is wrong
            assert _error(response, 404)["code"] == "model_not_found"
            return False
        assert _error(response, 503)["type"] == "service_unavailable_error"
        assert health.status_code == 503 and health.json() == {"status": "not_serving"}
        return True

    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        # During warm-up (the tiny model may be ready before the first request: not asserted).
        deadline = time.monotonic() + 60
        while check_not_serving(client) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.get("/health").json() == {"status": "serving"}
        # Not serving, as while warming up or draining (deterministic): 503 on both.
        server.app.core.ready = False
        try:
            assert check_not_serving(client)
        finally:
            server.app.core.ready = True
        assert client.get("/health").status_code == 200
        model = server.app.engine.model_info.name
        assert client.post("/v1/chat/completions", json={**body, "model": model}).status_code == 200


@pytest.mark.parametrize(
    ("content", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe\x00garbage", 400, ""),
        (b"[1, 2, 3]", 400, "JSON object"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            400,
            "temperature",
        ),
        (b'{"model": 7, "messages": "hi", "stream": "yes"}', 400, "model"),
        (b"null", 400, ""),
        (b"", 400, ""),
    ],
)
def test_hostile_bodies_get_a_clear_400(
    http_server: ServerThread, content: bytes, status: int, says: str
) -> None:
    response = httpx.post(
        f"{http_server.http_url}/v1/chat/completions",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert says in _error(response, status)["message"]


def test_hostile_sizes_get_a_clear_status_and_the_server_still_answers(
    http_server: ServerThread, base_model: str
) -> None:
    huge = httpx.post(
        f"{http_server.http_url}/v1/chat/completions",
        content=b'{"model": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert _error(huge, 413)["message"]
    many = [{"role": "user", "content": "hi"}] * 10_000
    error = _error(_post(http_server, "/v1/chat/completions", {"model": base_model, "messages": many}), 400)
    assert "messages has 10000 entries" in error["message"]
    body = {"model": base_model, "messages": [{"role": "user", "content": Q}], "max_tokens": 10**12}
    assert "max_tokens" in _error(_post(http_server, "/v1/chat/completions", body), 400)["message"]
    long_prompt = {"model": base_model, "messages": [{"role": "user", "content": "word " * 5000}]}
    assert _error(_post(http_server, "/v1/chat/completions", long_prompt), 400)["message"]
    assert _error(_post(http_server, "/v1/completions", {"model": base_model, "prompt": ["a", "b"]}), 400)
    assert httpx.get(f"{http_server.http_url}/nowhere", timeout=10).status_code == 404
    assert httpx.get(f"{http_server.http_url}/v1/chat/completions", timeout=10).status_code == 405
    # Still serving.
    assert httpx.get(f"{http_server.http_url}/health", timeout=10).status_code == 200
    ok = _post(http_server, "/v1/chat/completions", {**body, "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1


def test_a_chunked_body_over_the_limit_is_413_too(http_server: ServerThread) -> None:
    def chunks() -> Any:
        yield b'{"model": "'
        for _ in range(5):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    response = httpx.post(
        f"{http_server.http_url}/v1/chat/completions",
        content=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert _error(response, 413)["code"] == "body_too_large"
    assert httpx.get(f"{http_server.http_url}/health", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"min_tokens": -1}, "sampling.min_tokens is -1; expected 0..512"),
        ({"min_tokens": 10**12}, "sampling.min_tokens is 1000000000000"),
        ({"min_tokens": 9, "max_tokens": 4}, "sampling.min_tokens (9) exceeds sampling.max_tokens (4)"),
        ({"min_tokens": 17}, "min_tokens (17) exceeds max_tokens (16"),  # the server's default
        ({"min_tokens": "5"}, "min_tokens"),
        ({"min_tokens": 2.5}, "min_tokens"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
        ({"ignore_eos": 1}, "ignore_eos"),
    ],
)
def test_hostile_min_tokens_and_ignore_eos_get_a_clear_400(
    http_server: ServerThread, base_model: str, extra: dict[str, Any], says: str
) -> None:
    """Issue 11 #8: vLLM's extras are read as strictly as the rest of the body."""
    body = {"model": base_model, "messages": [{"role": "user", "content": Q}], **extra}
    assert says in _error(_post(http_server, "/v1/chat/completions", body), 400)["message"]


def test_min_tokens_problems_are_listed_with_the_others(http_server: ServerThread, base_model: str) -> None:
    body = {"model": base_model, "messages": [{"role": "user", "content": Q}], "min_tokens": -3, "top_p": 0}
    message = _error(_post(http_server, "/v1/chat/completions", body), 400)["message"]
    assert "min_tokens is -3" in message and "top_p" in message
    nan = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "min_tokens": NaN}'
    response = httpx.post(
        f"{http_server.http_url}/v1/chat/completions",
        content=nan,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert "min_tokens" in _error(response, 400)["message"]


def test_ignore_eos_and_min_tokens_fix_the_answer_length(openai_client: OpenAI, base_model: str) -> None:
    """As vLLM's OpenAI server: extra body fields; every answer then has exactly max_tokens tokens."""
    for question in (Q, "q33 hello 231"):  # the second ends with EOS at once without them
        for extra in ({"ignore_eos": True}, {"min_tokens": 9}):
            reply = openai_client.chat.completions.create(
                model=base_model,
                messages=[{"role": "user", "content": question}],
                max_tokens=9,
                temperature=0,
                extra_body=extra,
            )
            assert reply.usage is not None and reply.usage.completion_tokens == 9, extra
        completion = openai_client.completions.create(
            model=base_model, prompt=question, max_tokens=7, temperature=0, extra_body={"ignore_eos": True}
        )
        assert completion.usage is not None and completion.usage.completion_tokens == 7
        assert completion.choices[0].finish_reason == "length"
