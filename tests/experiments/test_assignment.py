"""Experiment definitions and assignment: stability, weights, isolation, states, validation."""

from __future__ import annotations

from collections import Counter

import pytest

from hybrid_assistant.server.core_types import RetrievalInput
from hybrid_assistant.server.errors import FailedPrecondition, InvalidArgument
from hybrid_assistant.server.experiments.model import (
    MAX_FILTER_KEYS,
    MAX_WEIGHT,
    Arm,
    Experiment,
    ExperimentState,
    new_experiment,
    subject_point,
)

SUBJECTS = [f"user-{i}" for i in range(100_000)]
RAG = RetrievalInput(enabled=True, top_k=4)


def make(name: str = "style-vs-rag", weights: tuple[float, ...] = (1.0, 1.0)) -> Experiment:
    arms = tuple(
        Arm(f"arm{i}", adapter="style" if i == 0 else "", retrieval=RAG if i else RetrievalInput(), weight=w)
        for i, w in enumerate(weights)
    )
    arms = (Arm(arms[0].name, arms[0].adapter, arms[0].retrieval, arms[0].weight, control=True), *arms[1:])
    return new_experiment(name, arms, max_top_k=50, now=0.0)


def shares(experiment: Experiment) -> dict[str, float]:
    counts = Counter(experiment.assign(s).arm.name for s in SUBJECTS)
    return {arm: counts[arm] / len(SUBJECTS) for arm in (a.name for a in experiment.arms)}


def test_same_subject_same_arm_across_instances() -> None:
    first, second = make(), make()
    assert all(first.assign(s).arm == second.assign(s).arm for s in SUBJECTS[:2000])
    assert subject_point("style-vs-rag", "user-1") == subject_point("style-vs-rag", "user-1")
    # Reloading the stored definition changes nothing.
    reloaded = Experiment.from_json(first.to_json())
    assert reloaded == first
    assert all(reloaded.assign(s).arm == first.assign(s).arm for s in SUBJECTS[:2000])


@pytest.mark.parametrize("weights", [(1, 1), (0.7, 0.3), (1, 2, 7), (5, 0, 5)])
def test_weights_hold_within_one_percent_over_100k_subjects(weights: tuple[float, ...]) -> None:
    experiment = make(weights=tuple(float(w) for w in weights))
    total = sum(weights)
    for arm, share in shares(experiment).items():
        expected = weights[int(arm[3:])] / total
        assert abs(share - expected) <= 0.01, (arm, share, expected)


def test_changing_one_experiments_weights_never_moves_subjects_of_another() -> None:
    a, b = make("exp-a"), make("exp-b")
    before = [b.assign(s).arm.name for s in SUBJECTS[:20_000]]
    a = a.with_weights({"arm0": 0.1, "arm1": 0.9})
    assert [b.assign(s).arm.name for s in SUBJECTS[:20_000]] == before
    assert a.arms[1].weight == 0.9
    # The two experiments assign independently (salted hash): at 50/50, about half agree.
    fresh = make("exp-a")
    agree = sum(fresh.assign(s).arm.name == b.assign(s).arm.name for s in SUBJECTS[:20_000]) / 20_000
    assert 0.48 < agree < 0.52


def test_weight_change_moves_only_the_minimal_fraction_in_one_direction() -> None:
    before = make(weights=(0.5, 0.5))
    after = before.with_weights({"arm0": 0.3, "arm1": 0.7})
    moved = [(before.assign(s).arm.name, after.assign(s).arm.name) for s in SUBJECTS]
    changes = Counter(pair for pair in moved if pair[0] != pair[1])
    assert set(changes) == {("arm0", "arm1")}  # only from the shrinking arm to the growing one
    assert abs(changes[("arm0", "arm1")] / len(SUBJECTS) - 0.2) <= 0.01
    # Weights back: everyone is back where they were.
    restored = after.with_weights({"arm0": 0.5, "arm1": 0.5})
    assert all(restored.assign(s).arm == before.assign(s).arm for s in SUBJECTS[:5000])


def test_paused_and_stopped_serve_control_outside_the_test() -> None:
    experiment = make(weights=(1, 1))
    paused = experiment.with_state(ExperimentState.PAUSED)
    assert {paused.assign(s).arm.name for s in SUBJECTS[:500]} == {"arm0"}
    assert not any(paused.assign(s).in_test for s in SUBJECTS[:500])
    resumed = paused.with_state(ExperimentState.RUNNING)
    assert all(resumed.assign(s) == experiment.assign(s) for s in SUBJECTS[:500])
    stopped = paused.with_state(ExperimentState.STOPPED)
    assert stopped.assign("user-1").arm.control and not stopped.assign("user-1").in_test
    assert stopped.with_state(ExperimentState.STOPPED).state is ExperimentState.STOPPED
    with pytest.raises(FailedPrecondition, match="stopped"):
        stopped.with_state(ExperimentState.RUNNING)
    with pytest.raises(FailedPrecondition, match="stopped"):
        stopped.with_weights({"arm0": 2})


