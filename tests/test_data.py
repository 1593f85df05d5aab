"""Embedded datasets: registry, shapes, determinism, cache, spectra, patient groups, learnability."""

import re
import time

import numpy as np
import pytest

from spectral_ray.data import dataset_info, get_dataset, list_datasets
from spectral_ray.data.preview import dataset_spectrum

EMBEDDED = {"natural": 15, "medical": 8, "ct_lesion": 2, "mri_knee": 2}
SMALL = {"natural": 45, "medical": 24, "ct_lesion": 20, "mri_knee": 20}


def test_registry_lists_embedded_datasets():
    names = list_datasets()
    for name in EMBEDDED:
        assert name in names
    assert {"natural", "medical"} <= set(list_datasets("source"))
    assert {"ct_lesion", "mri_knee"} <= set(list_datasets("target"))
    assert dataset_info("medical")["defaults"]["size"] == 64


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_shapes_dtypes_ranges(name):
    ds = get_dataset(name, n=SMALL[name], use_cache=False, progress=False)
    assert ds.images.shape == (SMALL[name], 1, 64, 64)
    assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int64
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert len(ds.classes) == EMBEDDED[name]
    assert set(np.unique(ds.labels)) <= set(range(EMBEDDED[name]))
    assert ds.images.std() > 0.02  # not blank
    if EMBEDDED[name] == 2:
        assert ds.groups is not None and ds.groups.dtype == np.int64 and ds.groups.shape == (SMALL[name],)
    else:
        assert ds.groups is None


@pytest.mark.parametrize("name", ["natural", "medical"])
def test_three_channels_and_size(name):
    ds = get_dataset(name, n=8, size=32, channels=3, use_cache=False, progress=False)
    assert ds.images.shape == (8, 3, 32, 32)


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_same_seed_same_arrays_other_seed_differs(name):
    a = get_dataset(name, n=10, seed=3, use_cache=False, progress=False)
    b = get_dataset(name, n=10, seed=3, use_cache=False, progress=False)
    c = get_dataset(name, n=10, seed=4, use_cache=False, progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)


def test_cache_hit_is_fast_and_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTRAL_RAY_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    a = get_dataset("mri_knee", n=60, seed=7, progress=False)
    build = time.perf_counter() - t0
    assert list(tmp_path.glob("mri_knee-*.npz"))
    t0 = time.perf_counter()
    b = get_dataset("mri_knee", n=60, seed=7, progress=False)
    hit = time.perf_counter() - t0
    assert hit < 0.5 and hit < build
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.groups, b.groups)
    assert b.classes == a.classes


# ----------------------------------------------------------------- the registry carries its facts


@pytest.fixture
def scratch_registry(monkeypatch, tmp_path):
    """A copy of the registry for one test, and a folder on sys.path for fabricated modules."""
    from spectral_ray.data import registry

    monkeypatch.setattr(registry, "_REGISTRY", registry._REGISTRY.copy())
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.code_version.cache_clear()
    yield registry
    registry.code_version.cache_clear()


def _write_plugin(root, name, helper_body):
    """A package ``name`` with a reader module that imports a helper module (module level) and
    one imported inside a function (not followed)."""
    pkg = root / name
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text(helper_body)
    (pkg / "lazy.py").write_text("X = 1\n")
    (pkg / "reader.py").write_text(
        "import numpy as np\n"
        f"from {name} import helper\n"
        "from spectral_ray.data import register_dataset, ImageDataset\n\n"
        f"@register_dataset('{name}_reader', kind='target', paths=['root'], optional_paths=['extra'])\n"
        "def reader(root=None, extra=None, n=4):\n"
        f"    from {name} import lazy  # noqa: F401\n"
        "    x = np.full((n, 1, 16, 16), helper.VALUE, np.float32)\n"
        "    return ImageDataset(x, np.arange(n) % 2, ['a', 'b'], groups=np.arange(n))\n"
    )


