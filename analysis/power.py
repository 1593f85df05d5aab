"""Measured power: how often a finding's test says *supported* when the documented effect is real,
in simulated experiments of THIS experiment's design (analysis/simulate.py; docs/FINDINGS.md).

:func:`design_of` reads the design from the trials table — the sources, pretraining seeds per
source and arm, which sources have edited siblings and of which seeds, the shortcuts (band rings at
their recorded ω and amplitude; broadband artifacts as photon-noise- or NLM-like weights), the
degradation levels and the folds — and :func:`measured_power` runs the finding's check on
:data:`RUNS` simulated experiments of it with the effect in :data:`EFFECTS` (fixed seeds, so the
power is deterministic; cached per (finding, design)). The simulator's noise levels are its
defaults, not the experiment's measured ones: the power is that of the design, at the noise the
simulation tests calibrate (tests/test_findings_sim.py).
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import Callable

import numpy as np
import pandas as pd

from .aggregate import SOURCE
from .simulate import BROADBAND, Design, Effects, simulate
from .units import finished_finetunes

__all__ = ["EFFECTS", "RUNS", "design_of", "measured_power"]

# The documented effect size of each finding (docs/FINDINGS.md), in the simulator's terms.
EFFECTS = {
    "F1": (Effects(source_effect=0.5), "sources' spectral decay ±25 %"),
    "F2": (Effects(source_effect=0.5, persist=0.5), "half the pretrained priority kept by fine-tuning"),
    "F3": (Effects(ood_fall=0.3), "O.O.D. AUC falling 0.3 per unit degradation, I.I.D. holding"),
    "F4": (Effects(alignment_effect=0.06), "shortcut cost rising 0.06 AUC × d per within-source SD of a latent "
                                           "frequency reliance the priority observes with noise"),
    "F5": (Effects(edit_centroid=0.3, edit_robustness=0.2), "edit adding 30 % mid-frequency mass and 0.2 AUC × d "
                                                            "of shortcut cost"),
}
RUNS = 20
BUDGET_S = 60.0  # stop early (at ≥ 10 runs) if the simulations take longer than this


def _shortcuts(ft: pd.DataFrame) -> tuple[tuple, tuple]:
    bands, broad = [], []
    for _, r in ft[ft["degradation"] > 0].drop_duplicates("shortcut").iterrows():
        omega, amp = r.get("artifact_resolved/omega", r.get("artifact_omega")), r.get("artifact_resolved/amplitude",
                                                                                   r.get("artifact_amplitude"))
        if isinstance(omega, (int, float, np.floating)) and np.isfinite(omega) and np.isfinite(amp or np.nan):
            bands.append((round(float(omega), 3), round(float(amp), 3)))
        else:
            broad.append("nlm" if "nlm" in str(r.get("artifact", "")) else BROADBAND[0])
    return tuple(sorted(set(bands))), tuple(broad)


def design_of(trials: pd.DataFrame) -> Design:
    """The simulator's :class:`Design` closest to this experiment's (see the module docstring)."""
    ft = finished_finetunes(trials)
    if ft.empty or SOURCE not in ft:
        raise ValueError("design_of: the table has no finished fine-tuning trials with a source label")
    seeds = ft.groupby([SOURCE, "edit_label"])["backbone"].nunique()
    unedited = seeds.xs("unedited", level="edit_label") if "unedited" in seeds.index.get_level_values(1) else seeds
    edited = seeds[seeds.index.get_level_values(1) != "unedited"]
    bands, broad = _shortcuts(ft) if "degradation" in ft else (((0.5, 0.1),), ())
    n_edited = int(edited.max()) if len(edited) else 0
    return Design(sources=tuple(sorted(ft[SOURCE].astype(str).unique())), seeds=tuple(range(int(unedited.max()))),
                  edit_strengths=(0.0, 1.0) if n_edited else (0.0,), edited_seeds=tuple(range(n_edited)),
                  edited_sources=tuple(sorted(edited.index.get_level_values(0).unique())) if n_edited else (),
                  shortcuts=bands, broadband=broad,
                  degradations=tuple(sorted(float(d) for d in ft["degradation"].dropna().unique())),
                  folds=tuple(range(max(1, ft["fold"].nunique() if "fold" in ft else 1))),
                  old_seeding="artifact_seed_used" not in ft)


# supported(fid, trials, rng) -> bool: does finding fid's check call these trials supported
# (analysis.findings.calls_supported; passed in, so that the findings import this module, not both ways)
SupportedCheck = Callable[[str, pd.DataFrame, np.random.Generator], bool]


@functools.lru_cache(maxsize=64)
def _power(fid: str, design: Design, supported: SupportedCheck, runs: int, budget_s: float) -> tuple[int, int]:
    effects, start, hits, done = EFFECTS[fid][0], time.monotonic(), 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for s in range(runs):
            hit = supported(fid, simulate(design, effects, seed=9000 + s), np.random.default_rng(s))
            hits, done = hits + bool(hit), done + 1
            if done >= 10 and time.monotonic() - start > budget_s:
                break
    return hits, done


def measured_power(fid: str, trials: pd.DataFrame, supported: SupportedCheck, *, runs: int = RUNS,
                   budget_s: float = BUDGET_S) -> dict:
    """``power`` (share of simulated experiments of this design, with :data:`EFFECTS` [fid], that
    ``supported`` — the finding's check, :func:`analysis.findings.calls_supported` — calls supported;
    None when the design cannot be simulated), ``hits``, ``runs``, ``text``."""
    try:
        design = design_of(trials)
    except ValueError as e:
        return {"power": None, "hits": 0, "runs": 0, "text": f"no power: {e}"}
    hits, done = _power(fid, design, supported, runs, budget_s)
    return {"power": hits / done if done else None, "hits": hits, "runs": done,
            "text": f"{hits}/{done} simulated experiments of this design with {EFFECTS[fid][1]} called supported"}
