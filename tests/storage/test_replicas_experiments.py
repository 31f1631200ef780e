"""Three real server processes on one PostgreSQL, driven by a client that round-robins across them:
shared experiments (same arm everywhere, changes seen everywhere), feedback through any replica,
reports that count each request once, and no acknowledged feedback lost to ``kill -9`` of a
replica or to a PostgreSQL restart during traffic."""

from __future__ import annotations

import itertools
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.process import ServerProcess, free_port
from hybrid_assistant.requests import experiment_arm
from hybrid_assistant.testing.postgres import PostgresServer

REPLICAS = 3
ARMS = [experiment_arm("a", control=True), experiment_arm("b"), experiment_arm("c")]
DROPPED = re.compile(r"^hybrid_assistant_request_log_dropped_total (\S+)$", re.M)


class Replica:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.metrics_port = free_port()
        self.env = {**env, "HA_METRICS_PORT": str(self.metrics_port)}
        self.log = log
        self.process = ServerProcess(env=self.env, log=log)
        self.client = AssistantClient(self.process.target, timeout=60)

    def restart(self) -> None:
        self.client.close()
        self.process.stop()
        self.process = ServerProcess(env=self.env, log=self.log.with_suffix(".restarted.log"))
        self.client = AssistantClient(self.process.target, timeout=60)
        self.process.wait_ready(timeout=300)

    def dropped(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as page:
            match = DROPPED.search(page.read().decode())
        assert match is not None
        return float(match.group(1))

    def close(self) -> None:
        self.client.close()
        self.process.stop()


class Cluster:
    def __init__(self, replicas: list[Replica], dsn: str) -> None:
        self.replicas = replicas
        self.dsn = dsn
        self._turn = itertools.count()

    def next(self) -> Replica:
        """Round robin, as a load balancer would spread requests."""
        return self.replicas[next(self._turn) % len(self.replicas)]

    def rows(self, experiment: str) -> dict[str, Any]:
        return {r.request_id: r for r in self.replicas[0].client.export_request_log(experiment)}

    def count(self, experiment: str) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM requests WHERE experiment = %s", (experiment,)
            ).fetchone()
        assert row is not None
        return int(row[0])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresServer, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    dsn = postgres.create_database("replicas")
    root = tmp_path_factory.mktemp("replicas")
    replicas = []
    try:
        for index in range(REPLICAS):
            env = {
                "HA_DATABASE_URL": dsn,
                "HA_MODEL_PATH": str(tiny_model_dir),
                "HA_DATA_DIR": str(root / f"data{index}"),
                "HA_THREADS": "1",
                "HA_KNOWLEDGE": "false",
                "HA_MAX_TOTAL_TOKENS": "512",
                "HA_MAX_PROMPT_TOKENS": "384",
                "HA_DEFAULT_MAX_TOKENS": "2",
                "HA_SHUTDOWN_GRACE_S": "2",
            }
            replicas.append(Replica(env, root / f"replica{index}.log"))
        for replica in replicas:  # started together above: they migrate the schema concurrently
            replica.process.wait_ready(timeout=300)
        yield Cluster(replicas, dsn)
    finally:
        for replica in replicas:
            replica.close()


def ask(replica: Replica, experiment: str, subject: str) -> Any:
    return replica.client.generate("Hi.", experiment=experiment, subject_key=subject, max_tokens=1)


