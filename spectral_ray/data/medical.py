"""The ``medical`` source: simulated radiology, modality × anatomy classes (RadImageNet-like).

Each image is a random anatomical phantom (body outline, fat/muscle layers, organs, vessels,
bones, lesions; the head follows the Shepp–Logan layout of skull, brain, ventricles) drawn on a
2× supersampled grid and passed through a clinical-like acquisition (see
:mod:`spectral_ray.data.phantoms`; docs/DATA.md gives the physics and its sources):

* CT (:func:`ct_image`): HU map with the patient couch → radon over π/2·size views → Poisson
  counts at the dose automatic exposure control picks for the protocol's noise level (head
  3-6 HU, body 8-16 HU, low-dose chest 20-35 HU) → FBP with the protocol's kernel (sharp for
  lung and bone windows, standard/smooth for brain and soft tissue) → display window.
* MR (:func:`mr_protocol`): spin-echo signal → an acquisition matrix of 50-100 % of the display
  grid (read) and 60-100 % phase resolution, zero-filled → complex noise at a tissue SNR of
  10-60 → a Fermi or Hamming reconstruction window (or none: Gibbs ringing) → magnitude.

Classes are ``{ct,mr}_{head,chest,abdomen,pelvis}`` (8). They are made to overlap, so that
pretraining on them is not trivial: pose (rotation, scale, shift, mirror), body size and aspect,
dose, display window and kernel, MR weighting (T1/T2/PD, fat saturation), matrix, window and
SNR are all jittered; chest slices sometimes catch the liver dome, abdominal slices the lung bases, and
abdomen and pelvis share body outline and bowel.
"""

from __future__ import annotations

import numpy as np

from spectral_ray.data import phantoms as ph
from spectral_ray.data.arrays import with_channels
from spectral_ray.data.dataset import check_grid
from spectral_ray.data.registry import ImageDataset, register_dataset

MODALITIES = ("ct", "mr")
ANATOMIES = ("head", "chest", "abdomen", "pelvis")
CLASSES = [f"{m}_{a}" for m in MODALITIES for a in ANATOMIES]
SUPERSAMPLE = 2


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _layers(cv, rng, a, b, *, visceral_fat: bool):
    """Body outline: subcutaneous fat, muscle wall and (abdomen/pelvis) visceral fat."""
    cv.paint(ph.ellipse(cv, 0, 0, a, b), "fat")
    f = _u(rng, 0.03, 0.09)
    m = _u(rng, 0.03, 0.07)
    cv.paint(ph.ellipse(cv, 0, 0, a - f, b - f), "muscle")
    if visceral_fat:
        cv.paint(ph.ellipse(cv, 0, 0, a - f - m, b - f - m), "fat")
    return a - f - m, b - f - m


def _spine(cv, rng, y):
    r = _u(rng, 0.065, 0.095)
    cv.paint(ph.ellipse(cv, _u(rng, -0.02, 0.02), y, r, r * _u(rng, 0.85, 1.1)), "bone")
    cv.paint(ph.ellipse(cv, 0, y, r * 0.72, r * 0.68), "marrow")
    cv.paint(ph.ellipse(cv, 0, y + r * 1.35, r * 0.35, r * 0.3), "csf")  # spinal canal


def _lesions(cv, rng, k, region_mask=None, extent=(0.6, 0.5)):
    for _ in range(k):
        r = _u(rng, 0.025, 0.09)
        cx, cy = _u(rng, -extent[0], extent[0]), _u(rng, -extent[1], extent[1])
        mask = ph.ellipse(cv, cx, cy, r, r * _u(rng, 0.7, 1.3), _u(rng, 0, np.pi))
        if region_mask is not None:
            mask &= region_mask
        cv.paint(mask, "lesion" if rng.random() < 0.7 else "edema")


def _bowel(cv, rng, k, inside):
    for _ in range(k):
        r = _u(rng, 0.04, 0.11)
        mask = ph.ellipse(cv, _u(rng, -0.5, 0.5), _u(rng, -0.45, 0.2), r, r * _u(rng, 0.6, 1.4), _u(rng, 0, np.pi)) & inside
        cv.paint(mask, str(rng.choice(["bowel", "bowel", "fluid", "air", "fat"])))


