"""The statistical tests behind the findings (docs/FINDINGS.md says which finding uses which).

Every test here is exact or a Monte Carlo version of an exact test under its stated
exchangeability, works on per-unit values (one value per independently trained unit), and handles
ties with midranks (``scipy.stats.rankdata``'s average ranks), so AUCs pinned at 0 or 1 stay in.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats

__all__ = ["tv", "holm", "group_permutation", "sign_flip", "joint_permutation_spearman", "block_permutation_spearman",
           "welch_greater", "within_block_ranks", "permutation_greater",
           "EXHAUSTIVE", "N_RANDOM"]

EXHAUSTIVE = 20000  # enumerate every relabelling up to this many, else sample N_RANDOM
N_RANDOM = 5000


def tv(p, q) -> float:
    """Total-variation distance ½ Σ|p − q| between two spectra made unit-sum; in [0, 1]."""
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    return 0.5 * float(np.abs(p - q).sum())


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    order = np.argsort(p)
    m, out, running = len(p), [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def group_permutation(a: list[np.ndarray], b: list[np.ndarray], rng: np.random.Generator) -> tuple[float, float, float, int]:
    """Permutation test of TV(mean a, mean b) against relabelled units (vectors).

    Returns (observed, p, smallest attainable p, number of relabellings)."""
    allv = np.stack(a + b)
    na, n = len(a), len(a) + len(b)
    obs = tv(allv[:na].mean(0), allv[na:].mean(0))
    total = math.comb(n, na)
    if total <= EXHAUSTIVE:
        splits = [list(c) for c in itertools.combinations(range(n), na)]
    else:
        splits = [list(range(na))] + [list(rng.permutation(n)[:na]) for _ in range(N_RANDOM - 1)]
    null = []
    for idx in splits:
        mask = np.zeros(n, bool)
        mask[idx] = True
        null.append(tv(allv[mask].mean(0), allv[~mask].mean(0)))
    null = np.asarray(null)
    p = float((null >= obs - 1e-12).sum() / len(null))
    # With equal group sizes every split appears twice (A↔B give the same distance).
    p_min = (2.0 if na == n - na else 1.0) / min(total, len(null))
    return obs, p, p_min, len(null)


def sign_flip(values, rng: np.random.Generator, alternative: str = "less") -> tuple[float, float, float]:
    """One-sided sign-flip test of the mean of independent per-unit values, symmetric about 0
    under the null. Exact (all 2^n sign patterns) for n ≤ 14, else Monte Carlo.

    Returns (mean, p, smallest attainable p)."""
    if alternative not in ("less", "greater"):
        raise ValueError(f"alternative must be 'less' or 'greater', got {alternative!r}")
    x = np.asarray(values, float)
    n = len(x)
    if n <= 14:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = np.vstack([np.ones(n), rng.choice([-1.0, 1.0], size=(N_RANDOM - 1, n))])
    null = (signs * x).mean(1)
    obs = float(x.mean())
    hits = null <= obs + 1e-12 if alternative == "less" else null >= obs - 1e-12
    return obs, float(hits.mean()), 1.0 / len(null) if n <= 14 else 1.0 / N_RANDOM


def _centered_ranks(m: np.ndarray) -> np.ndarray:
    r = np.apply_along_axis(stats.rankdata, 0, m)
    return r - r.mean(0)


def varies(a: np.ndarray) -> np.ndarray:
    """Per column of ``a`` (units, strata): do the units differ by more than float rounding? A
    broadband artifact's alignment is 1 for every model up to 1e-16, and ranking that rounding
    would be ranking noise."""
    a = np.asarray(a, float)
    return np.ptp(a, 0) > 1e-9 * np.maximum(1.0, np.abs(a).max(0))


def joint_permutation_spearman(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float, int]:
    """Mean within-column Spearman ρ(x[:, s], y[:, s]) over columns s, with p from relabelling
    the rows of ``y`` jointly (the same permutation in every column: a row is one unit, so its
    values in different columns keep their dependence). One-sided: large ρ.

    Args: x, y: (units, strata) arrays without NaN; columns where x or y is constant (to float
    rounding, :func:`varies`) are left out.
    Returns (ρ, p, smallest attainable p, number of relabellings); NaNs if no column is usable."""
    keep = varies(x) & varies(y)
    n = x.shape[0]
    if not keep.any() or n < 3:
        return np.nan, np.nan, np.nan, 0
    rx, ry = _centered_ranks(x[:, keep]), _centered_ranks(y[:, keep])
    norm = np.sqrt((rx**2).sum(0) * (ry**2).sum(0))
    total = math.factorial(n)
    if total <= EXHAUSTIVE:
        perms = np.array(list(itertools.permutations(range(n))))
    else:
        perms = np.vstack([np.arange(n)] + [rng.permutation(n) for _ in range(N_RANDOM - 1)])
    rho = np.einsum("ms,pms->ps", rx, ry[perms]) / norm  # (perms, strata)
    null = rho.mean(1)
    obs = float(null[0]) if total > EXHAUSTIVE else float(((rx * ry).sum(0) / norm).mean())
    p = float((null >= obs - 1e-12).mean())
    return obs, p, 1.0 / len(null), len(null)


def permutation_greater(a, b, rng: np.random.Generator) -> tuple[float, float, float]:
    """One-sided permutation test of mean(a) > mean(b) over relabellings of the pooled units
    (exhaustive up to EXHAUSTIVE splits, else N_RANDOM sampled). Returns (difference, p, smallest
    attainable p); NaNs with fewer than two values per group."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return (float(a.mean() - b.mean()) if len(a) and len(b) else np.nan), np.nan, np.nan
    pooled, na, n = np.concatenate([a, b]), len(a), len(a) + len(b)
    total = math.comb(n, na)
    if total <= EXHAUSTIVE:
        splits = np.array(list(itertools.combinations(range(n), na)))
    else:
        splits = np.vstack([np.arange(na)] + [rng.permutation(n)[:na] for _ in range(N_RANDOM - 1)])
    mask = np.zeros((len(splits), n), bool)
    np.put_along_axis(mask, splits, True, axis=1)
    diffs = (mask * pooled).sum(1) / na - (~mask * pooled).sum(1) / (n - na)
    obs = float(a.mean() - b.mean())
    return obs, float((diffs >= obs - 1e-12).mean()), 1.0 / len(splits)


