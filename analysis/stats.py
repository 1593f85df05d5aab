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

__all__ = ["tv", "holm", "group_permutation", "sign_flip", "joint_permutation_spearman", "welch_greater",
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


def welch_greater(a, b) -> tuple[float, float, tuple[float, float] | None]:
    """One-sided Welch t-test of mean(a) > mean(b). Returns (mean(a) − mean(b), p, 95 % CI of the
    difference); p NaN with fewer than two values per group."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else np.nan
    if len(a) < 2 or len(b) < 2:
        return diff, np.nan, None
    res = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return diff, float(res.pvalue), (float(ci.low), float(ci.high))