def test_every_replica_assigns_alike_and_follows_changes(cluster: Cluster) -> None:
    first, *others = cluster.replicas
    first.client.create_experiment("shared", ARMS)
    seen = wait_for(
        lambda: all("shared" in [e.name for e in r.client.list_experiments()] for r in others),
        5,
        "a new experiment on every replica",
    )
    assert seen < 3.0
    subjects = [f"user-{i}" for i in range(12)]
    arms = {s: {ask(r, "shared", s).arm for r in cluster.replicas} for s in subjects}
    assert all(len(found) == 1 for found in arms.values()), arms
    assert len({next(iter(found)) for found in arms.values()}) > 1  # the hash spreads subjects

    # A weight change through one replica reaches every replica: all traffic to "c".
    others[0].client.update_experiment("shared", weights={"a": 0, "b": 0})
    wait_for(
        lambda: all(ask(r, "shared", s).arm == "c" for r in cluster.replicas for s in subjects[:4]),
        5,
        "the new weights on every replica",
    )
    # Stopped through another: every replica serves the control, out of the test; stop is final.
    others[1].client.update_experiment("shared", state="stopped")
    wait_for(
        lambda: all(ask(r, "shared", "user-0").arm == "a" for r in cluster.replicas),
        5,
        "the stop on every replica",
    )
    with pytest.raises(grpc.RpcError) as caught:
        first.client.update_experiment("shared", state="running")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_feedback_lands_through_another_replica(cluster: Cluster) -> None:
    cluster.replicas[0].client.create_experiment("feedback", ARMS)
    wait_for(
        lambda: all("feedback" in [e.name for e in r.client.list_experiments()] for r in cluster.replicas),
        5,
        "the experiment on every replica",
    )
    acknowledged = {}
    for i in range(12):
        serving = cluster.next()
        reply = ask(serving, "feedback", f"s{i}")
        other = cluster.replicas[(cluster.replicas.index(serving) + 1) % REPLICAS]
        # At once: the serving replica may not have written its row yet; the other one waits for it.
        assert other.client.record_feedback(reply.request_id, "thumbs", i % 2).duplicate is False
        acknowledged[reply.request_id] = float(i % 2)
    third = cluster.replicas[2].client
    assert third.record_feedback(
        next(iter(acknowledged)), "thumbs", next(iter(acknowledged.values()))
    ).duplicate
    with pytest.raises(grpc.RpcError) as caught:
        third.record_feedback("never-served", "thumbs", 1)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    rows = cluster.rows("feedback")
    assert {rid: dict(rows[rid].feedback)["thumbs"] for rid in acknowledged} == acknowledged


def test_the_report_counts_every_request_once(cluster: Cluster) -> None:
    cluster.replicas[1].client.create_experiment("count", ARMS)
    wait_for(
        lambda: all("count" in [e.name for e in r.client.list_experiments()] for r in cluster.replicas),
        5,
        "the experiment on every replica",
    )
    served = [ask(cluster.next(), "count", f"subject-{i % 10}") for i in range(30)]
    for reply in served[:9]:
        cluster.next().client.record_feedback(reply.request_id, "stars", 4)

    def total(report: Any) -> int:
        return sum(arm.requests for arm in report.arms)

    # Each replica writes its own rows within moments; then every replica's report sees all 30.
    wait_for(lambda: cluster.count("count") == 30, 5, "every replica's rows")
    for replica in cluster.replicas:
        report = replica.client.experiment_report("count")
        assert total(report) == 30
        per_arm = {arm.arm: arm.requests for arm in report.arms}
        assert per_arm == {arm: sum(r.arm == arm for r in served) for arm in per_arm}
        assert sum(m.n for arm in report.arms for m in arm.metrics if m.metric == "stars") == 9
    rows = cluster.rows("count")
    assert sorted(rows) == sorted(r.request_id for r in served)


def test_kill_9_of_a_replica_loses_no_acknowledged_feedback(cluster: Cluster) -> None:
    cluster.replicas[0].client.create_experiment("crash", ARMS)
    wait_for(
        lambda: all("crash" in [e.name for e in r.client.list_experiments()] for r in cluster.replicas),
        5,
        "the experiment on every replica",
    )
    acknowledged: dict[str, float] = {}
    victim = cluster.replicas[2]
    stop = threading.Event()
    failures: list[grpc.StatusCode] = []

    def traffic(worker: int) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            serving, feedback = cluster.replicas[i % REPLICAS], cluster.replicas[(i + worker + 1) % REPLICAS]
            try:
                reply = ask(serving, "crash", f"w{worker}-{i}")
                if feedback.client.record_feedback(reply.request_id, "thumbs", i % 2).duplicate is False:
                    acknowledged[reply.request_id] = float(i % 2)
            except grpc.RpcError as exc:  # the killed replica, or feedback for its lost rows
                failures.append(exc.code())

    workers = [threading.Thread(target=traffic, args=(w,)) for w in range(2)]
    for worker in workers:
        worker.start()
    wait_for(lambda: len(acknowledged) >= 10, 60, "traffic before the kill")
    victim.process.proc.kill()  # SIGKILL: no drain, its queued log rows die with it
    victim.process.proc.wait(30)
    before = len(acknowledged)
    wait_for(lambda: len(acknowledged) >= before + 10, 60, "traffic after the kill")
    stop.set()
    for worker in workers:
        worker.join(60)
    assert failures, "the victim's requests should have failed after the kill"
    assert set(failures) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND}, failures
    rows = cluster.rows("crash")
    assert {rid: dict(rows[rid].feedback).get("thumbs") for rid in acknowledged} == acknowledged
    victim.restart()