def test_validation_reports_every_problem_with_its_value() -> None:
    arms = (
        Arm("a b", weight=-1, control=True),
        Arm("dup", weight=float("nan"), control=True),
        Arm("dup", retrieval=RetrievalInput(enabled=True, top_k=99, mode="fuzzy")),
    )
    with pytest.raises(InvalidArgument) as info:
        new_experiment("bad name!", arms, max_top_k=50)
    message = str(info.value)
    for fragment in (
        "'bad name!'",
        "arms[0].name is 'a b'",
        "arms[2].name 'dup' is used",
        "exactly one arm must be the control; 2 are",
        "weight of arm 'a b' is -1",
        "weight of arm 'dup' is nan",
        "top_k is 99",
        "mode is 'fuzzy'",
    ):
        assert fragment in message
    with pytest.raises(InvalidArgument, match=r"needs 2\.\.16 arms, got 1"):
        new_experiment("one", (Arm("only", control=True),), max_top_k=50)
    with pytest.raises(InvalidArgument, match="add up to 0"):
        new_experiment("zero", (Arm("a", weight=0, control=True), Arm("b", weight=0)), max_top_k=50)


def test_weight_updates_are_validated() -> None:
    experiment = make()
    with pytest.raises(InvalidArgument, match="'nope', which experiment 'style-vs-rag' does not have"):
        experiment.with_weights({"nope": 1})
    with pytest.raises(InvalidArgument, match="add up to 0"):
        experiment.with_weights({"arm0": 0, "arm1": 0})
    with pytest.raises(InvalidArgument, match="is -2"):
        experiment.with_weights({"arm1": -2})
    assert [a.weight for a in experiment.with_weights({"arm1": 3}).arms] == [1.0, 3.0]


def test_weights_are_bounded_so_their_sum_stays_finite() -> None:
    # 1e308 used to pass: the sum overflowed to inf and every subject landed in one arm.
    with pytest.raises(
        InvalidArgument, match="weight of arm 'arm1' is 1e\\+308; expected a finite number from 0 to 1000000"
    ):
        make(weights=(1e308, 1e308))
    experiment = make()
    with pytest.raises(InvalidArgument, match="is 1e\\+308"):
        experiment.with_weights({"arm0": 1e308, "arm1": 1e308})
    with pytest.raises(InvalidArgument, match="is 1000001"):
        experiment.with_weights({"arm1": MAX_WEIGHT + 1})
    top = make(weights=(MAX_WEIGHT, MAX_WEIGHT))
    assert 0.49 < shares(top)["arm0"] < 0.51


def test_hostile_definitions_get_short_messages() -> None:
    huge = "x" * 1_000_000
    many = tuple(Arm(f"a{i}", control=i == 0) for i in range(100_000))
    with pytest.raises(InvalidArgument) as info:
        new_experiment(huge, many, description=huge, max_top_k=50)
    assert "needs 2..16 arms, got 100000" in str(info.value) and len(str(info.value)) < 2000
    arms = tuple(
        Arm(
            huge + str(i),
            adapter=huge,
            weight=-1,
            control=True,
            retrieval=RetrievalInput(metadata_filter={huge: huge}),
        )
        for i in range(16)
    )
    with pytest.raises(InvalidArgument) as info:
        new_experiment("ok", arms, max_top_k=50)
    message = str(info.value)
    assert len(message) < 16_000 and "more problems" in message
    assert "arms[0].adapter is 'xxx" in message and "arms[0].retrieval.metadata_filter key 'xxx" in message
    with pytest.raises(InvalidArgument) as info:
        make().with_weights({f"{huge}{i}": 1.0 for i in range(1000)})
    assert len(str(info.value)) < 16_000


def test_arm_metadata_filters_are_bounded() -> None:
    wide = RetrievalInput(enabled=True, metadata_filter={f"k{i}": "v" for i in range(MAX_FILTER_KEYS + 1)})
    arms = (Arm("a", control=True), Arm("b", retrieval=wide))
    with pytest.raises(
        InvalidArgument, match=f"arms\\[1\\].retrieval.metadata_filter has {MAX_FILTER_KEYS + 1} keys"
    ):
        new_experiment("wide", arms, max_top_k=50)
    ok = RetrievalInput(enabled=True, metadata_filter={f"k{i}": "v" for i in range(MAX_FILTER_KEYS)})
    new_experiment("fine", (Arm("a", control=True), Arm("b", retrieval=ok)), max_top_k=50)
