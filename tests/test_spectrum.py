"""Known-answer tests for the spectrum core (docs/SCIENCE.md, Eq. 1)."""

import numpy as np
import pytest
import torch

from spectral_ray import spectrum as S


def sinusoid(n, kx, ky, phase=0.3):
    y, x = np.mgrid[0:n, 0:n]
    return np.cos(2 * np.pi * (kx * x + ky * y) / n + phase)


def power_law_field(n, alpha, rng, batch=16):
    """Gaussian random field with radial power ∝ 1/f^alpha (random phases)."""
    u = np.fft.fftfreq(n) * n
    r = np.sqrt(u[:, None] ** 2 + u[None, :] ** 2)
    r[0, 0] = 1.0
    amp = r ** (-alpha / 2)
    amp[0, 0] = 0.0
    noise = rng.standard_normal((batch, n, n)) + 1j * rng.standard_normal((batch, n, n))
    return np.real(np.fft.ifft2(noise * amp))


@pytest.mark.parametrize("n", [32, 64])
@pytest.mark.parametrize("k,angle", [(1, 0), (3, 0), (5, 90), (8, 45), (12, 30), (15, 60)])
def test_sinusoid_peak_at_its_bin(n, k, angle):
    kx = round(k * np.cos(np.deg2rad(angle)))
    ky = round(k * np.sin(np.deg2rad(angle)))
    radius_bin = int(np.floor(np.hypot(kx, ky) + 0.5))
    psd = S.radial_psd(sinusoid(n, kx, ky))
    assert psd.shape == (n // 2 + 1,)
    assert int(np.argmax(psd)) == radius_bin
    # all the (non-DC) power is in that one ring
    assert psd[radius_bin] * S.ring_counts(n)[radius_bin] == pytest.approx(
        (psd * S.ring_counts(n)).sum(), rel=1e-6
    )


def test_nyquist_sinusoid_lands_in_last_bin():
    n = 32
    x = sinusoid(n, n // 2, 0, phase=0.0)  # alternating +1/-1 columns
    psd = S.radial_psd(x)
    assert int(np.argmax(psd)) == n // 2


def test_white_noise_is_flat():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 64, 64))  # ring 1 holds only 8 coefficients
    psd = S.radial_psd(x).mean(0)
    inner = psd[1:-1]
    # expected power per coefficient for unit-variance white noise is N²
    assert np.allclose(inner / (64 * 64), 1.0, rtol=0.05)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_power_law_slope(alpha):
    rng = np.random.default_rng(1)
    psd = S.radial_psd(power_law_field(64, alpha, rng)).mean(0)
    assert S.spectral_slope(psd, 2, 30) == pytest.approx(-alpha, abs=0.15)


def test_parseval_over_kept_bins():
    rng = np.random.default_rng(2)
    n = 32
    x = rng.standard_normal((n, n))
    psd = S.radial_psd(x)
    full = np.abs(np.fft.fftshift(np.fft.fft2(x))) ** 2
    u = np.arange(n) - n // 2
    r = np.sqrt(u[:, None] ** 2 + u[None, :] ** 2)
    kept = r < n // 2 + 0.5
    assert (psd * S.ring_counts(n)).sum() == pytest.approx(full[kept].sum(), rel=1e-6)
    # and all of the energy when corners are included (Parseval: Σ|F|² = N² Σ x²)
    assert full.sum() == pytest.approx(n * n * (x**2).sum(), rel=1e-9)


def test_matches_naive_full_plane_ring_means():
    rng = np.random.default_rng(3)
    x = rng.random((3, 2, 16, 16)).astype(np.float32)
    got = S.radial_psd(torch.from_numpy(x)).numpy()
    u = np.arange(16) - 8
    ring = np.floor(np.sqrt(u[:, None] ** 2 + u[None, :] ** 2) + 0.5)
    for idx in np.ndindex(3, 2):
        p = np.abs(np.fft.fftshift(np.fft.fft2(x[idx].astype(np.float64)))) ** 2
        want = [p[ring == k].mean() for k in range(9)]
        np.testing.assert_allclose(got[idx], want, rtol=1e-4)


def test_normalisations_and_types():
    x = torch.rand(4, 32, 32)
    s = S.radial_psd(x, normalize="sum")
    m = S.radial_psd(x, normalize="max")
    assert isinstance(s, torch.Tensor)
    assert torch.allclose(s.sum(-1), torch.ones(4))
    assert torch.allclose(m.amax(-1), torch.ones(4))
    assert isinstance(S.radial_psd(x.numpy(), normalize="sum"), np.ndarray)
    with pytest.raises(ValueError, match="normalize"):
        S.radial_psd(x, normalize="l2")
    with pytest.raises(ValueError, match="even"):
        S.radial_psd(torch.rand(31, 31))