def test_a_postgres_restart_during_traffic_loses_nothing_acknowledged(
    cluster: Cluster, postgres: PostgresServer
) -> None:
    cluster.replicas[0].client.create_experiment("outage", ARMS)
    wait_for(
        lambda: all("outage" in [e.name for e in r.client.list_experiments()] for r in cluster.replicas),
        5,
        "the experiment on every replica",
    )
    dropped_before = sum(r.dropped() for r in cluster.replicas)
    served: list[str] = []
    acknowledged: dict[str, float] = {}
    unavailable: list[str] = []
    generate_errors: list[grpc.StatusCode] = []
    stop = threading.Event()

    def traffic(worker: int) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            serving = cluster.replicas[(i + worker) % REPLICAS]
            try:
                reply = ask(serving, "outage", f"w{worker}-{i % 7}")
            except grpc.RpcError as exc:
                generate_errors.append(exc.code())
                continue
            served.append(reply.request_id)
            if i % 3 == 0:
                other = cluster.replicas[(i + worker + 1) % REPLICAS]
                try:
                    other.client.record_feedback(reply.request_id, "thumbs", 1, timeout=30)
                    acknowledged[reply.request_id] = 1.0
                except grpc.RpcError as exc:  # the database is down: not acknowledged, say so
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND), exc
                    unavailable.append(reply.request_id)

    workers = [threading.Thread(target=traffic, args=(w,)) for w in range(2)]
    for worker in workers:
        worker.start()
    wait_for(lambda: len(served) >= 15, 60, "traffic before the restart")
    postgres.stop()
    during = len(served)
    wait_for(lambda: len(served) >= during + 15, 60, "serving while PostgreSQL is down")
    postgres.start()
    after = len(served)
    wait_for(lambda: len(served) >= after + 15, 60, "traffic after the restart")
    stop.set()
    for worker in workers:
        worker.join(90)
    assert generate_errors == []  # serving never needed the database
    dropped = sum(r.dropped() for r in cluster.replicas) - dropped_before
    # The writers catch up: every served request is logged or counted as dropped, never lost silently.
    wait_for(lambda: cluster.count("outage") + dropped == len(served), 15, "the log catching up")
    rows = cluster.rows("outage")
    assert set(rows) <= set(served)
    assert {rid: dict(rows[rid].feedback).get("thumbs") for rid in acknowledged} == acknowledged


def test_a_replica_refuses_a_newer_schema(cluster: Cluster, tmp_path: Path) -> None:
    with psycopg.connect(cluster.dsn) as conn:
        conn.execute("UPDATE schema_version SET version = version + 1 WHERE component = 'experiments'")
    try:
        process = ServerProcess(
            env={**cluster.replicas[0].env, "HA_METRICS_PORT": str(free_port())}, log=tmp_path / "new.log"
        )
        assert process.proc.wait(120) == 1
        process.stop()
        text = (tmp_path / "new.log").read_text()
        assert "experiments schema is at version 2, but this hybrid-assistant knows versions up to 1" in text
    finally:
        with psycopg.connect(cluster.dsn) as conn:
            conn.execute("UPDATE schema_version SET version = version - 1 WHERE component = 'experiments'")
