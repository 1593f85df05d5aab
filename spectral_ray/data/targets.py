"""Embedded binary targets with patient groups: ``ct_lesion`` and ``mri_knee``.

Both are simulated patches (several slices per simulated patient; the label belongs to the
patient) passed through the CT / MR acquisitions of :mod:`spectral_ray.data.phantoms`.

**The class cue is a mid/low-frequency shape, on purpose.** The shortcut artifacts of this
project add band-limited or photon noise (more high frequencies) or take high frequencies away
(non-local means, low-pass). A first prototype used "spiculated = malignant": noise made benign
lesions look spiculated, so O.O.D. AUC fell with no shortcut in training. Here

* ``ct_lesion``: benign = smooth round/oval nodule (ellipticity only, harmonic m = 2);
  malignant = *lobulated* nodule (harmonics m = 3…5 of the contour with total amplitude 20–45 %
  of the radius: bumps several pixels wide and 2–4 px high). Noise of a few % of the image std
  cannot draw lobes of that size, and blurring rounds their corners without erasing them.
  Overlap: benign nodules are elliptical, vessels touch the nodule in both classes, slices near
  the nodule's poles are small, and size, density, position, dose and window are jittered
  identically in both classes. The reconstruction kernel (FBP filter, ramp … hann) varies per
  patient independently of the label, so blur is a nuisance both classes show.
* ``mri_knee``: intact = taut, dark ligament band (ACL-like) between femur and tibia; torn =
  *complete* tear (a discontinuity over 35–60 % of the band replaced by a swollen pseudomass of
  edematous signal, distal stump sagging) or *partial* tear (continuous band, thickened 1.6–2.2×,
  intermediate signal); "kissing" bone bruises (diffuse marrow edema) in 70 % of torn and 10 % of
  intact knees. Every class structure is a soft partial-volume layer several pixels in size with
  the same edge softness in both classes, so no class difference lives in fine texture or edge
  sharpness. Overlap: mucoid degeneration (thickened, intermediate signal) in 15 % of intact
  knees, band visibility varies with the slice, joint effusion only slightly more frequent when
  torn. The acquisition matrix (35–100 % of the grid) and the noise level vary per patient,
  independently of the label, as in any archive: a model trained on such data does not read blur
  or noise as a class cue. (A first design — a small fluid-filled gap in a crisp band, fixed
  resolution — was imitated by low-pass (+0.21 O.O.D. − I.I.D. AUC at d = 0) and photon noise
  (−0.11); docs/SHORTCUTS.md, runs A–E.)
"""

from __future__ import annotations

import numpy as np

from spectral_ray.data import phantoms as ph
from spectral_ray.data.arrays import with_channels
from spectral_ray.data.dataset import check_grid
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
        "R": _u(rng, 0.3, 0.45),
        "hu": _u(rng, -60, 60),
        "n0": 10 ** _u(rng, 4.6, 5.6),
        "extra": _u(rng, 3.0, 4.2),
        "fov": _u(rng, 60, 90),
        "window": (-600 + _u(rng, -80, 80), 1500 * np.exp(0.12 * rng.standard_normal())) if rng.random() < 0.8 else (40 + _u(rng, -20, 20), 400 * np.exp(0.12 * rng.standard_normal())),
        "wall": rng.random() < 0.5,
        "wall_angle": _u(rng, 0, 2 * np.pi),
        "wall_depth": _u(rng, 0.1, 0.45),
    }
    harm = {2: (_u(rng, 0.0, 0.12), _u(rng, 0, 2 * np.pi))}
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
    # reconstruction kernel, sharp to smooth: drawn per patient independently of the label (as
    # in any archive), so a clean-trained model does not read blur (low-pass, denoising) as a cue
    p["kernel"] = str(rng.choice(["ramp", "shepp-logan", "cosine", "hamming", "hann"]))
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
    for _ in range(int(rng.integers(1, 5))):
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
    lobulation: tuple[float, float] = (0.2, 0.45),
    progress: bool = True,
) -> ImageDataset:
    """Simulated CT lung patches: benign (smooth round/oval) vs malignant (lobulated) nodule."""
    from tqdm.auto import tqdm

    check_grid(size, channels, n)
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
                hu, rng, n0=p["n0"], fov_mm=p["fov"], window=p["window"], n_angles=64, extra_attenuation=p["extra"], circle=False,
                filter_name=p["kernel"],
            )
    labels = np.repeat(ylab, slices)[:n]
    groups = np.repeat(np.arange(n_pat, dtype=np.int64), slices)[:n]
    return ImageDataset(images=with_channels(images[:n], channels), labels=labels, classes=["benign", "malignant"], groups=groups)


# ----------------------------------------------------------------------------- mri_knee


def _step(x):
    """Smooth 0 → 1 step, about ±1 wide (x in units of the edge softness)."""
    return 0.5 * (1.0 + np.tanh(x))