def head(cv, rng):
    a, b = _u(rng, 0.6, 0.78), _u(rng, 0.74, 0.9)
    cv.paint(ph.ellipse(cv, 0, 0, a, b), "fat")
    skull = _u(rng, 0.035, 0.08)
    a1, b1 = a - 0.025, b - 0.025
    cv.paint(ph.ellipse(cv, 0, 0, a1, b1), "bone")
    a2, b2 = a1 - skull, b1 - skull
    brain = ph.ellipse(cv, 0, 0.02, a2, b2)
    cv.paint(brain, "grey")
    cv.paint(ph.ellipse(cv, 0, 0.04, a2 * _u(rng, 0.55, 0.75), b2 * _u(rng, 0.55, 0.78)), "white")
    if rng.random() < 0.3:  # skull base level: orbits/sinuses (air) and smaller brain
        for s in (-1, 1):
            cv.paint(ph.ellipse(cv, s * _u(rng, 0.15, 0.3), -b2 * _u(rng, 0.6, 0.85), _u(rng, 0.06, 0.12), _u(rng, 0.05, 0.1)), "air")
    vx, vy = _u(rng, 0.05, 0.12), _u(rng, -0.12, 0.05)
    for s in (-1, 1):  # lateral ventricles (Shepp–Logan's inner ellipses)
        cv.paint(ph.ellipse(cv, s * vx, vy, _u(rng, 0.03, 0.08), _u(rng, 0.1, 0.24), s * _u(rng, 0.1, 0.4)), "csf")
    _lesions(cv, rng, int(rng.integers(0, 3)), brain, (a2 * 0.7, b2 * 0.7))


def chest(cv, rng):
    a, b = _u(rng, 0.74, 0.9), _u(rng, 0.5, 0.7)
    ai, bi = _layers(cv, rng, a, b, visceral_fat=False)
    inside = ph.ellipse(cv, 0, 0, ai, bi)
    lungs = np.zeros_like(inside)
    for s in (-1, 1):
        lungs |= ph.ellipse(cv, s * _u(rng, 0.3, 0.45), _u(rng, -0.06, 0.06), _u(rng, 0.2, 0.32), bi * _u(rng, 0.55, 0.85), s * _u(rng, 0, 0.25))
    lungs &= inside
    cv.paint(lungs, "lung")
    if rng.random() < 0.3:  # liver dome
        cv.paint(ph.ellipse(cv, -_u(rng, 0.25, 0.4), _u(rng, 0.0, 0.2), _u(rng, 0.15, 0.3), _u(rng, 0.12, 0.25)) & inside, "liver")
    cv.paint(ph.ellipse(cv, _u(rng, -0.05, 0.12), _u(rng, -0.15, 0.05), _u(rng, 0.14, 0.25), _u(rng, 0.12, 0.2), _u(rng, -0.5, 0.5)), "muscle")
    cv.paint(ph.ellipse(cv, _u(rng, -0.02, 0.06), _u(rng, -0.1, 0.05), _u(rng, 0.05, 0.1), _u(rng, 0.05, 0.09)), "blood")
    r = _u(rng, 0.035, 0.055)
    cv.paint(ph.ellipse(cv, _u(rng, 0.04, 0.12), bi * _u(rng, 0.4, 0.6), r, r), "blood")  # aorta
    _spine(cv, rng, bi * _u(rng, 0.7, 0.85))
    for t in np.linspace(0, 2 * np.pi, int(rng.integers(6, 12)), endpoint=False) + _u(rng, 0, 1):  # ribs
        cv.paint(ph.ellipse(cv, (ai + 0.01) * np.cos(t), (bi + 0.01) * np.sin(t), _u(rng, 0.02, 0.04), _u(rng, 0.015, 0.03), t), "bone")
    for _ in range(int(rng.integers(5, 16))):  # pulmonary vessels
        r = _u(rng, 0.01, 0.03)
        cv.paint(ph.ellipse(cv, _u(rng, -0.7, 0.7), _u(rng, -0.5, 0.5), r, r * _u(rng, 1, 2.5), _u(rng, 0, np.pi)) & lungs, "blood")
    _lesions(cv, rng, int(rng.integers(0, 3)), lungs)


