"""The Experiments service over real gRPC on the tiny model: admin verbs, routing, feedback, report."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.requests import experiment_arm
from hybrid_assistant.server.experiments.model import subject_point
from tests.helpers import ServerThread

Q = "Tell me a story about a cat."
ARMS = [
    experiment_arm("style", adapter="alpha", control=True),
    experiment_arm("rag", retrieval=True, top_k=2),
]


@pytest.fixture(scope="module")
def client(shared_server: ServerThread) -> Iterator[AssistantClient]:
    with AssistantClient(shared_server.target, timeout=60) as c:
        docs = [{"id": "cats", "text": "Cats sleep a lot."}, {"id": "dogs", "text": "Dogs like walks."}]
        c.ingest(docs)  # so the rag arm has something to retrieve
        yield c


def code(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()  # type: ignore[no-any-return]


def arm_for(name: str, subject: str, share_control: float = 0.5) -> str:
    """The arm the server must pick for a 2-arm experiment (control first)."""
    return "style" if subject_point(name, subject) < share_control else "rag"


def test_create_list_update(client: AssistantClient) -> None:
    created = client.create_experiment("ab-admin", ARMS, description="style vs rag")
    assert [a.name for a in created.arms] == ["style", "rag"] and created.created_unix > 0
    assert created.arms[0].adapter == "alpha" and not created.arms[1].HasField("adapter")
    assert "ab-admin" in [e.name for e in client.list_experiments()]
    assert code(lambda: client.create_experiment("ab-admin", ARMS)) == grpc.StatusCode.ALREADY_EXISTS
    updated = client.update_experiment("ab-admin", weights={"rag": 3})
    assert [a.weight for a in updated.arms] == [1.0, 3.0]
    assert client.update_experiment("ab-admin", state="paused").state == 2
    assert client.update_experiment("ab-admin", state="running").state == 1
    assert client.update_experiment("ab-admin", state="stopped").state == 3
    assert code(lambda: client.update_experiment("ab-admin", state="running")) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert code(lambda: client.update_experiment("nope", state="paused")) == grpc.StatusCode.NOT_FOUND
    assert code(lambda: client.experiment_report("nope")) == grpc.StatusCode.NOT_FOUND
    assert code(lambda: list(client.export_request_log("nope"))) == grpc.StatusCode.NOT_FOUND
    assert code(lambda: client.update_experiment("ab-admin")) == grpc.StatusCode.INVALID_ARGUMENT


def test_invalid_definitions_report_every_problem(client: AssistantClient) -> None:
    bad = [experiment_arm("a", weight=-1), experiment_arm("a", retrieval=True, top_k=10_000)]
    with pytest.raises(grpc.RpcError) as info:
        client.create_experiment("bad experiment", bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for fragment in ("'bad experiment'", "'a' is used", "exactly one arm must be the control", "top_k"):
        assert fragment in info.value.details()


def test_requests_get_the_assigned_arm_stably(client: AssistantClient) -> None:
    client.create_experiment("ab-route", ARMS)
    seen = set()
    for i in range(12):
        subject = f"user-{i}"
        first = client.generate(Q, experiment="ab-route", subject_key=subject, max_tokens=2)
        again = client.generate(Q, experiment="ab-route", subject_key=subject, max_tokens=2)
        expected = arm_for("ab-route", subject)
        assert first.experiment == "ab-route" and first.arm == again.arm == expected
        assert first.adapter == ("alpha" if expected == "style" else "")
        seen.add(first.arm)
    assert seen == {"style", "rag"}
    # Outside an experiment the arm label stays canonical.
    assert client.generate(Q, adapter="beta", max_tokens=2).arm == "adapter:beta"


def test_conflicting_or_incomplete_requests_are_refused(client: AssistantClient) -> None:
    client.create_experiment("ab-conflict", ARMS)
    style_subject = next(f"s{i}" for i in range(100) if arm_for("ab-conflict", f"s{i}") == "style")
    rag_subject = next(f"s{i}" for i in range(100) if arm_for("ab-conflict", f"s{i}") == "rag")
    options = {"experiment": "ab-conflict", "max_tokens": 2}

    def generate(**extra: Any) -> Any:
        return client.generate(Q, **options, **extra)

    assert (
        code(lambda: generate(subject_key=style_subject, adapter="beta")) == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        code(lambda: generate(subject_key=style_subject, retrieval=True)) == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        code(lambda: generate(subject_key=rag_subject, adapter="alpha")) == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert code(lambda: generate(subject_key=rag_subject, retrieval=True, top_k=5)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    # Repeating exactly what the arm does is allowed.
    assert generate(subject_key=style_subject, adapter="alpha").arm == "style"
    assert generate(subject_key=rag_subject, retrieval=True, top_k=2).arm == "rag"
    assert code(lambda: generate(subject_key="")) == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        code(lambda: client.generate(Q, experiment="missing", subject_key="u")) == grpc.StatusCode.NOT_FOUND
    )


def test_an_arm_with_an_unknown_adapter_is_not_found_at_request_time(client: AssistantClient) -> None:
    arms = [experiment_arm("base", control=True, weight=0), experiment_arm("ghost", adapter="ghost")]
    client.create_experiment("ab-ghost", arms)  # adapters are names: not checked at creation
    assert (
        code(lambda: client.generate(Q, experiment="ab-ghost", subject_key="u1")) == grpc.StatusCode.NOT_FOUND
    )
    report = client.experiment_report("ab-ghost")
    ghost = next(a for a in report.arms if a.arm == "ghost")
    assert ghost.requests == 1 and ghost.errors == 1


def test_paused_serves_the_control_and_is_left_out_of_the_report(client: AssistantClient) -> None:
    client.create_experiment("ab-pause", ARMS)
    rag_subject = next(f"p{i}" for i in range(100) if arm_for("ab-pause", f"p{i}") == "rag")
    assert client.generate(Q, experiment="ab-pause", subject_key=rag_subject, max_tokens=2).arm == "rag"
    client.update_experiment("ab-pause", state="paused")
    paused = client.generate(Q, experiment="ab-pause", subject_key=rag_subject, max_tokens=2)
    assert paused.arm == "style" and paused.adapter == "alpha"
    client.update_experiment("ab-pause", state="running")
    assert client.generate(Q, experiment="ab-pause", subject_key=rag_subject, max_tokens=2).arm == "rag"
    report = client.experiment_report("ab-pause")
    assert report.excluded_requests == 1
    assert {a.arm: a.requests for a in report.arms} == {"style": 0, "rag": 2}


def test_feedback_not_found_duplicate_and_conflict(client: AssistantClient) -> None:
    assert code(lambda: client.record_feedback("no-such-request", "thumbs", 1)) == grpc.StatusCode.NOT_FOUND
    # Right after the answer (the log row may still be queued): found.
    reply = client.generate(Q, max_tokens=2)
    assert client.record_feedback(reply.request_id, "thumbs", True).duplicate is False
    assert client.record_feedback(reply.request_id, "thumbs", 1.0).duplicate is True
    assert client.record_feedback(reply.request_id, "rating", 4).duplicate is False
    assert (
        code(lambda: client.record_feedback(reply.request_id, "thumbs", 0)) == grpc.StatusCode.ALREADY_EXISTS
    )
    assert code(lambda: client.record_feedback(reply.request_id, "bad metric", 1)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert code(lambda: client.record_feedback(reply.request_id, "x", float("nan"))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    # The log row: every served request, not only experiments.
    rows = [r for r in client.export_request_log() if r.request_id == reply.request_id]
    assert len(rows) == 1 and rows[0].status == "ok" and rows[0].arm == "base"
    assert dict(rows[0].feedback) == {"thumbs": 1.0, "rating": 4.0}
    assert rows[0].completion_tokens >= 1 and rows[0].total_ms > 0


def test_admin_calls_need_the_token(start_server: Callable[..., ServerThread]) -> None:
    server = start_server(admin_token="s3cret", knowledge=False)
    with AssistantClient(server.target, timeout=60) as anonymous:
        assert code(lambda: anonymous.create_experiment("ab", ARMS)) == grpc.StatusCode.UNAUTHENTICATED
        assert code(lambda: list(anonymous.export_request_log())) == grpc.StatusCode.UNAUTHENTICATED
        with AssistantClient(server.target, token="s3cret", timeout=60) as admin:
            admin.create_experiment("ab", [experiment_arm("a", control=True), experiment_arm("b")])
            code_update = code(lambda: anonymous.update_experiment("ab", state="paused"))
            assert code_update == grpc.StatusCode.UNAUTHENTICATED
            assert admin.update_experiment("ab", state="paused").state == 2
            assert list(admin.export_request_log()) == []
        # Reading is open: listing, reports, answering and feedback.
        assert [e.name for e in anonymous.list_experiments()] == ["ab"]
        assert anonymous.experiment_report("ab").name == "ab"


def test_configured_experiments_are_created_and_survive_restarts(make_settings: Callable[..., Any]) -> None:
    experiments = [
        {
            "name": "from-config",
            "description": "configured",
            "arms": [{"name": "base", "control": True}, {"name": "rag", "retrieval": True, "weight": 2}],
        }
    ]
    settings = make_settings(knowledge=False, experiments=experiments)
    server = ServerThread(settings)
    try:
        server.wait_ready()
        with AssistantClient(server.target, timeout=60) as client:
            (experiment,) = client.list_experiments()
            assert experiment.name == "from-config" and [a.weight for a in experiment.arms] == [1.0, 2.0]
            client.update_experiment("from-config", state="paused", weights={"rag": 5})
    finally:
        server.stop()
    server = ServerThread(settings)  # the same config again: the stored (paused, re-weighted) one wins
    try:
        server.wait_ready()
        with AssistantClient(server.target, timeout=60) as client:
            (experiment,) = client.list_experiments()
            assert experiment.state == 2 and [a.weight for a in experiment.arms] == [1.0, 5.0]
    finally:
        server.stop()


def test_a_reused_request_id_is_already_exists_and_never_replaces_the_row(client: AssistantClient) -> None:
    client.create_experiment("ab-ids", ARMS)
    victim = next(f"v{i}" for i in range(100) if arm_for("ab-ids", f"v{i}") == "style")
    first = client.generate(Q, experiment="ab-ids", subject_key=victim, request_id="shared-id", max_tokens=2)
    assert first.request_id == "shared-id" and first.arm == "style"
    # Still queued for the log writer, then stored: both are refused, experiment or not.
    hijack = next(f"h{i}" for i in range(100) if arm_for("ab-ids", f"h{i}") == "rag")
    again = lambda: client.generate(  # noqa: E731
        Q, experiment="ab-ids", subject_key=hijack, request_id="shared-id", max_tokens=2
    )
    with pytest.raises(grpc.RpcError) as info:
        again()
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS and "'shared-id'" in info.value.details()
    rows = [r for r in client.export_request_log() if r.request_id == "shared-id"]  # flushes the log
    assert code(again) == grpc.StatusCode.ALREADY_EXISTS
    assert code(lambda: client.generate(Q, request_id="shared-id", max_tokens=2)) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    assert code(lambda: list(client.stream(Q, request_id="shared-id", max_tokens=2))) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    after = [r for r in client.export_request_log() if r.request_id == "shared-id"]
    assert len(rows) == 1 and after == rows
    assert (after[0].subject_key, after[0].arm, after[0].status) == (victim, "style", "ok")
    # The server still answers, and a fresh id works.
    assert client.generate(Q, request_id="fresh-id", max_tokens=2).request_id == "fresh-id"


def test_concurrent_requests_with_one_id_cannot_both_run(client: AssistantClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> str:
        try:
            client.generate(Q, request_id="racing-id", max_tokens=8)
        except grpc.RpcError as exc:
            return exc.code().name
        return "OK"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert sorted(results) == ["ALREADY_EXISTS"] * 7 + ["OK"], results
    assert len([r for r in client.export_request_log() if r.request_id == "racing-id"]) == 1


def test_hostile_experiment_inputs_are_invalid_argument_with_short_messages(client: AssistantClient) -> None:
    huge = "n" * 1_000_000

    def short_error(call: Callable[[], Any], expected: grpc.StatusCode) -> str:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == expected, info.value.details()
        assert len(info.value.details()) < 16_000
        return info.value.details()  # type: ignore[no-any-return]

    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    short_error(lambda: client.create_experiment(huge, ARMS), invalid)
    many = [experiment_arm(f"a{i}", control=i == 0) for i in range(10_000)]
    assert "got 10000" in short_error(lambda: client.create_experiment("many", many), invalid)
    heavy = [experiment_arm("a", control=True, weight=1e308), experiment_arm("b", weight=1e308)]
    assert "1e+308" in short_error(lambda: client.create_experiment("heavy", heavy), invalid)
    client.create_experiment("ab-hostile", ARMS)
    short_error(lambda: client.update_experiment("ab-hostile", weights={"rag": 1e308}), invalid)
    short_error(lambda: client.update_experiment("ab-hostile", weights={huge: 1.0}), invalid)
    short_error(lambda: client.update_experiment(huge, state="paused"), not_found)
    short_error(lambda: client.experiment_report(huge), not_found)
    short_error(lambda: list(client.export_request_log(huge)), not_found)
    short_error(lambda: list(client.export_request_log(since=float("nan"))), invalid)
    short_error(lambda: list(client.export_request_log(until=float("-inf"))), invalid)
    short_error(lambda: client.record_feedback(huge, "thumbs", 1), invalid)
    short_error(lambda: client.record_feedback("x", huge, 1), invalid)
    short_error(lambda: client.record_feedback("x", "thumbs", float("inf")), invalid)
    short_error(lambda: client.generate(Q, experiment=huge, subject_key="u"), not_found)
    assert client.generate(Q, max_tokens=2).usage.completion_tokens >= 1  # still serving