def test_code_version_follows_the_builders_imports(scratch_registry, tmp_path):
    import importlib
    import sys

    _write_plugin(tmp_path, "plugin_cv", "VALUE = 0.25\n")
    importlib.import_module("plugin_cv.reader")
    code = [m for m, _ in scratch_registry._REGISTRY["plugin_cv_reader"].code]
    assert code == ["plugin_cv.reader", "plugin_cv.helper"]  # registry/cache/dataset and lazy imports left out
    before = scratch_registry.code_version("plugin_cv_reader")
    (tmp_path / "plugin_cv" / "lazy.py").write_text("X = 2\n")
    scratch_registry.code_version.cache_clear()
    assert scratch_registry.code_version("plugin_cv_reader") == before
    (tmp_path / "plugin_cv" / "helper.py").write_text("VALUE = 0.5\n")  # the arrays' code changed
    scratch_registry.code_version.cache_clear()
    after = scratch_registry.code_version("plugin_cv_reader")
    assert after != before
    edited = scratch_registry.code_version("plugin_cv_reader", edited=True)
    assert edited not in (before, after)  # the editing code is part of an edited source's version
    for m in ("plugin_cv", "plugin_cv.reader", "plugin_cv.helper", "plugin_cv.lazy"):
        sys.modules.pop(m, None)


def test_edited_code_version_includes_editing_and_artifacts():
    from spectral_ray.data.codeversion import module_closure

    names = [m for m, _ in module_closure("spectral_ray.editing")]
    assert names[:2] == ["spectral_ray.editing", "spectral_ray.artifacts"]
    assert "spectral_ray.data.registry" not in names and "spectral_ray.data.cache" not in names


def test_every_registered_dataset_hashes_its_own_module():
    from spectral_ray.data import registry
    from spectral_ray.data.codeversion import INFRASTRUCTURE

    for name in list_datasets():
        e = registry._REGISTRY[name]
        modules = [m for m, _ in e.code]
        assert modules[0] == e.builder.__module__, name
        assert not set(modules) & INFRASTRUCTURE, name
        assert registry.code_version(name).startswith("2-")


def test_a_builder_without_source_is_refused_at_registration(scratch_registry):
    from spectral_ray.data.codeversion import CodeNotFound

    namespace = {"__name__": "not_a_module_anywhere"}
    exec("def build(n=2):\n    return None\n", namespace)
    with pytest.raises(CodeNotFound, match="no_source.*code version"):
        scratch_registry.register_dataset("no_source", kind="source")(namespace["build"])
    assert "no_source" not in list_datasets()
    with pytest.raises(ValueError, match=r"paths \['rot'\] are not parameters"):
        scratch_registry.register_dataset("typo", kind="target", paths=["rot"])(lambda root=None: None)
    with pytest.raises(ValueError, match="kind must be one of 'source', 'target'"):
        scratch_registry.register_dataset("k", kind="sources")


def test_a_reader_in_a_new_module_gets_its_path_check(scratch_registry, tmp_path):
    import importlib
    import sys

    from spectral_ray.config import missing_paths
    from spectral_ray.data import missing_paths as dataset_missing

    _write_plugin(tmp_path, "plugin_mp", "VALUE = 0.5\n")
    importlib.import_module("plugin_mp.reader")
    assert dataset_missing("plugin_mp_reader", {}) == [
        "plugin_mp_reader: parameter 'root' is required (a path); see docs/REAL_DATA.md"]
    msgs = missing_paths({"target": "plugin_mp_reader", "target_params": {"root": str(tmp_path), "extra": "/no/such"}})
    assert msgs == ["target plugin_mp_reader: extra not found: /no/such"]
    assert dataset_info("plugin_mp_reader")["paths"] == ["root"]
    for m in ("plugin_mp", "plugin_mp.reader", "plugin_mp.helper"):
        sys.modules.pop(m, None)


def test_no_import_circle_between_cache_and_registry():
    from pathlib import Path

    from spectral_ray.data import cache, dataset, registry
    from spectral_ray.data.codeversion import _imported

    assert "spectral_ray.data.registry" not in _imported("spectral_ray.data.cache", Path(cache.__file__))
    assert "spectral_ray.data.registry" not in _imported("spectral_ray.data.dataset", Path(dataset.__file__))
    assert registry.ImageDataset is dataset.ImageDataset


def test_unknown_parameter_and_bad_size():
    with pytest.raises(TypeError, match="bogus"):
        get_dataset("medical", bogus=1, use_cache=False)
    with pytest.raises(ValueError, match="size"):
        get_dataset("natural", size=33, n=2, use_cache=False, progress=False)