def _knee_patient(rng, injured: bool) -> dict:
    pose = _patient_pose(rng, angle=0.25)
    p = {"pose": pose, "injured": injured}
    p["femur"] = (_u(rng, -0.1, 0.1), _u(rng, -0.85, -0.7), _u(rng, 0.65, 0.85), _u(rng, 0.5, 0.62))
    p["tibia_top"] = _u(rng, 0.3, 0.42)
    p["acl0"] = (_u(rng, 0.15, 0.35), _u(rng, -0.3, -0.18))  # femoral attachment (posterior, up)
    p["acl1"] = (_u(rng, -0.4, -0.2), p["tibia_top"] + 0.02)  # tibial attachment (anterior, down)
    p["width"] = _u(rng, 0.1, 0.16)
    p["oblique"] = _u(rng, -0.08, 0.08)
    p["soft"] = _u(rng, 0.035, 0.06)  # partial-volume edge width of the band, both classes
    p["effusion"] = rng.random() < (0.45 if injured else 0.35)
    p["eff_size"] = _u(rng, 0.08, 0.2)
    p["weighting"] = str(rng.choice(["PD", "PD", "PD", "T2", "T2", "T1"]))
    p["fat_sat"] = bool(rng.random() < 0.35)
    p["noise"] = _u(rng, 0.02, 0.06)
    p["keep"] = _u(rng, 0.6, 1.0)
    # acquisition matrix: 35-100 % of the output grid, zero-filled. Resolution varies between
    # patients independently of the label, as in any clinical archive, so a clean-trained model
    # does not read blur (low-pass, denoising) as a class cue.
    p["res"] = _u(rng, 0.35, 1.0)
    p["thick"], p["mix"], p["gap"] = 1.0, _u(rng, 0.0, 0.1), None
    if injured:
        if rng.random() < 0.65:  # complete tear: a long discontinuity filled by a swollen pseudomass
            length = _u(rng, 0.35, 0.6)
            p["gap"] = {
                "t0": _u(rng, 0.15, 0.85 - length),
                "len": length,
                "mix": _u(rng, 0.5, 0.9),
                "swell": _u(rng, 1.5, 2.2),
                "sag": _u(rng, 0.05, 0.2),
            }
        else:  # partial tear: continuous but thickened band of intermediate signal
            p["thick"], p["mix"] = _u(rng, 1.6, 2.2), _u(rng, 0.4, 0.7)
    elif rng.random() < 0.15:  # mucoid degeneration: the mimic of a partial tear in intact knees
        p["thick"], p["mix"] = _u(rng, 1.2, 1.6), _u(rng, 0.2, 0.4)
    p["bruise"] = None  # "kissing" bone bruises of the femoral condyle and the tibial plateau
    if rng.random() < (0.7 if injured else 0.1):
        p["bruise"] = {"alpha": _u(rng, 0.4, 0.8), "radius": _u(rng, 0.12, 0.25), "s": _u(rng, -0.5, 0.5), "dx": _u(rng, -0.5, 0.5)}
    return p


def _ligament_layers(p: dict, s: float, cv) -> list:
    """Soft (partial-volume) layers of the ligament band at out-of-plane position s ∈ (−1, 1)."""
    if abs(s) >= 1.0:
        return []
    w = p["soft"]
    shift = p["oblique"] * s
    p0 = (p["acl0"][0] + shift, p["acl0"][1])
    p1 = (p["acl1"][0] + shift, p["acl1"][1])
    t, d = ph.segment_coords(cv, p0, p1)
    length = float(np.hypot(p1[0] - p0[0], p1[1] - p0[1]))
    half = p["width"] * p["thick"] / 2 * np.sqrt(1 - s**2) ** 0.5
    along = _step((t + 0.05) * length / w) * _step((1.05 - t) * length / w)
    gap = p["gap"]
    if gap is None:
        lig = _step((half - np.abs(d)) / w) * along
        return [(lig, "ligament"), (p["mix"] * lig, "edema")]
    t0, t1 = gap["t0"], gap["t0"] + gap["len"]
    sag = gap["sag"] * np.clip((t - t1) / max(1.0 - t1, 1e-3), 0.0, 1.0)  # the distal stump sags
    lig = _step((half - np.abs(d - sag)) / w) * along * (1.0 - _step((t - t0) * length / w) * _step((t1 - t) * length / w))
    tc = (t0 + t1) / 2
    mass = _step(4.0 * (1.0 - np.hypot((t - tc) / (gap["len"] / 2), d / (half * gap["swell"] + 1e-6))))
    return [(lig, "ligament"), (gap["mix"] * mass, "edema")]


def _knee_slice(p: dict, s: float, r: int, rng):
    """(label map, soft layers) of one sagittal slice at out-of-plane position s."""
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
    layers = _ligament_layers(p, s, cv)
    b = p["bruise"]
    if b is not None:  # diffuse marrow edema, strongest on the slices nearest its centre
        seen = np.exp(-((s - b["s"]) ** 2) / 0.5)
        g = lambda x0, y0: np.exp(-((cv.x - x0) ** 2 + (cv.y - y0) ** 2) / (2 * b["radius"] ** 2))  # noqa: E731
        blobs = g(fx + 0.2 + 0.3 * b["dx"], fy + fb - 0.12) + g(0.25 + 0.3 * b["dx"], top + 0.15)
        layers.append((b["alpha"] * seen * np.clip(blobs, 0.0, 1.0) * (cv.labels == ph.T["marrow"]), "edema"))
    return cv.labels, layers


@register_dataset("mri_knee", kind="target")
def mri_knee(
    size: int = 64,
    channels: int = 1,
    n: int = 800,
    seed: int = 0,
    slices: int = 5,
    progress: bool = True,
) -> ImageDataset:
    """Simulated sagittal knee MR patches: intact vs torn (complete/partial) ligament band."""
    from tqdm.auto import tqdm

    check_grid(size, channels, n)
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
            lab, layers = _knee_slice(p, float(s), r, rng)
            signals.append(ph.mr_signal(lab, rng, weighting=p["weighting"], fat_sat=p["fat_sat"], layers=layers))
            rngs.append(rng)
        images[pid * slices : (pid + 1) * slices] = ph.mr_acquire(
            np.stack(signals), size, rngs, keep=p["keep"] * p["res"], keep_read=p["res"], noise=p["noise"], undersample=0.0
        )
    labels = np.repeat(ylab, slices)[:n]
    groups = np.repeat(np.arange(n_pat, dtype=np.int64), slices)[:n]
    return ImageDataset(images=with_channels(images[:n], channels), labels=labels, classes=["intact", "torn"], groups=groups)
