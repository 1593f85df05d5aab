"""Figures that cannot mislead, checked on the drawn matplotlib objects of the finished-job
fixture: priorities without DC on a log axis, one line per network counted as the findings
count them; one line style per arm in every figure; every fold drawn over the ±std band."""

from pathlib import Path

import numpy as np
import pytest

from analysis import figures
from analysis.collect import collect

FIXTURE = Path(__file__).parent / "fixtures" / "experiment"


@pytest.fixture(scope="module")
def trials():
    return collect(FIXTURE).trials


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Calls a figure function and returns its matplotlib figure instead of closing it."""
    figs = []
    monkeypatch.setattr(figures, "_save", lambda fig, out_dir, name: figs.append(fig) or [])

    def draw(fn, trials):
        fn(trials, tmp_path)
        return figs[-1]
    return draw


def _lines(ax):
    return [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]


def test_priorities_without_dc_one_line_per_network(trials, drawn):
    from analysis.units import distinct_models, finished_finetunes, pretrained_models

    fig = drawn(figures.fig_priorities, trials)
    pre_ax, ft_ax = fig.axes[:2]
    n_models = pretrained_models(trials)["backbone"].nunique()
    ft = finished_finetunes(trials)
    n_nets = len(distinct_models(ft[ft["degradation"] == ft["degradation"].min()]))
    assert len(_lines(pre_ax)) == n_models and f"{n_models} models" in pre_ax.get_title()
    assert len(_lines(ft_ax)) == n_nets and f"{n_nets} networks" in ft_ax.get_title()
    assert "trials" not in pre_ax.get_title() + ft_ax.get_title()
    for ax in (pre_ax, ft_ax):
        assert ax.get_yscale() == "log"
        for ln in _lines(ax):
            x, y = np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata())
            assert x.min() > 0  # the DC bin (ω̄ = 0) is left out
            assert y.max() == pytest.approx(1.0)  # unit max over the bins shown
    assert "mean over models" not in fig._suptitle.get_text()


@pytest.mark.parametrize("name", ["fig_auc_vs_degradation", "fig_editing_effect", "fig_priorities"])
def test_edited_arm_is_dashed_in_every_figure(trials, drawn, name):
    fig = drawn(getattr(figures, name), trials)
    styles = {}
    for handle in fig.legends[0].legend_handles:
        label = handle.get_label()
        if handle.get_linestyle() not in ("None", "none", ""):
            styles[label] = handle.get_linestyle()
    edited = {lab: st for lab, st in styles.items() if "(" in lab}
    plain = {lab: st for lab, st in styles.items() if "(" not in lab and "pinned" not in lab}
    assert edited and set(edited.values()) == {"--"}, styles
    assert set(plain.values()) == {"-"}, styles


def test_fold_points_drawn_over_the_band(trials, drawn):
    fig = drawn(figures.fig_editing_effect, trials)
    ft = trials[(trials["kind"] == "finetune") & (trials["status"] == "TERMINATED")]
    marks = 0
    for ax in fig.axes:
        bands = [c for c in ax.collections if c.__class__.__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
        points = [c for c in ax.collections if c.__class__.__name__ == "PathCollection" and c.get_offsets().shape[0]]
        if not bands:
            continue
        assert all(p.get_zorder() > b.get_zorder() for p in points for b in bands)
        marks += sum(p.get_offsets().shape[0] for p in points if p.get_sizes().max() < 20)  # not the pinned ×
    assert marks == ft["ood_auc"].notna().sum()