def test_one_size_rule_for_trials_generators_and_readers(tmp_path):
    """A size every builder refuses is refused by the trial's validation too, in the same words,
    and the smallest size the rule allows builds everywhere (issue 23: `size: 12` passed the
    trial's check and failed inside the trial)."""
    from pydantic import ValidationError

    from spectral_ray.config import TrialConfig, trial_error
    from spectral_ray.data.dataset import MIN_SIZE

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    for c in "ab":
        np.save(tmp_path / c / "x.npy", np.full((20, 20), 0.5, np.float32))
    builders = {"natural": {}, "medical": {}, "ct_lesion": {}, "image_folder": {"root": str(tmp_path)}}
    for bad in (MIN_SIZE - 2, MIN_SIZE + 1):
        words = f"size must be an even integer >= {MIN_SIZE} (pixels), got {bad}"
        with pytest.raises(ValidationError) as e:
            TrialConfig(size=bad)
        assert (trial_error(e.value).field, trial_error(e.value).message) == ("size", words)
        for name, kw in builders.items():
            with pytest.raises(ValueError, match=fr"^{re.escape(words)}$"):
                get_dataset(name, size=bad, n=4, use_cache=False, progress=False, **kw)
    TrialConfig(size=MIN_SIZE)
    for name, kw in builders.items():
        assert get_dataset(name, size=MIN_SIZE, n=4, use_cache=False, progress=False, **kw).images.shape[-1] == MIN_SIZE


def test_grid_check_names_channels_and_n():
    from spectral_ray.data.dataset import check_grid

    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        check_grid(32, 2, 4)
    with pytest.raises(ValueError, match="n must be a positive integer, got None"):
        check_grid(32, 1, None)
    check_grid(32, 3, None, n_all=True)  # a reader: None = every image it finds
    with pytest.raises(ValueError, match="n must be a positive integer or None, got 0"):
        check_grid(32, 1, 0, n_all=True)


@pytest.mark.parametrize("name", ["ct_lesion", "mri_knee"])
def test_targets_have_several_slices_per_patient_with_one_label(name):
    ds = get_dataset(name, n=100, slices=5, use_cache=False, progress=False)
    pids, counts = np.unique(ds.groups, return_counts=True)
    assert len(pids) == 20 and np.all(counts == 5)
    for pid in pids:
        assert len(np.unique(ds.labels[ds.groups == pid])) == 1
    assert 0.3 < ds.labels.mean() < 0.7  # both classes present, roughly balanced
    # slices of one patient differ (they are not copies)
    first = ds.images[ds.groups == pids[0]]
    assert np.abs(first[0] - first[1]).mean() > 1e-3


def test_natural_slope_in_photograph_range():
    ds = get_dataset("natural", n=450, progress=False)
    _, slope = dataset_spectrum(ds)
    assert -2.8 <= slope <= -1.6, slope


def test_medical_spectrum_differs_from_natural():
    # Slopes are close (≈ −2.5 both); the shape differs: the phantoms' mid/high-frequency power
    # (k ≥ 8) is ~30 % lower than the photographs', far beyond the seed-to-seed spread (~3 %).
    mass = {}
    for name, n in (("natural", 450), ("medical", 240)):
        for seed in (0, 1):
            psd, _ = dataset_spectrum(get_dataset(name, n=n, seed=seed, progress=False))
            q = psd[1:] / psd[1:].sum()
            mass[name, seed] = q[7:].sum()
    nat = (mass["natural", 0] + mass["natural", 1]) / 2
    med = (mass["medical", 0] + mass["medical", 1]) / 2
    spread = max(abs(mass["natural", 0] - mass["natural", 1]) / nat, abs(mass["medical", 0] - mass["medical", 1]) / med)
    assert abs(nat - med) / nat > 0.15
    assert abs(nat - med) / nat > 3 * spread


