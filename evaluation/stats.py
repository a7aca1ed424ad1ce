"""Confidence intervals for quality figures: a percentile bootstrap over prompts, clustered where prompts share a topic.

Every rate the project reports is a ratio of sums over evaluation units (prompts): prompt-level accuracy is
``sum(all followed) / n``, instruction-level accuracy ``sum(followed) / sum(instructions)``. Resampling whole units
(or whole clusters of units: prompts of one topic are not independent draws) and recomputing the ratio gives the
interval. A difference between two models is *paired*: both are resampled with the same indices, so the interval
reflects per-prompt disagreement, not two independent noises. ``n_boot=2000`` with a fixed seed: the same inputs give
the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A ratio with its bootstrap interval; ``n`` units (prompts) over ``clusters`` resampled groups."""

    value: float
    low: float
    high: float
    n: int
    clusters: int

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high, "n": self.n, "clusters": self.clusters}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _cluster_sums(num: np.ndarray, den: np.ndarray, clusters: Sequence | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of numerator and denominator (each unit its own cluster when ``clusters`` is None)."""
    if clusters is None:
        return num, den
    if len(clusters) != len(num):
        raise ValueError(f"{len(clusters)} cluster labels for {len(num)} units")
    _, index = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    return np.bincount(index, weights=num), np.bincount(index, weights=den)


def _draws(n_clusters: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n_clusters]`` resampling counts (how often each cluster is drawn in each replicate)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot).astype(np.float64)


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ratios(
    parts: Sequence[tuple[Sequence[float], Sequence[float] | None]],
    clusters: Sequence | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Point values ``[k]`` and bootstrap replicates ``[n_boot, k]`` of k ratios over the same units and draws."""
    points, samples = [], []
    w = None
    for num, den in parts:
        num_a = np.asarray(num, dtype=np.float64)
        den_a = np.ones_like(num_a) if den is None else np.asarray(den, dtype=np.float64)
        if num_a.shape != den_a.shape:
            raise ValueError(f"numerator has {num_a.size} units, denominator {den_a.size}")
        cn, cd = _cluster_sums(num_a, den_a, clusters)
        if w is None:
            w = _draws(cn.size, n_boot, seed)
        elif w.shape[1] != cn.size:
            raise ValueError("the ratios of one bootstrap must share their units")
        with np.errstate(invalid="ignore", divide="ignore"):
            points.append(num_a.sum() / den_a.sum() if den_a.sum() else np.nan)
            samples.append((w @ cn) / (w @ cd))
    return np.asarray(points), np.stack(samples, axis=1)


def _estimate(point: float, samples: np.ndarray, n: int, clusters: Sequence | None, level: float) -> Estimate:
    low, high = _interval(samples, level)
    k = n if clusters is None else len({str(c) for c in clusters})
    return Estimate(float(point), low, high, n, k)


def ratio_ci(
    num: Sequence[float],
    den: Sequence[float] | None = None,
    clusters: Sequence | None = None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> Estimate:
    """``sum(num) / sum(den)`` with a (cluster) bootstrap percentile interval; ``den`` defaults to ones (a mean)."""
    if len(num) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0)
    point, samples = bootstrap_ratios([(num, den)], clusters, n_boot, seed)
    return _estimate(point[0], samples[:, 0], len(num), clusters, level)


def mean_ratio_ci(
    parts: Sequence[tuple[Sequence[float], Sequence[float] | None]],
    clusters: Sequence | None = None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> Estimate:
    """The mean of several ratios over the same units (IFEval's mean of its four figures), resampled jointly."""
    point, samples = bootstrap_ratios(parts, clusters, n_boot, seed)
    return _estimate(point.mean(), samples.mean(axis=1), len(parts[0][0]), clusters, level)


def paired_diff_ci(
    parts_a: Sequence[tuple[Sequence[float], Sequence[float] | None]],
    parts_b: Sequence[tuple[Sequence[float], Sequence[float] | None]],
    clusters: Sequence | None = None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> Estimate:
    """B minus A for the mean of the given ratios (one ratio: that ratio), both resampled with the same draws.

    Each part is ``(numerator, denominator or None)`` per unit; A and B must list the same units in the same order.
    """
    if len(parts_a) != len(parts_b) or any(len(a[0]) != len(b[0]) for a, b in zip(parts_a, parts_b, strict=True)):
        raise ValueError("paired figures need the same units in the same order")
    pa, sa = bootstrap_ratios(parts_a, clusters, n_boot, seed)
    pb, sb = bootstrap_ratios(parts_b, clusters, n_boot, seed)
    diff = sb.mean(axis=1) - sa.mean(axis=1)
    return _estimate(pb.mean() - pa.mean(), diff, len(parts_a[0][0]), clusters, level)


def excludes_zero(e: Estimate) -> bool:
    """Whether a paired difference's interval lies wholly on one side of zero (the only case we call a difference)."""
    return bool(e.low > 0 or e.high < 0)


IF_FIGURES = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")


def if_parts(verdicts: Sequence[dict]) -> dict[str, tuple[list[int], list[int]]]:
    """The four instruction-following figures as per-prompt (numerator, denominator) lists.

    ``verdicts[i]`` holds prompt i's ``strict`` and ``loose`` lists of per-instruction booleans.
    """
    parts = {}
    for mode in ("strict", "loose"):
        parts[f"prompt_{mode}"] = ([int(all(v[mode])) for v in verdicts], [1] * len(verdicts))
        parts[f"instruction_{mode}"] = ([sum(v[mode]) for v in verdicts], [len(v[mode]) for v in verdicts])
    return parts


def instruction_parts(
    verdicts: Sequence[dict], keep: Callable[[str], bool], key: str = "instructions", mode: str = "strict"
) -> tuple[list[int], list[int], list[int]]:
    """Per-prompt (followed, asked) counts over the instructions whose type ``keep`` selects, and the indices of the
    prompts that ask at least one: the units of instruction-level accuracy on a subset of types."""
    num, den, idx = [], [], []
    for i, v in enumerate(verdicts):
        kept = [ok for t, ok in zip(v[key], v[mode], strict=True) if keep(t)]
        if kept:
            num.append(sum(kept))
            den.append(len(kept))
            idx.append(i)
    return num, den, idx


def if_figures(verdicts: Sequence[dict], clusters: Sequence | None = None) -> dict[str, dict]:
    """The four figures and their mean, each ``Estimate.to_dict()`` (value, 95 % CI, n, clusters)."""
    parts = if_parts(verdicts)
    out = {name: ratio_ci(*parts[name], clusters=clusters).to_dict() for name in IF_FIGURES}
    out["mean"] = mean_ratio_ci([parts[name] for name in IF_FIGURES], clusters=clusters).to_dict()
    return out


def if_paired_diffs(a: Sequence[dict], b: Sequence[dict], clusters: Sequence | None = None) -> dict[str, dict]:
    """B minus A for the four figures and their mean, paired over the same prompts; each with ``excludes_zero``."""
    pa, pb = if_parts(a), if_parts(b)
    diffs = {name: paired_diff_ci([pa[name]], [pb[name]], clusters=clusters) for name in IF_FIGURES}
    diffs["mean"] = paired_diff_ci([pa[n] for n in IF_FIGURES], [pb[n] for n in IF_FIGURES], clusters=clusters)
    return {name: {**e.to_dict(), "excludes_zero": excludes_zero(e)} for name, e in diffs.items()}
