"""Embedded binary targets with patient groups: ``ct_lesion`` and ``mri_knee``.

Both are simulated patches (several slices per simulated patient; the label belongs to the
patient) passed through the CT / MR acquisitions of :mod:`spectral_ray.data.phantoms`.

**The class cue is a mid/low-frequency shape, on purpose.** The shortcut artifacts of this
project add band-limited or photon noise (more high frequencies) or take high frequencies away
(non-local means, low-pass). A first prototype used "spiculated = malignant": noise made benign
lesions look spiculated, so O.O.D. AUC fell with no shortcut in training. Here

* ``ct_lesion``: benign = smooth round/oval nodule (ellipticity only, harmonic m = 2);
  malignant = *lobulated* nodule (harmonics m = 3…5 of the contour with amplitude up to 30 % of
  the radius: bumps several pixels wide and 1–3 px high). Noise of a few % of the image std
  cannot draw lobes of that size, and blurring rounds their corners without erasing them.
  Overlap: lobulation amplitude starts near zero, benign nodules are elliptical, vessels touch
  the nodule in both classes, slices near the nodule's poles are small, and size, density,
  position, dose and window are jittered identically in both classes.
* ``mri_knee``: healthy = continuous dark ligament band (ACL-like) between femur and tibia;
  injured = a *gap* several pixels long in the band, filled with fluid/edema (complete tear:
  across the whole thickness, distal stump tilted; partial tear: part of the thickness and only
  on some slices). Overlap: healthy bands can carry intermediate-signal (mucoid) patches, partial
  tears are visible on a subset of a patient's slices only, band pose/thickness, MR weighting,
  truncation and noise are jittered; joint effusion is a weak secondary cue (more frequent when
  injured), as in real knees.
"""

from __future__ import annotations

import numpy as np

from spectral_ray.data import phantoms as ph
from spectral_ray.data.arrays import check_params, with_channels
from spectral_ray.data.registry import ImageDataset, register_dataset