def abdomen(cv, rng):
    a, b = _u(rng, 0.72, 0.9), _u(rng, 0.55, 0.75)
    ai, bi = _layers(cv, rng, a, b, visceral_fat=True)
    inside = ph.ellipse(cv, 0, 0, ai, bi)
    if rng.random() < 0.25:  # lung bases
        for s in (-1, 1):
            cv.paint(ph.ellipse(cv, s * _u(rng, 0.3, 0.4), bi * _u(rng, 0.35, 0.55), _u(rng, 0.1, 0.18), _u(rng, 0.06, 0.12)) & inside, "lung")
    _bowel(cv, rng, int(rng.integers(3, 12)), inside)
    liver = ph.ellipse(cv, -_u(rng, 0.22, 0.4), _u(rng, -0.15, 0.05), _u(rng, 0.25, 0.45), _u(rng, 0.22, 0.4), _u(rng, -0.3, 0.3)) & inside
    cv.paint(liver, "liver")
    if rng.random() < 0.7:
        cv.paint(ph.ellipse(cv, _u(rng, 0.4, 0.55), _u(rng, 0.0, 0.2), _u(rng, 0.1, 0.18), _u(rng, 0.07, 0.12), _u(rng, -0.8, -0.2)) & inside, "spleen")
    if rng.random() < 0.8:
        ky = bi * _u(rng, 0.35, 0.55)
        for s in (-1, 1):
            cv.paint(ph.ellipse(cv, s * _u(rng, 0.22, 0.33), ky, _u(rng, 0.07, 0.11), _u(rng, 0.1, 0.16), s * _u(rng, 0.2, 0.6)), "kidney")
    for x in (_u(rng, 0.03, 0.09), -_u(rng, 0.06, 0.12)):  # aorta, IVC
        r = _u(rng, 0.03, 0.05)
        cv.paint(ph.ellipse(cv, x, bi * _u(rng, 0.4, 0.55), r, r), "blood")
    _spine(cv, rng, bi * _u(rng, 0.72, 0.85))
    _lesions(cv, rng, int(rng.integers(0, 3)), liver)


def pelvis(cv, rng):
    a, b = _u(rng, 0.76, 0.92), _u(rng, 0.55, 0.72)
    ai, bi = _layers(cv, rng, a, b, visceral_fat=True)
    inside = ph.ellipse(cv, 0, 0, ai, bi)
    _bowel(cv, rng, int(rng.integers(0, 7)), inside)
    for s in (-1, 1):
        cv.paint(ph.ellipse(cv, s * _u(rng, 0.35, 0.5), bi * _u(rng, 0.3, 0.5), _u(rng, 0.2, 0.3), _u(rng, 0.14, 0.22), s * _u(rng, 0, 0.4)) & inside, "muscle")
    for s in (-1, 1):  # femoral heads / iliac bones
        cx, cy, r = s * _u(rng, 0.42, 0.56), _u(rng, -0.05, 0.15), _u(rng, 0.1, 0.17)
        e = _u(rng, 0.8, 1.25)
        cv.paint(ph.ellipse(cv, cx, cy, r, r * e) & inside, "bone")
        cv.paint(ph.ellipse(cv, cx, cy, r - 0.03, (r - 0.03) * e) & inside, "marrow")
    if rng.random() < 0.85:
        cv.paint(ph.ellipse(cv, _u(rng, -0.05, 0.05), _u(rng, -0.28, -0.05), _u(rng, 0.1, 0.25), _u(rng, 0.08, 0.2)), "fluid")  # bladder
    cv.paint(ph.ellipse(cv, _u(rng, -0.04, 0.04), bi * _u(rng, 0.3, 0.5), _u(rng, 0.04, 0.08), _u(rng, 0.04, 0.07)), "bowel")  # rectum
    y = bi * _u(rng, 0.7, 0.85)
    cv.paint(ph.ellipse(cv, 0, y, _u(rng, 0.14, 0.24), _u(rng, 0.05, 0.08)), "bone")  # sacrum
    cv.paint(ph.ellipse(cv, 0, y, _u(rng, 0.1, 0.18), _u(rng, 0.025, 0.045)), "marrow")
    _lesions(cv, rng, int(rng.integers(0, 2)), inside)


DRAW = {"head": head, "chest": chest, "abdomen": abdomen, "pelvis": pelvis}
FOV_MM = {"head": (200, 260), "chest": (320, 420), "abdomen": (320, 440), "pelvis": (340, 460)}


def draw_phantom(anatomy: str, r: int, rng: np.random.Generator) -> np.ndarray:
    """A posed random phantom of ``anatomy`` as an r×r tissue label map."""
    cv = ph.canvas(
        r,
        angle=_u(rng, -0.3, 0.3),
        scale=_u(rng, 0.8, 1.08),
        shift=(_u(rng, -0.07, 0.07), _u(rng, -0.07, 0.07)),
        flip=rng.random() < 0.2,
    )
    DRAW[anatomy](cv, rng)
    return cv.labels


