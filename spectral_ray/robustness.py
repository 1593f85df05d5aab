"""Shortcut robustness: one definition for the search objective, the report's tables and F5.

A fine-tuned configuration's *robustness* is its mean O.O.D. AUC over the degradation grid, each
level weighted equally (the mean over the level means, so a level with more folds does not
count more). The same mean of I.I.D. AUC is its ``iid_mean``. A search's *objective* is the
robustness less the shortfall of ``iid_mean`` below a floor, so a model that gives up the real
cue to ignore the shortcut does not win.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["robustness", "objective"]


def robustness(auc: Iterable[float], degradation: Iterable[float], levels: Iterable[float] | None = None) -> float:
    """Mean over degradation levels of the mean AUC at each level.

    Args:
        auc: one AUC in [0, 1] per fine-tuned model (O.O.D. for robustness, I.I.D. for
            ``iid_mean``); NaN entries are ignored.
        degradation: the degradation level in [0, 1] of each entry, same length.
        levels: the grid the value must cover; a level without a finite AUC makes the result NaN
            (an incomplete grid is not comparable with a complete one). None: the levels present.

    Returns: the mean (float), NaN when nothing is left.
    """
    a = np.asarray(list(auc), dtype=float)
    d = np.asarray(list(degradation), dtype=float)
    if a.shape != d.shape:
        raise ValueError(f"auc and degradation must have the same length, got {a.shape} and {d.shape}")
    ok = np.isfinite(a) & np.isfinite(d)
    grid = sorted(set(d[ok])) if levels is None else sorted(set(float(x) for x in levels))
    means = [a[ok & (d == level)].mean() if (ok & (d == level)).any() else np.nan for level in grid]
    return float(np.mean(means)) if means and np.isfinite(means).all() else float("nan")


def objective(robustness_value: float, iid_mean: float, iid_floor: float | None = None) -> float:
    """``robustness − max(0, iid_floor − iid_mean)``; without a floor, the robustness itself."""
    shortfall = max(0.0, iid_floor - iid_mean) if iid_floor is not None else 0.0
    return float(robustness_value - shortfall)
