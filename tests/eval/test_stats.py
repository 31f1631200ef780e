"""Statistics: hand-computed tests, effects on a constructed table, and interval coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hybrid_assistant.eval.stats import (
    FACTORIAL_CONTRASTS,
    MDE_MULTIPLIER,
    ClusterBootstrap,
    cluster_se,
    contrast_effect,
    factorial_effects,
    mcnemar_exact,
    minimum_detectable_effect,
    paired_difference,
    sign_flip_test,
)

NAN = float("nan")


def test_mcnemar_by_hand() -> None:
    # 10 pairs where only a is right, 2 where only b is right, 5 concordant.
    a = np.array([1] * 10 + [0] * 2 + [1] * 3 + [0] * 2, dtype=float)
    b = np.array([0] * 10 + [1] * 2 + [1] * 3 + [0] * 2, dtype=float)
    # p = 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(a, b) == pytest.approx(158 / 4096)
    assert mcnemar_exact(b, a) == pytest.approx(158 / 4096)
    assert mcnemar_exact(a, a) == 1.0
    # 1 vs 1 discordant: 2 * P(X <= 1 | n=2) = 2 * 3/4 > 1 -> 1.
    assert mcnemar_exact(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 1.0
    # 5 vs 0: 2 / 32.
    assert mcnemar_exact(np.ones(5), np.zeros(5)) == pytest.approx(1 / 16)
    assert mcnemar_exact(np.array([1.0, NAN]), np.array([0.0, 1.0])) == 1.0  # NaN pair skipped
    with pytest.raises(ValueError, match="binary"):
        mcnemar_exact(np.array([0.5]), np.array([1.0]))


def test_sign_flip_by_hand() -> None:
    groups = np.array([0, 1, 2])
    # T = 3; of the 8 sign patterns only +++ and --- reach |T| >= 3.
    assert sign_flip_test(np.array([1.0, 1.0, 1.0]), groups) == pytest.approx(2 / 8)
    # Two items in one group flip together: group sums (2, 1); patterns reaching |T|>=3: ++, -- => 2/4.
    assert sign_flip_test(np.array([1.0, 1.0, 1.0]), np.array([0, 0, 1])) == pytest.approx(2 / 4)
    assert sign_flip_test(np.zeros(4), np.arange(4)) == 1.0
    # Monte Carlo branch: 30 groups all positive; p is (1 + hits) / (1 + R) with hits ~ 2R / 2^30.
    p = sign_flip_test(np.ones(30), np.arange(30), n_permutations=2000, seed=1)
    assert p == pytest.approx(1 / 2001)


def test_bootstrap_mean_and_nan_handling() -> None:
    boot = ClusterBootstrap(["a", "a", "b", "c"], n_resamples=500, seed=3)
    est = boot.mean_ci(np.array([1.0, 0.0, 1.0, NAN]))
    assert est.mean == pytest.approx(2 / 3) and est.n == 3 and est.n_groups == 2
    assert 0.0 <= est.ci_low <= est.mean <= est.ci_high <= 1.0
    constant = boot.mean_ci(np.ones(4))
    assert (constant.mean, constant.ci_low, constant.ci_high) == (1.0, 1.0, 1.0)
    empty = boot.mean_ci(np.full(4, NAN))
    assert empty.n == 0 and math.isnan(empty.mean)
    with pytest.raises(ValueError, match="expected 4 values"):
        boot.mean_ci(np.ones(3))
    # Same seed and groups => same intervals (reproducible); another seed => different draws.
    again = ClusterBootstrap(["a", "a", "b", "c"], n_resamples=500, seed=3)
    assert again.mean_ci(np.array([1.0, 0.0, 1.0, NAN])) == est


def test_resamples_are_shared_so_differences_are_paired() -> None:
    rng = np.random.default_rng(0)
    n = 200
    ability = rng.normal(size=n)
    a = ability + rng.normal(0, 0.1, n)
    b = a + 0.05  # b is a shifted by exactly 0.05 on every item
    boot = ClusterBootstrap([str(i) for i in range(n)], n_resamples=1000, seed=0)
    diff = paired_difference("b - a", b, a, boot)
    assert diff.estimate == pytest.approx(0.05)
    assert diff.ci_low == pytest.approx(0.05) and diff.ci_high == pytest.approx(0.05)
    # Each arm alone is uncertain; the paired difference is not.
    assert boot.mean_ci(a).ci_high - boot.mean_ci(a).ci_low > 0.1


def test_factorial_effects_on_a_constructed_table() -> None:
    #                 item: 0  1  2  3
    base = np.array([0.0, 0.0, 1.0, 0.0])
    adapter = np.array([0.0, 1.0, 1.0, 0.0])
    context = np.array([1.0, 1.0, 1.0, 0.0])
    both = np.array([1.0, 1.0, 1.0, 1.0])
    boot = ClusterBootstrap(["0", "1", "2", "3"], n_resamples=200, seed=0)
    eff = factorial_effects(base, adapter, context, both, boot, binary=True)
    # context - base = (1,1,0,0) -> .5 ; both - adapter = (1,0,0,1) -> .5 ; main = .5
    assert eff["context"].estimate == pytest.approx(0.5)
    # adapter - base = (0,1,0,0) -> .25 ; both - context = (0,0,0,1) -> .25 ; main = .25
    assert eff["lever"].estimate == pytest.approx(0.25)
    assert eff["interaction"].estimate == pytest.approx(0.0)
    assert eff["context_without_lever"].estimate == pytest.approx(0.5)
    assert eff["context_with_lever"].estimate == pytest.approx(0.5)
    assert eff["lever_without_context"].estimate == pytest.approx(0.25)
    assert eff["lever_with_context"].estimate == pytest.approx(0.25)
    assert eff["context_without_lever"].test == "mcnemar-exact"
    assert eff["context"].test == "sign-flip-permutation"
    # context_without_lever: 2 discordant pairs, both one way -> McNemar 2 * 1/4 = 0.5.
    assert eff["context_without_lever"].p_value == pytest.approx(0.5)
    # Identities that must hold exactly.
    e = {k: v.estimate for k, v in eff.items()}
    assert e["interaction"] == pytest.approx(e["context_with_lever"] - e["context_without_lever"])
    assert e["context"] == pytest.approx((e["context_with_lever"] + e["context_without_lever"]) / 2)
    assert set(eff) == set(FACTORIAL_CONTRASTS)


def test_factorial_effects_use_only_items_defined_in_all_four_arms() -> None:
    base = np.array([0.0, 0.0, NAN])
    adapter = np.array([0.0, 1.0, 1.0])
    context = np.array([1.0, 1.0, 1.0])
    both = np.array([1.0, 1.0, 1.0])
    boot = ClusterBootstrap(["0", "1", "2"], n_resamples=100, seed=0)
    eff = factorial_effects(base, adapter, context, both, boot)
    assert {v.n for v in eff.values()} == {2}
    assert eff["lever_with_context"].estimate == 0.0


def test_mde_from_the_paired_standard_error() -> None:
    rng = np.random.default_rng(5)
    d = rng.normal(0.1, 1.0, 400)
    se = cluster_se(d, np.arange(400))
    assert se == pytest.approx(np.std(d, ddof=1) / math.sqrt(400))
    assert pytest.approx(1.959964 + 0.841621, abs=1e-5) == MDE_MULTIPLIER
    assert minimum_detectable_effect(se) == pytest.approx(2.8016 * se, rel=1e-4)
    assert minimum_detectable_effect(0.0) is None
    boot = ClusterBootstrap([str(i) for i in range(400)], n_resamples=200, seed=0)
    eff = contrast_effect("x", [d], [1.0], boot)
    assert eff.mde == pytest.approx(MDE_MULTIPLIER * se)


def test_mde_has_the_promised_power() -> None:
    """A true effect equal to the MDE is detected (sign-flip p < 0.05) about 80% of the time."""
    n, sd = 100, 1.0
    mde = MDE_MULTIPLIER * sd / math.sqrt(n)
    rejections = 0
    sims = 150
    for seed in range(sims):
        d = np.random.default_rng(seed).normal(mde, sd, n)
        rejections += sign_flip_test(d, np.arange(n), n_permutations=1000, seed=seed) < 0.05
    assert 0.68 <= rejections / sims <= 0.92


def _clustered_difference(seed: int, n_groups: int = 40, delta: float = 0.3, cluster_sd: float = 0.5):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, size=n_groups)
    groups = [f"g{g}" for g, size in enumerate(sizes) for _ in range(size)]
    shared = np.repeat(rng.normal(0, cluster_sd, n_groups), sizes)
    return groups, delta + shared + rng.normal(0, 1, len(groups))


def test_coverage_of_a_clustered_paired_difference() -> None:
    """Known effect 0.3, clusters of 1-5 correlated items: the 95% interval covers it ~95% of the time."""
    covered = 0
    for seed in range(200):
        groups, d = _clustered_difference(seed)
        est = ClusterBootstrap(groups, n_resamples=1000, seed=seed).mean_ci(d)
        covered += est.ci_low <= 0.3 <= est.ci_high
    assert 0.90 <= covered / 200 <= 0.99


def test_item_level_resampling_would_undercover_clustered_data() -> None:
    """The grouping matters: ignoring strong clusters gives intervals that are too narrow."""
    covered = 0
    for seed in range(100):
        _, d = _clustered_difference(seed, cluster_sd=1.5)
        est = ClusterBootstrap([str(i) for i in range(len(d))], n_resamples=500, seed=seed).mean_ci(d)
        covered += est.ci_low <= 0.3 <= est.ci_high
    assert covered / 100 < 0.85


def test_coverage_of_a_binary_difference_and_an_interaction() -> None:
    """Binary arms (truth +0.08) and a 2x2 interaction (truth -0.2) on clustered binary data."""
    covered_diff = covered_inter = 0
    sims = 200
    for seed in range(sims):
        rng = np.random.default_rng(seed)
        n = 150
        base = (rng.random(n) < 0.3).astype(float)
        arm = np.where(rng.random(n) < 0.6, base, rng.random(n) < 0.5).astype(float)  # E[arm] = 0.38
        boot = ClusterBootstrap([str(i) for i in range(n)], n_resamples=1000, seed=seed)
        diff = paired_difference("arm - base", arm, base, boot, binary=True)
        covered_diff += diff.ci_low <= 0.08 <= diff.ci_high

        sizes = rng.integers(1, 5, size=50)
        groups = [f"g{g}" for g, size in enumerate(sizes) for _ in range(size)]
        m = len(groups)
        # P(right): base .2, adapter .3, context .7, both .6 => interaction (.6-.3)-(.7-.2) = -0.2
        cols = [(rng.random(m) < p).astype(float) for p in (0.2, 0.3, 0.7, 0.6)]
        boot = ClusterBootstrap(groups, n_resamples=1000, seed=seed)
        inter = factorial_effects(*cols, boot, binary=True, n_permutations=100)["interaction"]
        covered_inter += inter.ci_low <= -0.2 <= inter.ci_high
    assert 0.90 <= covered_diff / sims <= 0.99
    assert 0.90 <= covered_inter / sims <= 0.99