# ----------------------------------------------------------------------- learning priority


class LinearModel(torch.nn.Module):
    """logits = [0, <w, x>]: the input gradient of the loss is a scalar multiple of w."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        z = (x * self.w).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(z), z], 1)


def test_linear_model_priority_is_psd_of_its_weights():
    torch.manual_seed(0)
    w = torch.randn(1, 32, 32)
    model = LinearModel(w)
    x = torch.randn(10, 1, 32, 32)
    y = torch.randint(0, 2, (10,))
    got = S.learning_priority(model, x, y, batch_size=4)
    want = S.radial_psd(w[0].detach(), normalize="sum")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def _small_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 3),
    )


def test_batched_equals_per_image_and_batch_size_invariant():
    model = _small_cnn()
    x = torch.rand(12, 3, 32, 32)
    y = torch.randint(0, 3, (12,))
    full = S.learning_priority(model, x, y, batch_size=12, normalize=None)
    for bs in (1, 5):
        torch.testing.assert_close(S.learning_priority(model, x, y, batch_size=bs, normalize=None), full, rtol=1e-4, atol=0)
    # per image, by hand: gradient → sum channels → radial PSD, then the mean
    model.eval()
    per = []
    for i in range(12):
        xi = x[i : i + 1].clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xi), y[i : i + 1]).backward()
        per.append(S.radial_psd(xi.grad.sum(1))[0])
    torch.testing.assert_close(torch.stack(per).mean(0), full, rtol=1e-4, atol=0)


def test_default_batch_on_the_cpu_is_bounded_in_pixels(monkeypatch):
    model = _small_cnn()
    x, y = torch.rand(12, 3, 64, 64), torch.randint(0, 3, (12,))
    seen = []
    real = S._input_gradients_full
    monkeypatch.setattr(S, "_input_gradients_full", lambda m, xb, yb, f: seen.append(len(xb)) or real(m, xb, yb, f))
    monkeypatch.setattr(S, "CPU_PRIORITY_PIXELS", 5 * 64 * 64)  # 5 images of 64 px per batch
    p = S.learning_priority(model, x, y, normalize=None)
    assert seen == [5, 5, 2]
    torch.testing.assert_close(p, S.learning_priority(model, x, y, batch_size=12, normalize=None), rtol=1e-4, atol=0)
    seen.clear()
    monkeypatch.setattr(S, "CPU_PRIORITY_PIXELS", 1)  # never below one image
    S.learning_priority(model, x[:2], y[:2])
    assert seen == [1, 1]


def test_mode_restored_and_param_grads_untouched():
    model = _small_cnn().train()
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 3, (4,))
    S.learning_priority(model, x, y)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    S.learning_priority(model, x, y)
    assert not model.training


def test_eval_mode_freezes_batchnorm_statistics():
    model = _small_cnn().train()
    bn = model[1]
    before = bn.running_mean.clone()
    S.learning_priority(model, torch.rand(8, 3, 32, 32) * 5, torch.randint(0, 3, (8,)))
    torch.testing.assert_close(bn.running_mean, before)


def test_per_class_and_numpy_input():
    model = _small_cnn()
    x = np.random.default_rng(0).random((9, 3, 32, 32)).astype(np.float32)
    y = np.array([0, 1, 2] * 3)
    per = S.learning_priority(model, x, y, per_class=True)
    assert sorted(per) == [0, 1, 2]
    for p in per.values():
        assert p.shape == (17,) and p.dtype == torch.float32
        assert float(p.sum()) == pytest.approx(1.0, rel=1e-5)
    pooled = S.learning_priority(model, x, y, normalize=None)
    by_class = S.learning_priority(model, x, y, normalize=None, per_class=True)
    torch.testing.assert_close(sum(by_class.values()) / 3, pooled, rtol=1e-4, atol=0)


def test_lin2022_centred_measure():
    model = _small_cnn()
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 3, (6,))
    p = S.learning_priority(model, x, y, measure="lin2022_centred", normalize="max")
    assert p.shape == (17,)
    assert p[0] == 0 and p[-1] == 0  # DC and outermost bins dropped
    assert float(p.max()) == pytest.approx(1.0)


@pytest.mark.parametrize("measure", ["lin2022", "freq_bias", "psd"])
def test_unknown_or_ambiguous_measure_is_rejected(measure):
    model = _small_cnn()
    with pytest.raises(ValueError) as e:
        S.learning_priority(model, torch.rand(2, 3, 16, 16), torch.tensor([0, 1]), measure=measure)
    for name in ("freqbias", "lin2022_centred"):
        assert name in str(e.value)
    if measure != "lin2022":
        assert "'power'" in str(e.value)


# ---- zhiyugege/FreqBias grad.py, transcribed (azimuthalAverage and cal_power verbatim; the
# gradients as its eval_model takes them: CrossEntropyLoss (mean), loss.backward(), inp.grad).


def _grad_py_azimuthalAverage(image, center=None):
    y, x = np.indices(image.shape)

    if not center:
        center = np.array([(x.max()-x.min())/2.0, (y.max()-y.min())/2.0])

    r = np.hypot(x - center[0], y - center[1])
    ind = np.argsort(r.flat)
    r_sorted = r.flat[ind]
    i_sorted = image.flat[ind]
    r_int = r_sorted.astype(int)
    deltar = r_int[1:] - r_int[:-1]  # Assumes all radii represented
    rind = np.where(deltar)[0] # location of changed radius
    nr = rind[1:] - rind[:-1]        # number of radius bin

    # Cumulative sum to figure out sums for each radius bin
    csim = np.cumsum(i_sorted, dtype=float)
    tbin = csim[rind[1:]] - csim[rind[:-1]]
    radial_prof = tbin / nr
    return radial_prof


def _grad_py_cal_power(grad):
    psd1D_total = []
    grad = grad.transpose(0,2,3,1)
    for i in range(len(grad)):
        data = grad[i]
        data = np.sum(data,axis=2)
        # grad.py ran on numpy 1.x, whose fft2 computes float32 input in float64; numpy >= 2 keeps
        # float32, so the cast restores the original arithmetic
        f = np.fft.fft2(data.astype(np.float64))
        fshift = np.fft.fftshift(f)

        magnitude_spectrum = np.abs(fshift)
        psd1D = _grad_py_azimuthalAverage(magnitude_spectrum)
        psd1D = (psd1D-np.min(psd1D))/(np.max(psd1D)-np.min(psd1D))
        psd1D_total.append(psd1D)
    psd1D_total = np.array(psd1D_total)
    _dim = psd1D_total.shape[1]
    psd1D_org_mean = np.zeros(_dim)
    for x in range(_dim):
        psd1D_org_mean[x] = np.mean(psd1D_total[:,x])
    return psd1D_org_mean


def _grad_py_input_gradients(model, images, labels, batch_size=4):
    criterion = torch.nn.CrossEntropyLoss()
    model = model.eval()
    grad_arr = []
    for start in range(0, len(images), batch_size):
        inp = images[start:start + batch_size].clone().requires_grad_(True)
        loss = criterion(model(inp), labels[start:start + batch_size])
        loss.backward()
        grad_arr.append(inp.grad.cpu().detach())
    return torch.cat(grad_arr).numpy()


@pytest.mark.parametrize("size", [32, 64])
def test_freqbias_equals_a_transcription_of_grad_py(size):
    model = _small_cnn()
    gen = torch.Generator().manual_seed(size)
    x, y = torch.rand(10, 3, size, size, generator=gen), torch.randint(0, 3, (10,), generator=gen)
    expected = _grad_py_cal_power(_grad_py_input_gradients(model, x, y))
    ours = S.learning_priority(model, x, y, measure="freqbias", normalize=None, batch_size=3)
    m = int((size - 1) / np.sqrt(2))
    assert expected.shape == ours.shape == (m - 1,)  # 20 bins at 32 px, 43 at 64 px
    assert np.abs(ours.double().numpy() - expected).max() <= 1e-6
    # the profile on identical gradient maps agrees to float64 rounding
    g = torch.from_numpy(_grad_py_input_gradients(model, x, y)).sum(1)
    per_image = S.freqbias_profile(g).mean(0).numpy()
    np.testing.assert_allclose(per_image, _grad_py_cal_power(g[:, None].numpy()), rtol=0, atol=1e-12)
    assert S.measure_axis("freqbias", size).shape == (m - 1,)


def test_freqbias_differs_from_the_centred_variant():
    """The two are not the same number: centre, rounding and corners differ (README)."""
    model = _small_cnn()
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 3, (6,))
    fb = S.learning_priority(model, x, y, measure="freqbias", normalize=None)
    lc = S.learning_priority(model, x, y, measure="lin2022_centred", normalize=None)
    assert fb.shape == (20,) and lc.shape == (17,)
    np.testing.assert_allclose(S.measure_axis("lin2022_centred", 32), np.arange(17) / 16)


def test_bf16_autocast_keeps_fp32_spectra():
    model = _small_cnn()
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 3, (6,))
    p32 = S.learning_priority(model, x, y)
    p16 = S.learning_priority(model, x, y, autocast_dtype=torch.bfloat16)
    assert p16.dtype == torch.float32
    assert S.cosine(p16, p32) > 0.98


# ------------------------------------------------------------------------------- summaries


def test_summaries_of_known_spectra():
    p = np.zeros(33)
    p[16] = 1.0
    s = S.summarize(p)
    assert s["centroid"] == pytest.approx(0.5)
    assert s["peak"] == pytest.approx(0.5)
    assert s["mid"] == pytest.approx(1.0) and s["low"] == 0 and s["high"] == 0
    assert s["entropy"] == pytest.approx(0.0)

    flat = np.ones(33)
    s = S.summarize(flat)
    assert s["centroid"] == pytest.approx(0.5)
    assert s["entropy"] == pytest.approx(np.log(33))
    assert s["low"] + s["mid"] + s["high"] == pytest.approx(1.0)

    dc_heavy = np.ones(33)
    dc_heavy[0] = 32.0  # half of the mass at DC
    assert S.summarize(dc_heavy)["low"] > 0.5
    nodc = S.summarize(dc_heavy, exclude_dc=True)
    assert nodc["centroid"] == pytest.approx(np.arange(1, 33).mean() / 32)


def test_value_at_band_mass_alignment_cosine():
    p = np.arange(17, dtype=float)
    assert S.value_at(p, 0.5) == 8.0
    assert S.value_at(p, 1.0) == 16.0
    with pytest.raises(ValueError):
        S.value_at(p, 1.5)
    u = np.ones(17) / 17
    assert S.band_mass(u, 0.5, 0.25) == pytest.approx(5 / 17)
    a = np.zeros(17)
    a[8] = 1
    assert S.alignment(p, a) == pytest.approx(8 / p.sum())
    assert S.alignment(u, u) == pytest.approx(1 / 17)
    assert S.cosine(p, 3 * p) == pytest.approx(1.0)
    assert S.cosine(a, np.roll(a, 1)) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        S.alignment(p, np.ones(5))


@pytest.mark.parametrize("measure", ["power", "freqbias", "lin2022_centred"])
def test_psd_command_prints_and_plots_every_measure_on_its_own_axis(measure, tmp_path, capsys):
    from spectral_ray.cli import main

    out = tmp_path / f"{measure}.png"
    assert main(["psd", "--model", "test_resnet", "--size", "32", "--n", "4", "--measure", measure,
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert ("r/r_max" if measure == "freqbias" else "k/K") in text
    assert out.stat().st_size > 1000


# ----------------------------------------------------------- the artifact-weighted alignment


def _smooth_images(n=16, size=32, seed=0):
    """1/f² fields in [0, 1], (n, 1, size, size): natural-image-like, little power at high k."""
    from spectral_ray.artifacts import reference_images

    return np.array(reference_images(size, n, seed))


@pytest.mark.parametrize("omega,size", [(0.25, 32), (0.5, 32), (0.75, 64)])
def test_artifact_weight_of_a_band_peaks_at_its_ring(omega, size):
    from spectral_ray.artifacts import get_artifact

    x = _smooth_images(size=size)
    ax = get_artifact("band", omega=omega, amplitude=0.3, bandwidth=0.02)(x, np.random.default_rng(1))
    w, p_art, p_img = S.artifact_weight(x, ax)
    ring = int(round(omega * size / 2))
    assert w.shape == (size // 2 + 1,) and w[0] == 0.0
    assert int(np.argmax(w)) == ring and int(np.argmax(p_art)) == ring
    assert w[ring] > 0.3 and np.delete(w, ring).max() < 0.1 * w[ring]
    assert p_art.sum() == pytest.approx(1.0) and p_img.sum() == pytest.approx(1.0) and p_img[0] == 0.0


def test_artifact_weight_of_white_noise_on_a_power_law_field_rises_with_frequency():
    rng = np.random.default_rng(0)
    x = power_law_field(64, 2.0, rng, batch=32)[:, None]
    w, p_art, _ = S.artifact_weight(x, x + 0.5 * x.std() * rng.standard_normal(x.shape))
    k = np.arange(1, 33)
    assert np.corrcoef(k, w[1:])[0, 1] > 0.9
    assert np.all(np.diff(w[1:]) > -0.02)  # rising, up to the ring-to-ring scatter
    assert w[1] < 0.01 and w[-1] > 0.5
    assert p_art[1:].std() / p_art[1:].mean() < 0.2  # white: flat P_art


def _low_and_high_priorities(bins):
    k = np.arange(bins, dtype=float)
    low, high = 1.0 / (1.0 + k) ** 2, (k / k[-1]) ** 2
    return low / low.sum(), high / high.sum()


@pytest.mark.parametrize("target,family", [("ct_lesion", "photon_noise"), ("mri_knee", "nlm")])
def test_shortcut_alignment_tells_priorities_apart_for_broadband_artifacts(target, family):
    """The degenerate case of the ≥ 10 %-of-peak band mass: for photon noise and NLM every bin is in
    the band (band mass 1 for every priority); the weighted alignment ranks them."""
    from spectral_ray.artifacts import get_artifact
    from spectral_ray.data import get_dataset
    from spectral_ray.experiment import artifact_band_mass

    x = get_dataset(target, n=24, size=32, channels=1, seed=0).images
    art = get_artifact(family)
    w, _, _ = S.artifact_weight(x, art(x, np.random.default_rng(0)))
    low, high = _low_and_high_priorities(17)
    signature = art.signature(32)  # what alignment_* and band_alignment_* use
    assert artifact_band_mass(low, signature) == pytest.approx(1.0) == artifact_band_mass(high, signature)
    a_low, a_high = S.shortcut_alignment(low, w), S.shortcut_alignment(high, w)
    assert 0.0 <= a_low < a_high <= 1.0  # both artifacts take most of the power at high k
    assert a_high > 2 * a_low
    assert w[0] == 0.0 and np.ptp(w[1:]) > 0.01


def test_shortcut_alignment_known_answers():
    low, high = _low_and_high_priorities(17)
    flat = np.r_[0.0, np.full(16, 0.3)]
    assert S.shortcut_alignment(low, flat) == pytest.approx(0.3) == S.shortcut_alignment(high, flat)
    # DC-free: the DC bin of the priority does not dilute it, and w_0 never counts
    peaked = np.zeros(17)
    peaked[4] = 1.0
    p = np.zeros(17)
    p[0], p[4] = 0.9, 0.1
    assert S.shortcut_alignment(p, peaked) == pytest.approx(1.0)
    assert S.shortcut_alignment(np.r_[0.0, np.ones(16)] / 16, peaked) == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match="same bins"):
        S.shortcut_alignment(low, flat[:-1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.shortcut_alignment(low, 2 * np.ones(17))


def test_artifact_weight_of_an_identity_artifact_is_zero():
    x = _smooth_images(n=4)
    w, p_art, _ = S.artifact_weight(x, x.copy())
    assert not w.any() and not p_art.any()
    assert S.shortcut_alignment(np.full(17, 1 / 17), w) == 0.0


def test_directional_derivative_matches_a_finite_difference():
    torch.manual_seed(0)
    model = _small_cnn().double()
    x = torch.rand(6, 3, 16, 16)
    delta = 0.1 * torch.randn(6, 3, 16, 16)
    y = torch.randint(0, 3, (6,))
    dots, bounds = S.directional_derivatives(model.float(), x, delta, y, batch_size=4)
    model = model.double().eval()
    eps = 1e-4

    def loss(z):
        return torch.nn.functional.cross_entropy(model(z.double()), y, reduction="none").detach().numpy()

    fd = (loss(x + eps * delta) - loss(x - eps * delta)) / (2 * eps)
    np.testing.assert_allclose(dots, fd, rtol=2e-3, atol=1e-6)
    assert np.all(dots**2 <= bounds * (1 + 1e-9))


def test_artifact_sensitivity_along_the_gradient_is_fully_relative():
    torch.manual_seed(0)
    model = _small_cnn()
    x, y = torch.rand(5, 3, 16, 16), torch.randint(0, 3, (5,))
    x.requires_grad_(True)
    torch.nn.functional.cross_entropy(model.eval()(x), y, reduction="sum").backward()
    g = x.grad.detach().numpy()
    x = x.detach().numpy()
    along = S.artifact_sensitivity(model, x, x + 0.01 * g, y)
    assert along["relative"] == pytest.approx(1.0, rel=1e-4)
    assert along["sensitivity"] == pytest.approx(np.mean((0.01 * (g**2).reshape(5, -1).sum(1)) ** 2), rel=1e-4)
    rng = np.random.default_rng(0)
    random = S.artifact_sensitivity(model, x, x + 0.01 * rng.standard_normal(x.shape).astype(np.float32), y)
    assert 0.0 <= random["relative"] < 0.05  # a random direction is nearly orthogonal in 768 dimensions
    assert np.isnan(S.artifact_sensitivity(model, x, x, y)["relative"])