# CT protocols: (display window, its (level, width) in HU, its reconstruction kernels, sharp →
# smooth) per anatomy with their frequencies. Brain and soft-tissue windows go with standard or
# smooth kernels, lung and bone windows with sharp ones, as scanners' protocols pair them.
CT_PROTOCOLS = {
    "head": [(0.6, "brain", (40, 90), ("shepp-logan", "cosine")), (0.25, "subdural", (60, 200), ("shepp-logan", "cosine")),
             (0.15, "bone", (500, 2000), ("ramp",))],
    "chest": [(0.4, "lung", (-600, 1500), ("ramp", "shepp-logan")), (0.5, "mediastinum", (40, 400), ("cosine", "hamming")),
              (0.1, "bone", (500, 2000), ("ramp",))],
    "abdomen": [(0.85, "soft tissue", (50, 400), ("cosine", "hamming", "hann")), (0.15, "bone", (500, 2000), ("ramp",))],
    "pelvis": [(0.85, "soft tissue", (50, 400), ("cosine", "hamming", "hann")), (0.15, "bone", (500, 2000), ("ramp",))],
}
# Noise (HU sd at the centre, reference kernel) that exposure control aims at, per anatomy: head
# CT is run at high dose (3-6 HU in brain), body CT at 8-16 HU, and 30 % of chest CTs are
# low-dose (screening) protocols at 20-35 HU. docs/DATA.md gives the sources.
CT_NOISE_HU = {"head": ((1.0, (3.0, 6.0)),), "chest": ((0.7, (8.0, 14.0)), (0.3, (20.0, 35.0))),
               "abdomen": ((1.0, (8.0, 16.0)),), "pelvis": ((1.0, (8.0, 16.0)),)}


def _pick(rng, options):
    """One of ``[(probability, *rest), ...]`` (probabilities summing to 1): its ``rest``."""
    u, acc = rng.random(), 0.0
    for p, *rest in options:
        acc += p
        if u < acc:
            return rest
    return options[-1][1:]


def ct_protocol(anatomy: str, rng) -> dict:
    """Window (level, width), reconstruction kernel and AEC noise level of one CT slice."""
    _, (level, width), kernels = _pick(rng, CT_PROTOCOLS[anatomy])
    window = (level + 0.05 * abs(width) * rng.standard_normal(), width * float(np.exp(0.15 * rng.standard_normal())))
    (lo, hi), = _pick(rng, CT_NOISE_HU[anatomy])
    return {"window": window, "filter_name": str(rng.choice(kernels)), "noise_hu": _u(rng, lo, hi)}


def add_table(hu: np.ndarray, labels: np.ndarray, rng) -> np.ndarray:
    """The patient couch below the body on an HU image: a carbon-fibre shell (≈ +150 HU) around a
    foam core (≈ −850 HU), gently curved, just under the lowest body row (scanner coordinates,
    not posed with the patient). Returns a new array."""
    r = labels.shape[-1]
    rows = np.where((labels != ph.T["air"]).any(axis=1))[0]
    if rows.size == 0:
        return hu
    scanner = ph.canvas(r)  # unposed coordinates
    x, y = scanner.x, scanner.y
    top = (rows.max() + 0.5) / r * 2 - 1 + _u(rng, 0.0, 0.04)  # mattress gap
    depth = y - top + _u(rng, 0.05, 0.15) * x**2  # curved upwards at the sides
    shell, core = _u(rng, 0.012, 0.02), _u(rng, 0.03, 0.06)
    inside = np.abs(x) < _u(rng, 0.6, 0.85)
    out = hu.copy()
    out[(depth >= 0) & (depth < 2 * shell + core) & inside] = _u(rng, 100, 250)
    out[(depth >= shell) & (depth < shell + core) & inside] = _u(rng, -900, -800)
    return out