SUPERSAMPLE = 2


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _patients(n: int, slices: int, seed: int) -> tuple[int, np.ndarray]:
    if slices < 1:
        raise ValueError(f"slices must be >= 1, got {slices}")
    n_pat = -(-n // slices)
    y = np.random.default_rng([seed, 0]).permutation(np.arange(n_pat) % 2).astype(np.int64)
    return n_pat, y


def _patient_pose(rng, angle=np.pi):
    return {
        "angle": _u(rng, -angle, angle),
        "scale": _u(rng, 0.9, 1.1),
        "shift": (_u(rng, -0.06, 0.06), _u(rng, -0.06, 0.06)),
        "flip": bool(rng.random() < 0.5),
    }


# ----------------------------------------------------------------------------- ct_lesion


def _nodule_patient(rng, malignant: bool, lobulation: tuple[float, float]) -> dict:
    p = {
        "pose": _patient_pose(rng),
        "c": (_u(rng, -0.22, 0.22), _u(rng, -0.22, 0.22)),
        "R": _u(rng, 0.24, 0.4),
        "hu": _u(rng, -60, 60),
        "n0": 10 ** _u(rng, 4.6, 5.6),
        "extra": _u(rng, 3.0, 4.2),
        "fov": _u(rng, 60, 90),
        "window": (-600 + _u(rng, -80, 80), 1500 * np.exp(0.12 * rng.standard_normal())) if rng.random() < 0.8 else (40 + _u(rng, -20, 20), 400 * np.exp(0.12 * rng.standard_normal())),
        "wall": rng.random() < 0.5,
        "wall_angle": _u(rng, 0, 2 * np.pi),
        "wall_depth": _u(rng, 0.1, 0.45),
    }
    harm = {2: (_u(rng, 0.0, 0.18), _u(rng, 0, 2 * np.pi))}
    if malignant:
        ms = rng.choice([3, 4, 5], size=int(rng.integers(1, 3)), replace=False)
        total = _u(*((rng,) + lobulation))
        w = rng.dirichlet(np.ones(len(ms)))
        for m, wi in zip(ms, w):
            harm[int(m)] = (total * wi, _u(rng, 0, 2 * np.pi))
    else:
        harm[3] = (_u(rng, 0.0, 0.04), _u(rng, 0, 2 * np.pi))
    p["harm"] = harm
    p["twist"] = _u(rng, -0.6, 0.6)
    return p


def _slice_pose(pose: dict, rng) -> dict:
    """The patient's pose with a small per-slice jitter (breathing, positioning)."""
    return dict(
        pose,
        angle=pose["angle"] + _u(rng, -0.08, 0.08),
        shift=(pose["shift"][0] + _u(rng, -0.03, 0.03), pose["shift"][1] + _u(rng, -0.03, 0.03)),
    )


def _vessels(rng, c, R) -> list:
    vessels = []
    for _ in range(int(rng.integers(2, 7))):
        a = _u(rng, 0, np.pi)
        off = _u(rng, -0.9, 0.9)
        if rng.random() < 0.3:  # pass close to (touch) the nodule
            off = float(np.dot((-np.sin(a), np.cos(a)), c)) + rng.choice([-1, 1]) * R * _u(rng, 0.9, 1.3)
        vessels.append((a, off, _u(rng, 0.025, 0.07), _u(rng, -0.3, 0.3)))
    return vessels


def _nodule_slice(p: dict, z: float, r: int, rng) -> np.ndarray:
    cv = ph.canvas(r, **_slice_pose(p["pose"], rng))
    cv.paint(np.ones_like(cv.labels, bool), "lung")
    if p["wall"]:  # chest wall entering from one side of the patch
        a = p["wall_angle"]
        depth = cv.x * np.cos(a) + cv.y * np.sin(a) + 0.08 * np.sin(3 * (-cv.x * np.sin(a) + cv.y * np.cos(a)))
        edge = 1.0 - p["wall_depth"]
        cv.paint(depth > edge, "muscle")
        cv.paint(depth > edge + 0.12, "fat")
        cv.paint((depth > edge + 0.03) & (depth < edge + 0.07), "bone")
    for a, off, w, slope in _vessels(rng, p["c"], p["R"]):
        d = -cv.x * np.sin(a) + cv.y * np.cos(a) - off - slope * z
        cv.paint(np.abs(d) < w / 2, "blood")
    scale = np.sqrt(max(1.0 - z**2, 0.05))
    rho, theta = ph.polar(cv, *p["c"])
    radius = np.ones_like(rho)
    for m, (amp, phase) in p["harm"].items():
        radius = radius + amp * np.cos(m * (theta - phase - p["twist"] * z))
    cv.paint(rho < p["R"] * scale * radius, "lesion")
    return cv.labels


@register_dataset("ct_lesion", kind="target")
def ct_lesion(
    size: int = 64,
    channels: int = 1,
    n: int = 800,
    seed: int = 0,
    slices: int = 5,
    lobulation: tuple[float, float] = (0.1, 0.4),
    progress: bool = True,
) -> ImageDataset:
    """Simulated CT lung patches: benign (smooth round/oval) vs malignant (lobulated) nodule."""
    from tqdm.auto import tqdm

    check_params(size, channels, n)
    lobulation = tuple(float(v) for v in lobulation)
    n_pat, ylab = _patients(n, slices, seed)
    r = size * SUPERSAMPLE
    images = np.zeros((n_pat * slices, size, size), np.float32)
    for pid in tqdm(range(n_pat), desc="ct_lesion", disable=not progress, leave=False):
        prng = np.random.default_rng([seed, 1, pid])
        p = _nodule_patient(prng, bool(ylab[pid]), lobulation)
        zs = np.linspace(-0.7, 0.7, slices) + prng.uniform(-0.05, 0.05, slices) if slices > 1 else prng.uniform(-0.3, 0.3, 1)
        for j, z in enumerate(zs):
            rng = np.random.default_rng([seed, 2, pid, j])
            hu = ph.hu_map(_nodule_slice(p, float(z), r, rng), rng, texture=15.0)
            hu = ph.downsample(hu, SUPERSAMPLE)
            images[pid * slices + j] = ph.ct_acquire(
                hu, rng, n0=p["n0"], fov_mm=p["fov"], window=p["window"], n_angles=64, extra_attenuation=p["extra"], circle=False
            )
    labels = np.repeat(ylab, slices)[:n]
    groups = np.repeat(np.arange(n_pat, dtype=np.int64), slices)[:n]
    return ImageDataset(images=with_channels(images[:n], channels), labels=labels, classes=["benign", "malignant"], groups=groups)


# ----------------------------------------------------------------------------- mri_knee


def _knee_patient(rng, injured: bool) -> dict:
    pose = _patient_pose(rng, angle=0.25)
    pose["flip"] = bool(rng.random() < 0.5)
    p = {"pose": pose, "injured": injured}
    p["femur"] = (_u(rng, -0.1, 0.1), _u(rng, -0.85, -0.7), _u(rng, 0.65, 0.85), _u(rng, 0.5, 0.62))
    p["tibia_top"] = _u(rng, 0.3, 0.42)
    p["acl0"] = (_u(rng, 0.15, 0.35), _u(rng, -0.3, -0.18))  # femoral attachment (posterior, up)
    p["acl1"] = (_u(rng, -0.4, -0.2), p["tibia_top"] + 0.02)  # tibial attachment (anterior, down)
    p["width"] = _u(rng, 0.1, 0.16)
    p["oblique"] = _u(rng, -0.08, 0.08)
    p["effusion"] = rng.random() < (0.45 if injured else 0.35)
    p["eff_size"] = _u(rng, 0.08, 0.2)
    p["weighting"] = str(rng.choice(["PD", "PD", "PD", "T2", "T2", "T1"]))
    p["fat_sat"] = bool(rng.random() < 0.35)
    p["noise"] = _u(rng, 0.02, 0.06)
    p["keep"] = _u(rng, 0.6, 1.0)
    if injured:
        complete = rng.random() < 0.6
        p["tear"] = {
            "complete": complete,
            "t0": _u(rng, 0.3, 0.65),
            "len": _u(rng, 0.16, 0.3),
            "depth": 1.0 if complete else _u(rng, 0.6, 0.9),
            "side": float(rng.choice([-1, 1])),
            "s_range": (-1.0, 1.0) if complete else tuple(sorted((_u(rng, -1.0, -0.2), _u(rng, 0.2, 1.0)))),
            "tilt": _u(rng, 0.05, 0.2) if complete else 0.0,
        }
    else:
        p["mucoid"] = None
        if rng.random() < 0.15:
            p["mucoid"] = {"t0": _u(rng, 0.3, 0.65), "len": _u(rng, 0.08, 0.2), "depth": _u(rng, 0.3, 0.6), "side": float(rng.choice([-1, 1]))}
    return p


def _knee_slice(p: dict, s: float, r: int, rng) -> np.ndarray:
    cv = ph.canvas(r, **_slice_pose(p["pose"], rng))
    cv.paint(np.ones_like(cv.labels, bool), "fat")
    # joint fluid / soft tissue between the bones
    cv.paint(ph.ellipse(cv, _u(rng, 0.2, 0.5), _u(rng, -0.1, 0.2), _u(rng, 0.25, 0.45), _u(rng, 0.25, 0.4)), "muscle")
    if p["effusion"]:
        cv.paint(ph.ellipse(cv, _u(rng, -0.6, -0.4), _u(rng, -0.35, -0.1), p["eff_size"] * 1.6, p["eff_size"]), "fluid")
    fx, fy, fa, fb = p["femur"]
    cv.paint(ph.ellipse(cv, fx, fy, fa + 0.05, fb + 0.05), "cartilage")
    cv.paint(ph.ellipse(cv, fx, fy, fa, fb), "bone")
    cv.paint(ph.ellipse(cv, fx, fy, fa - 0.05, fb - 0.05), "marrow")
    top = p["tibia_top"]
    tib = cv.y > top + 0.04 * cv.x**2
    cv.paint(tib, "cartilage")
    cv.paint(cv.y > top + 0.05 + 0.04 * cv.x**2, "bone")
    cv.paint((cv.y > top + 0.1 + 0.04 * cv.x**2) & (np.abs(cv.x) < 0.95), "marrow")
    for sx in (-1, 1):  # menisci: dark triangles at the ends of the joint space
        mx = sx * _u(rng, 0.65, 0.8)
        d = np.abs(cv.x - mx) + 2.5 * np.abs(cv.y - (top - 0.04))
        cv.paint(d < _u(rng, 0.12, 0.18), "ligament")
    # the ligament band; out-of-plane position s in [-1, 1] across its width
    if abs(s) < 1.0:
        shift = p["oblique"] * s
        p0 = (p["acl0"][0] + shift, p["acl0"][1])
        p1 = (p["acl1"][0] + shift, p["acl1"][1])
        t, d = ph.segment_coords(cv, p0, p1)
        half = p["width"] / 2 * np.sqrt(1 - s**2) ** 0.5
        band = (t > -0.05) & (t < 1.05) & (np.abs(d) < half)
        tear = p.get("tear")
        if tear is not None and tear["tilt"]:  # complete tear: the distal stump sags
            t_cut = tear["t0"] + tear["len"]
            c, sn = np.cos(tear["tilt"]), np.sin(tear["tilt"])
            px = p0[0] + (p1[0] - p0[0]) * t_cut
            py = p0[1] + (p1[1] - p0[1]) * t_cut
            dx, dy = cv.x - px, cv.y - py
            xr, yr = c * dx - sn * dy + px, sn * dx + c * dy + py
            t2, d2 = ph.segment_coords(ph.Canvas(cv.labels, xr, yr), p0, p1)
            band = ((t < t_cut) & band) | ((t2 >= t_cut) & (t2 < 1.05) & (np.abs(d2) < half))
        cv.paint(band, "ligament")
        if tear is not None and tear["s_range"][0] <= s <= tear["s_range"][1]:
            gap = (t > tear["t0"]) & (t < tear["t0"] + tear["len"]) & (tear["side"] * d > half - 2 * half * tear["depth"]) & (np.abs(d) < half * 1.25)
            cv.paint(gap, "edema" if rng.random() < 0.5 else "fluid")
        muc = p.get("mucoid")
        if muc is not None:
            patch = (t > muc["t0"]) & (t < muc["t0"] + muc["len"]) & (muc["side"] * d > half - 2 * half * muc["depth"]) & (np.abs(d) < half)
            cv.paint(patch, "cartilage")
    return cv.labels


@register_dataset("mri_knee", kind="target")
def mri_knee(
    size: int = 64,
    channels: int = 1,
    n: int = 800,
    seed: int = 0,
    slices: int = 5,
    progress: bool = True,
) -> ImageDataset:
    """Simulated sagittal knee MR patches: intact vs torn (partial/complete) ligament band."""
    from tqdm.auto import tqdm

    check_params(size, channels, n)
    n_pat, ylab = _patients(n, slices, seed)
    r = size * SUPERSAMPLE
    images = np.zeros((n_pat * slices, size, size), np.float32)
    for pid in tqdm(range(n_pat), desc="mri_knee", disable=not progress, leave=False):
        prng = np.random.default_rng([seed, 1, pid])
        p = _knee_patient(prng, bool(ylab[pid]))
        ss = np.linspace(-0.8, 0.8, slices) + prng.uniform(-0.05, 0.05, slices) if slices > 1 else prng.uniform(-0.4, 0.4, 1)
        rngs, signals = [], []
        for j, s in enumerate(ss):
            rng = np.random.default_rng([seed, 2, pid, j])
            lab = _knee_slice(p, float(s), r, rng)
            signals.append(ph.mr_signal(lab, rng, weighting=p["weighting"], fat_sat=p["fat_sat"]))
            rngs.append(rng)
        images[pid * slices : (pid + 1) * slices] = ph.mr_acquire(np.stack(signals), size, rngs, keep=p["keep"], noise=p["noise"], undersample=0.0)
    labels = np.repeat(ylab, slices)[:n]
    groups = np.repeat(np.arange(n_pat, dtype=np.int64), slices)[:n]
    return ImageDataset(images=with_channels(images[:n], channels), labels=labels, classes=["intact", "torn"], groups=groups)