def welch_greater(a, b) -> tuple[float, float, tuple[float, float] | None]:
    """One-sided Welch t-test of mean(a) > mean(b). Returns (mean(a) − mean(b), p, the one-sided
    95 % confidence bound of the difference as (low, inf): the interval that goes with a one-sided
    p); p NaN with fewer than two values per group."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else np.nan
    if len(a) < 2 or len(b) < 2:
        return diff, np.nan, None
    res = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    ci = res.confidence_interval(0.95)
    return diff, float(res.pvalue), (float(ci.low), float(ci.high))


def within_block_ranks(m: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Midranks of each column of ``m`` (units, strata) computed within each block of units and
    centred on the block's mean rank; a block of one unit gets 0 (it carries no within-block
    information)."""
    out = np.zeros_like(np.asarray(m, float))
    for b in np.unique(blocks):
        rows = blocks == b
        if rows.sum() > 1:
            out[rows] = _centered_ranks(np.asarray(m, float)[rows])
    return out


def _block_perms(blocks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row permutations that move units only within their block: every one when there are at
    most EXHAUSTIVE (identity first), else the identity and N_RANDOM − 1 random ones."""
    groups = [np.flatnonzero(blocks == b) for b in np.unique(blocks)]
    total = math.prod(math.factorial(len(g)) for g in groups)
    n = len(blocks)
    if total <= EXHAUSTIVE:
        per = [list(itertools.permutations(g)) for g in groups]
        perms = np.tile(np.arange(n), (total, 1))
        for i, combo in enumerate(itertools.product(*per)):
            for g, p in zip(groups, combo):
                perms[i, g] = p
        return perms
    perms = np.tile(np.arange(n), (N_RANDOM, 1))
    for i in range(1, N_RANDOM):
        for g in groups:
            perms[i, g] = rng.permutation(g)
    return perms


def block_permutation_spearman(x: np.ndarray, y: np.ndarray, blocks, rng: np.random.Generator) -> dict:
    """Within-block Spearman association of x and y, averaged over strata, with a permutation p
    that relabels units only within their block (the same relabelling in every stratum).

    Per stratum s the statistic is the Pearson correlation of the within-block centred midranks
    (:func:`within_block_ranks`) pooled over blocks: a block contributes only how its own units
    are ordered, so a difference between blocks (e.g. sources) in x and in y cannot enter.
    One-sided: large ρ. Args: x, y (units, strata) without NaN; ``blocks`` (units,) labels.
    Strata where x or y does not vary within any block are left out.

    Returns ``rho``, ``p``, ``p_min`` (smallest attainable p), ``n_perms``, ``n_strata`` (used),
    ``n_used`` (units in blocks of ≥ 2), ``per_stratum`` (ρ of each used stratum)."""
    x, y, blocks = np.asarray(x, float), np.asarray(y, float), np.asarray(blocks)
    rx, ry = within_block_ranks(x, blocks), within_block_ranks(y, blocks)
    keep = ((rx**2).sum(0) > 0) & ((ry**2).sum(0) > 0) & varies(x) & varies(y)
    used = int(sum(c for c in np.unique(blocks, return_counts=True)[1] if c > 1))
    empty = {"rho": np.nan, "p": np.nan, "p_min": np.nan, "n_perms": 0, "n_strata": 0, "n_used": used,
             "per_stratum": np.array([])}
    if not keep.any() or used < 3:
        return empty
    rx, ry = rx[:, keep], ry[:, keep]
    norm = np.sqrt((rx**2).sum(0) * (ry**2).sum(0))
    perms = _block_perms(blocks, rng)
    # a permutation of y's rows within blocks = permuting its within-block ranks
    rho = np.einsum("ms,pms->ps", rx, ry[perms]) / norm
    null = rho.mean(1)
    obs = float(null[0])
    return {"rho": obs, "p": float((null >= obs - 1e-12).mean()), "p_min": 1.0 / len(null), "n_perms": len(null),
            "n_strata": int(keep.sum()), "n_used": used, "per_stratum": rho[0]}
