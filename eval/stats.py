"""Paired statistics for comparing arms on the same items.

- **Cluster bootstrap** (:class:`ClusterBootstrap`): items are grouped (by default by source
  document, since questions on one document are not independent); each resample draws as many
  groups as there are, with replacement, and the resampled mean is the ratio
  ``sum of drawn values / number of drawn values`` (so groups of different sizes weigh by their
  size). The resample weights are drawn once and reused for every arm, metric and contrast, so
  differences between arms are paired. 95% intervals are the 2.5th and 97.5th percentiles.
  Missing values (NaN: a metric that does not apply to an item) are left out of both sums.
- **Factorial effects** (:func:`factorial_effects`) on a 2x2 of arms (a style lever, such as an
  adapter or a prompt, crossed with a context), each a per-item contrast: main effect of a factor
  = mean over the other factor's levels of (on - off); interaction = (both - lever) - (context -
  base). Simple effects (one factor at one level) are also given.
- **Significance**: exact McNemar for a binary metric compared between two arms (items treated
  as independent, as the classic test does); otherwise a two-sided sign-flip permutation test
  on the per-item contrast, flipping whole groups (valid under clustering): exact when there are
  at most 16 groups, else 10,000 seeded random flips, ``p = (1 + #{|T*| >= |T|}) / (1 + R)``.
  Two independent samples (an online A/B test's arms) use :func:`cluster_permutation_test`,
  which deals whole clusters out to the two samples at random.
- **Minimum detectable effect** at 80% power, two-sided 5%: ``(z_0.975 + z_0.80) * SE`` =
  ``2.80 * SE``, where SE is the cluster-robust standard error of the mean paired contrast,
  ``sqrt(G / (G - 1) * sum_g (S_g - N_g * mean)^2) / N`` (``s / sqrt(n)`` when every group is one
  item). It is the true effect this design would detect 80% of the time, given the spread seen.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_PERMUTATIONS = 10_000
EXACT_PERMUTATION_MAX_GROUPS = 16
MDE_MULTIPLIER = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.80)  # 2.8016


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap interval; ``n`` items (``n_groups`` groups) had a value."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_groups: int


@dataclass(frozen=True)
class Effect:
    """A paired contrast between arms with its interval, test and minimum detectable effect."""

    name: str
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # "mcnemar-exact" | "sign-flip-permutation" | "none"
    n: int  # items with a value in every arm involved
    n_groups: int
    sd: float  # standard deviation of the per-item contrast
    se: float  # cluster-robust standard error of its mean
    mde: float | None  # None when the contrast never varies (no spread to estimate power from)


_NAN = float("nan")


class ClusterBootstrap:
    """Paired cluster bootstrap over a fixed list of items (``groups[i]`` is item i's cluster)."""

    def __init__(
        self,
        groups: Sequence[str],
        n_resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
        confidence: float = 0.95,
    ) -> None:
        if n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if len(groups) == 0:
            raise ValueError("the bootstrap needs at least one item")
        labels, index = np.unique(np.asarray(list(groups), dtype=object).astype(str), return_inverse=True)
        self.n_items = len(groups)
        self.n_groups = len(labels)
        self.group_index = index
        self.n_resamples = n_resamples
        self.seed = seed
        self.confidence = confidence
        rng = np.random.default_rng(seed)
        g = self.n_groups
        # counts[b, j]: how many times resample b drew group j.
        self.counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n_resamples).astype(np.float64)

    def _check(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.n_items,):
            raise ValueError(f"expected {self.n_items} values, got shape {values.shape}")
        return values

    def group_sums(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-group sum of the defined values and per-group count of defined values."""
        values = self._check(values)
        mask = ~np.isnan(values)
        sums = np.bincount(self.group_index[mask], weights=values[mask], minlength=self.n_groups)
        counts = np.bincount(self.group_index[mask], minlength=self.n_groups).astype(np.float64)
        return sums, counts

    def resampled_means(self, values: np.ndarray) -> np.ndarray:
        """The mean in each resample (NaN where a resample drew no defined value)."""
        sums, counts = self.group_sums(values)
        num = self.counts @ sums
        den = self.counts @ counts
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    def interval(self, values: np.ndarray) -> tuple[float, float]:
        return self.percentile_interval(self.resampled_means(values))

    def percentile_interval(self, statistic: np.ndarray) -> tuple[float, float]:
        """The percentile interval of a statistic computed in each resample (NaNs left out; NaN
        bounds when none is left): for statistics of several arms' resampled means."""
        statistic = statistic[~np.isnan(statistic)]
        if statistic.size == 0:
            return _NAN, _NAN
        alpha = (1 - self.confidence) / 2
        lo, hi = np.percentile(statistic, [100 * alpha, 100 * (1 - alpha)])
        return float(lo), float(hi)

    def mean_ci(self, values: np.ndarray) -> Estimate:
        """Mean of the defined values with its percentile interval."""
        values = self._check(values)
        mask = ~np.isnan(values)
        n = int(mask.sum())
        if n == 0:
            return Estimate(_NAN, _NAN, _NAN, 0, 0)
        lo, hi = self.interval(values)
        return Estimate(float(values[mask].mean()), lo, hi, n, int(np.unique(self.group_index[mask]).size))

    def subset(self, mask: np.ndarray) -> ClusterBootstrap:
        """A bootstrap over the items where ``mask`` is true (new draws, same seed)."""
        groups = [str(g) for g in self.group_index[np.asarray(mask, dtype=bool)]]
        return ClusterBootstrap(groups, self.n_resamples, self.seed, self.confidence)


# ---------------------------------------------------------------- tests


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes (NaN pairs are skipped).

    With b = #(a right, b wrong) and c = #(a wrong, b right), ``p = min(1, 2 P(X <= min(b, c)))``
    for X ~ Binomial(b + c, 1/2); 1.0 when no pair disagrees.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mask = ~(np.isnan(a) | np.isnan(b))
    a, b = a[mask], b[mask]
    if not np.all(np.isin(a, (0.0, 1.0))) or not np.all(np.isin(b, (0.0, 1.0))):
        raise ValueError("mcnemar_exact needs binary (0/1) values")
    only_a = int(np.sum((a == 1) & (b == 0)))
    only_b = int(np.sum((a == 0) & (b == 1)))
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def sign_flip_test(
    contrast: np.ndarray,
    group_index: np.ndarray,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> float:
    """Two-sided sign-flip permutation p-value for H0: the per-item contrast is symmetric about 0.

    Signs are flipped per group (the group sums are the exchangeable units). Exact enumeration
    with at most :data:`EXACT_PERMUTATION_MAX_GROUPS` groups, else ``n_permutations`` seeded draws.
    """
    contrast = np.asarray(contrast, dtype=np.float64)
    mask = ~np.isnan(contrast)
    if not mask.any():
        return _NAN
    _, index = np.unique(np.asarray(group_index)[mask], return_inverse=True)
    sums = np.bincount(index, weights=contrast[mask])
    observed = abs(float(sums.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(sums).sum()))
    if len(sums) <= EXACT_PERMUTATION_MAX_GROUPS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(sums))))
        stats = np.abs(signs @ sums)
        return float(np.mean(stats >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([1.0, -1.0]), size=(n_permutations, len(sums)))
    stats = np.abs(signs @ sums)
    return float((1 + np.sum(stats >= observed - tol)) / (1 + n_permutations))


def cluster_permutation_test(
    a: np.ndarray,
    groups_a: Sequence[str],
    b: np.ndarray,
    groups_b: Sequence[str],
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> float:
    """Two-sided permutation p-value for H0: two independent samples of clusters (an A/B test's
    arms, clustered by subject) have the same mean.

    The statistic is the difference of the ratio means (sum / count of the defined values);
    each permutation deals whole clusters out to the two samples, keeping their cluster counts.
    ``n_permutations`` seeded draws, ``p = (1 + #{|T*| >= |T|}) / (1 + R)``. The unpaired
    counterpart of :func:`sign_flip_test`.
    """
    sums, counts, sizes = [], [], []
    for values, groups in ((a, groups_a), (b, groups_b)):
        values = np.asarray(values, dtype=np.float64)
        mask = ~np.isnan(values)
        _, index = np.unique(np.asarray(list(groups), dtype=object).astype(str)[mask], return_inverse=True)
        sums.append(np.bincount(index, weights=values[mask]))
        counts.append(np.bincount(index).astype(np.float64))
        sizes.append(len(sums[-1]))
    if 0 in sizes:
        return _NAN
    s, c, g_a = np.concatenate(sums), np.concatenate(counts), sizes[0]
    total_s, total_c = s.sum(), c.sum()
    observed = abs(s[:g_a].sum() / c[:g_a].sum() - s[g_a:].sum() / c[g_a:].sum())
    tol = 1e-9 * max(1.0, observed)
    rng = np.random.default_rng(seed)
    in_a = np.zeros(len(s))
    in_a[:g_a] = 1.0
    chunk = max(1, 2_000_000 // len(s))
    extreme = 0
    for start in range(0, n_permutations, chunk):
        rows = rng.permuted(np.tile(in_a, (min(chunk, n_permutations - start), 1)), axis=1)
        sa, ca = rows @ s, rows @ c
        extreme += int(np.sum(np.abs(sa / ca - (total_s - sa) / (total_c - ca)) >= observed - tol))
    return float((1 + extreme) / (1 + n_permutations))


def cluster_se(contrast: np.ndarray, group_index: np.ndarray) -> float:
    """Cluster-robust standard error of the mean of the defined values (0 with one group)."""
    contrast = np.asarray(contrast, dtype=np.float64)
    mask = ~np.isnan(contrast)
    n = int(mask.sum())
    if n == 0:
        return _NAN
    _, index = np.unique(np.asarray(group_index)[mask], return_inverse=True)
    sums = np.bincount(index, weights=contrast[mask])
    counts = np.bincount(index).astype(np.float64)
    g = len(sums)
    if g < 2:
        return 0.0
    mean = sums.sum() / n
    return float(math.sqrt(g / (g - 1) * float(np.sum((sums - counts * mean) ** 2))) / n)


def minimum_detectable_effect(se: float) -> float | None:
    """``2.80 * se``: the true effect detected with 80% power by a two-sided 5% test; None if se is 0."""
    if not math.isfinite(se) or se <= 0:
        return None
    return MDE_MULTIPLIER * se


# ---------------------------------------------------------------- contrasts


def contrast_effect(
    name: str,
    columns: Sequence[np.ndarray],
    weights: Sequence[float],
    bootstrap: ClusterBootstrap,
    *,
    binary: bool = False,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> Effect:
    """The mean of ``sum_k weights[k] * columns[k]`` over items defined in every column.

    Two columns with weights (1, -1) and a binary metric use McNemar; anything else uses the
    group sign-flip test.
    """
    if len(columns) != len(weights) or not columns:
        raise ValueError("contrast_effect needs one weight per column")
    stacked = np.vstack([np.asarray(c, dtype=np.float64) for c in columns])
    contrast = np.asarray(weights, dtype=np.float64) @ stacked  # NaN wherever any column is NaN
    est = bootstrap.mean_ci(contrast)
    mask = ~np.isnan(contrast)
    if est.n == 0:
        return Effect(name, _NAN, _NAN, _NAN, _NAN, "none", 0, 0, _NAN, _NAN, None)
    pairwise = len(columns) == 2 and sorted(weights) == [-1.0, 1.0]
    if binary and pairwise:
        first, second = (stacked[0], stacked[1]) if weights[0] > 0 else (stacked[1], stacked[0])
        p, test = mcnemar_exact(first[mask], second[mask]), "mcnemar-exact"
    else:
        p = sign_flip_test(contrast, bootstrap.group_index, n_permutations, seed)
        test = "sign-flip-permutation"
    se = cluster_se(contrast, bootstrap.group_index)
    sd = float(np.std(contrast[mask], ddof=1)) if est.n > 1 else 0.0
    return Effect(
        name=name,
        estimate=est.mean,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        p_value=p,
        test=test,
        n=est.n,
        n_groups=est.n_groups,
        sd=sd,
        se=se,
        mde=minimum_detectable_effect(se),
    )


def paired_difference(
    name: str, treated: np.ndarray, control: np.ndarray, bootstrap: ClusterBootstrap, *, binary: bool = False
) -> Effect:
    """``treated - control`` on the items both define."""
    return contrast_effect(name, [treated, control], [1.0, -1.0], bootstrap, binary=binary)


#: (columns weights over base, lever, context, both) of every effect of a 2x2.
FACTORIAL_CONTRASTS: dict[str, tuple[float, float, float, float]] = {
    "context": (-0.5, -0.5, 0.5, 0.5),
    "lever": (-0.5, 0.5, -0.5, 0.5),
    "interaction": (1.0, -1.0, -1.0, 1.0),
    "context_without_lever": (-1.0, 0.0, 1.0, 0.0),
    "context_with_lever": (0.0, -1.0, 0.0, 1.0),
    "lever_without_context": (-1.0, 1.0, 0.0, 0.0),
    "lever_with_context": (0.0, 0.0, -1.0, 1.0),
}


def factorial_effects(
    base: np.ndarray,
    lever: np.ndarray,
    context: np.ndarray,
    both: np.ndarray,
    bootstrap: ClusterBootstrap,
    *,
    binary: bool = False,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> dict[str, Effect]:
    """Main effects, interaction and simple effects of a 2x2 (see :data:`FACTORIAL_CONTRASTS`).

    ``context`` main effect = ((context - base) + (both - lever)) / 2; ``lever`` likewise;
    ``interaction`` = (both - lever) - (context - base). Every effect uses only the items
    defined in all four arms, so the effects add up exactly.
    """
    columns = [np.asarray(c, dtype=np.float64) for c in (base, lever, context, both)]
    common = ~np.any(np.isnan(np.vstack(columns)), axis=0)
    columns = [np.where(common, c, np.nan) for c in columns]
    effects = {}
    for name, weights in FACTORIAL_CONTRASTS.items():
        used = [(c, w) for c, w in zip(columns, weights, strict=True) if w != 0]
        effects[name] = contrast_effect(
            name,
            [c for c, _ in used],
            [w for _, w in used],
            bootstrap,
            binary=binary,
            n_permutations=n_permutations,
            seed=seed,
        )
    return effects