def ct_image(labels: np.ndarray, anatomy: str, size: int, rng) -> np.ndarray:
    """One CT slice: HU map with the couch → radon over π/2·size views (the angular sampling
    that avoids view aliasing, as clinical scanners' ~1000 views do at 512 px) → Poisson at the
    dose exposure control sets for the protocol's noise level → FBP with its kernel → window."""
    blood = None if anatomy == "head" or rng.random() < 0.5 else _u(rng, 120, 300)
    # brain parenchyma is homogeneous on CT (a grey-matter ROI's sd is the image noise): less texture
    hu = add_table(ph.hu_map(labels, rng, texture=3.0 if anatomy == "head" else 8.0, contrast_blood=blood), labels, rng)
    hu = ph.downsample(hu, labels.shape[-1] // size)
    return ph.ct_acquire(hu, rng, fov_mm=_u(rng, *FOV_MM[anatomy]), n_angles=int(np.ceil(np.pi / 2 * size)), **ct_protocol(anatomy, rng))


# MR acquisition as clinical protocols set it, relative to the displayed grid: the acquired
# read-out matrix is 50-100 % of the display matrix (e.g. 256 shown at 512 after zero-filled
# interpolation … 256 at 256), the phase resolution 60-100 % of the read-out, a reconstruction
# window (Fermi in half the images, Hamming in a fifth, none otherwise) and a tissue SNR of
# 10-60. docs/DATA.md gives the sources.
MR_APODIZE = ((0.5, "fermi"), (0.2, "hamming"), (0.3, "none"))


def mr_protocol(rng) -> dict:
    """Acquisition matrix (read and phase fractions of the display grid), reconstruction window
    and SNR of one MR slice, as :func:`phantoms.mr_acquire` keyword values."""
    read = _u(rng, 0.5, 1.0)
    (name,) = _pick(rng, MR_APODIZE)
    return {"keep_read": read, "keep": read * _u(rng, 0.6, 1.0), "apodize": (name, _u(rng, 0.8, 0.95), _u(rng, 0.03, 0.08)),
            "snr": float(np.exp(_u(rng, np.log(10.0), np.log(60.0))))}


def _mr_batch(signals: list[np.ndarray], size: int, rngs: list, protocols: list[dict]) -> np.ndarray:
    """MR acquisition of a batch of slices, each with its own protocol (:func:`mr_protocol`)."""
    per = {k: [p[k] for p in protocols] for k in protocols[0]}
    return ph.mr_acquire(np.stack(signals), size, rngs, undersample=0.0, keep=np.array(per["keep"]),
                         keep_read=np.array(per["keep_read"]), apodize=per["apodize"], snr=np.array(per["snr"]))


MODALITY_CHOICES = ("both", *MODALITIES)


@register_dataset("medical", kind="source")
def medical(size: int = 64, channels: int = 1, n: int = 5000, seed: int = 0, modality: str = "both",
            progress: bool = True) -> ImageDataset:
    """Simulated radiology (CT/MR × head/chest/abdomen/pelvis phantoms), 8 overlapping classes.

    ``modality``: ``both`` (8 classes), or ``ct`` / ``mr`` alone (its 4 anatomy classes), e.g.
    to look at one modality's spectrum (``spectral-ray data spectrum medical --param modality=ct``).
    """
    from tqdm.auto import tqdm

    check_grid(size, channels, n)
    if modality not in MODALITY_CHOICES:
        raise ValueError(f"medical: unknown modality {modality!r}; allowed: {', '.join(MODALITY_CHOICES)}")
    classes = [c for c in CLASSES if modality == "both" or c.startswith(modality + "_")]
    labels = np.random.default_rng([seed, 0]).permutation(np.arange(n) % len(classes)).astype(np.int64)
    images = np.zeros((n, size, size), np.float32)
    r = size * SUPERSAMPLE
    mr_batch: list[tuple[int, np.ndarray, np.random.Generator, dict]] = []

    def flush():
        if mr_batch:
            idx, signals, rngs, protocols = zip(*mr_batch)
            images[list(idx)] = _mr_batch(list(signals), size, list(rngs), list(protocols))
            mr_batch.clear()

    for i in tqdm(range(n), desc="medical", disable=not progress, leave=False):
        rng = np.random.default_rng([seed, 1, i])
        kind, anatomy = classes[labels[i]].split("_")
        lab = draw_phantom(anatomy, r, rng)
        if kind == "ct":
            images[i] = ct_image(lab, anatomy, size, rng)
        else:
            signal = ph.mr_signal(lab, rng, fat_sat=rng.random() < 0.25)
            mr_batch.append((i, signal, rng, mr_protocol(rng)))
            if len(mr_batch) >= 128:
                flush()
    flush()
    return ImageDataset(images=with_channels(images, channels), labels=labels, classes=classes)
