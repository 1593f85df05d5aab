"""The one registration idiom (spectral_ray/registries.py) and the registries built on it."""

import pytest

from spectral_ray.registries import Registry, UnknownName


def _filled(**kw) -> Registry:
    reg = Registry("widget", **kw)
    for name in ("zeta", "alpha", "mid"):
        reg.register(name)(lambda name=name: name)
    return reg


def test_register_is_a_decorator_that_returns_the_object_and_keeps_order():
    reg = Registry("widget")

    @reg.register("b")
    def fb():
        return 1

    wrapped = reg.register("a", lambda fn: ("made", fn))(fb)
    assert wrapped is fb and fb() == 1  # the decorated function is left as it was
    assert list(reg) == ["b", "a"] and reg["b"] is fb and reg["a"] == ("made", fb)
    assert list(_filled()) == ["zeta", "alpha", "mid"]  # registration order, not sorted
    assert len(reg) == 2 and "a" in reg and "c" not in reg and reg.get("c", 7) == 7 and [] not in reg


def test_a_name_registered_twice_is_refused_before_the_entry_is_made():
    reg = _filled()
    made = []
    with pytest.raises(ValueError, match="widget 'alpha' is registered twice"):
        reg.register("alpha", lambda fn: made.append(fn))(lambda: 0)
    assert made == [] and reg["alpha"]() == "alpha"
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("mid", object())
    with pytest.raises(TypeError, match="non-empty string"):
        reg.add("", object())


def test_the_replace_policy_per_registry_and_per_call():
    reg = _filled(replace=True)
    reg.register("alpha")(lambda: "new")
    assert reg["alpha"]() == "new" and list(reg) == ["zeta", "alpha", "mid"]  # replaced in place
    strict = _filled()
    strict.register("alpha", replace=True)(lambda: "new")
    assert strict["alpha"]() == "new"
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("mid", replace=False)(lambda: 0)


def test_an_unknown_name_names_the_kind_the_name_and_the_registered_ones():
    reg = _filled()
    with pytest.raises(ValueError, match=r"^unknown widget 'alhpa'. Did you mean 'alpha'\? Allowed: 'zeta', 'alpha', 'mid'.$") as e:
        reg["alhpa"]
    assert isinstance(e.value, KeyError) and isinstance(e.value, UnknownName)  # dict-like too
    assert (e.value.noun, e.value.name, e.value.allowed) == ("widget", "alhpa", ["zeta", "alpha", "mid"])
    with pytest.raises(ValueError, match="Allowed: none."):
        Registry("gizmo")["x"]
    with pytest.raises(ValueError, match=r"unknown widget \[1\]"):
        reg[[1]]  # unhashable: the same clear error


def test_a_failing_make_stores_nothing_and_a_copy_is_filled_on_its_own():
    reg = _filled()

    def bad(fn):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        reg.register("new", bad)(lambda: 0)
    assert "new" not in reg
    scratch = reg.copy()
    scratch.register("only_here")(lambda: 0)
    assert "only_here" in scratch and "only_here" not in reg and type(scratch) is Registry
    assert scratch.noun == "widget" and list(scratch)[:3] == list(reg)


def test_the_project_registries_use_the_idiom():
    from analysis.figures import FIGURES
    from analysis.findings import FINDINGS
    from spectral_ray.artifacts import FAMILIES
    from spectral_ray.data import registry
    from spectral_ray.editing import EDITS
    from spectral_ray.families import ParamError

    for reg in (FIGURES, FINDINGS, FAMILIES, EDITS, registry._REGISTRY):
        assert isinstance(reg, Registry)
    assert list(FIGURES) == ["auc_vs_degradation", "priorities", "priority_heatmaps", "editing_effect",
                             "alignment_vs_drop"]  # the drawing order
    assert list(FINDINGS) == ["F1", "F2", "F3", "F4", "F5"]
    with pytest.raises(ValueError, match="unknown dataset 'nope'. Allowed: .*'natural'"):
        registry.get_dataset("nope")
    with pytest.raises(ParamError, match="unknown edit family 'nope'. Did you mean 'none'. Allowed: 'none', "):
        EDITS.family("nope")
    with pytest.raises(ValueError, match="unknown finding 'F9'.* Allowed: 'F1', 'F2', 'F3', 'F4', 'F5'.$"):
        FINDINGS["F9"]
    with pytest.raises(ValueError, match="figure 'priorities' is registered twice"):
        FIGURES.register("priorities")(lambda trials, out_dir: [])
    # datasets may be registered again (a builder module imported a second time): replaced
    scratch = registry._REGISTRY.copy()
    entry = scratch["natural"]
    scratch.register("natural")(object())
    assert scratch["natural"] is not entry and registry._REGISTRY["natural"] is entry