def test_cli_preview_and_spectrum(tmp_path, monkeypatch, capsys):
    from spectral_ray.cli import main

    monkeypatch.setenv("SPECTRAL_RAY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "p.png"
    assert main(["data", "preview", "mri_knee", "--n", "40", "--per-class", "3", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    out2 = tmp_path / "s.png"
    assert main(["data", "spectrum", "natural", "--n", "30", "--out", str(out2)]) == 0
    assert out2.stat().st_size > 1000 and "slope" in capsys.readouterr().out
    assert main(["data", "preview", "nope", "--out", str(out)]) == 2


def test_cli_preview_with_artifact(tmp_path, monkeypatch):
    pytest.importorskip("spectral_ray.artifacts")
    from spectral_ray.cli import main

    monkeypatch.setenv("SPECTRAL_RAY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "a.png"
    args = ["data", "preview", "ct_lesion", "--n", "20", "--per-class", "3", "--artifact", "band",
            "--omega", "0.5", "--amplitude", "0.1", "--degradation", "0.5", "--out", str(out)]
    assert main(args) == 0 and out.stat().st_size > 1000


# ----------------------------------------------------------------------------- MR acquisition


def test_mr_signal_layers_composite_partial_volume():
    """A full-strength layer of a tissue gives that tissue's signal; a zero layer changes nothing;
    layers draw nothing from the generator (so layers=None keeps older datasets identical)."""
    from spectral_ray.data import phantoms as ph

    r = 32
    muscle = np.full((r, r), ph.T["muscle"], np.int8)
    fluid = np.full((r, r), ph.T["fluid"], np.int8)
    sig = lambda lab, **kw: ph.mr_signal(lab, np.random.default_rng(3), weighting="T2", **kw)  # noqa: E731
    np.testing.assert_allclose(sig(muscle, layers=[(np.ones((r, r)), "fluid")]), sig(fluid), rtol=1e-12)
    np.testing.assert_array_equal(sig(muscle, layers=[(np.zeros((r, r)), "fluid")]), sig(muscle))
    half = sig(muscle, layers=[(np.full((r, r), 0.5), "fluid")])
    np.testing.assert_allclose(half, (sig(muscle) + sig(fluid)) / 2, rtol=1e-12)


def test_mr_acquire_keep_read_truncates_frequency_encode_direction():
    """keep_read < 1 zeroes the outer k-space columns: high horizontal frequencies vanish, the
    vertical ones are untouched; keep_read=None is the old acquisition bit for bit."""
    from spectral_ray.data import phantoms as ph

    size = 32
    obj = np.random.default_rng(0).random((2, 2 * size, 2 * size)) + 1.0
    acq = lambda **kw: ph.mr_acquire(obj, size, [np.random.default_rng(i) for i in range(2)], keep=1.0, undersample=0.0, noise=0.0, **kw)  # noqa: E731
    full, cut = acq(), acq(keep_read=0.5)
    np.testing.assert_array_equal(full, acq(keep_read=None))
    power = lambda img: np.abs(np.fft.fft2(img - img.mean(axis=(-2, -1), keepdims=True))) ** 2  # noqa: E731
    kx = np.abs(np.fft.fftfreq(size) * 2)  # 1 = Nyquist
    hi_x = lambda img: power(img)[:, 0, kx > 0.6].sum()  # noqa: E731  (ky = 0 row, high kx)
    hi_y = lambda img: power(img)[:, kx > 0.6, 0].sum()  # noqa: E731  (kx = 0 column, high ky)
    assert hi_x(cut) < 0.05 * hi_x(full)
    assert hi_y(cut) > 0.2 * hi_y(full)


# ----------------------------------------------------------------------------- learnability


def _small_cnn_auc(ds, epochs=8, seed=0):
    import torch
    import torch.nn as nn
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit

    torch.manual_seed(seed)
    tr, te = next(GroupShuffleSplit(1, test_size=0.25, random_state=seed).split(ds.images, ds.labels, ds.groups))
    assert not set(ds.groups[tr]) & set(ds.groups[te])
    x = (torch.from_numpy(ds.images) - 0.5) / 0.25
    y = torch.from_numpy(ds.labels)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 2),
    )
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.from_numpy(tr)[torch.randperm(len(tr), generator=g)]
        for b in range(0, len(perm), 32):
            i = perm[b : b + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    with torch.no_grad():
        p = torch.softmax(model(x[te]), 1)[:, 1].numpy()
    return roc_auc_score(ds.labels[te], p)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ct_lesion", "mri_knee"])
def test_small_cnn_learns_target_but_not_trivially(name):
    import torch

    torch.set_num_threads(1)
    ds = get_dataset(name, progress=False)  # defaults: 800 images, 5 slices per patient
    auc = _small_cnn_auc(ds)
    print(f"{name}: small CNN, 8 epochs, patient-grouped test AUC = {auc:.3f}")
    assert 0.75 <= auc <= 0.98, auc
