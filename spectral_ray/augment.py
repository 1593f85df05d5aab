"""Training-batch augmentations on tensors ``(b, C, N, N)``, drawing from a ``torch.Generator``
(so a seeded fit draws the same augmentations on every run).

* :func:`flip_shift` — random horizontal flips and integer shifts with reflect padding (the
  embedded recipes' ``augment: true``).
* :func:`random_affine` — the random affine warp of Keras' ``ImageDataGenerator`` (2.x; the lab's
  fine-tuning recipe, docs/ARCHITECTURE.md "Fine-tuning presets"): per image a rotation θ ~
  U(±rotation°), shifts ~ U(±shift)·N, a shear ~ U(±shear°) (degrees, as Keras reads
  ``shear_range``) and zooms zx, zy ~ U(1 ± zoom) independently; bilinear sampling, edge pixels
  repeated outside the image (``fill_mode='nearest'``). :func:`affine_matrices` composes the
  matrix exactly as Keras' ``apply_affine_transform`` does (rotation · shift · shear · zoom about
  the centre (N − 1)/2, built in Keras' (x, y) order and swapped to (row, column)); it maps an
  output pixel to the input position it samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["flip_shift", "random_affine", "draw_affine", "affine_matrices", "warp"]


def flip_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Per-image random horizontal flip and integer shift up to ``max_shift`` (reflect padding)."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen, device=gen.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if max_shift <= 0:
        return x
    s = max_shift
    xp = F.pad(x, (s, s, s, s), mode="reflect")
    dy = torch.randint(0, 2 * s + 1, (b,), generator=gen, device=gen.device)
    dx = torch.randint(0, 2 * s + 1, (b,), generator=gen, device=gen.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy.to(x.device)[:, None])  # (b, h)
    cols = (torch.arange(w, device=x.device)[None, :] + dx.to(x.device)[:, None])  # (b, w)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (b, h, w, C)
    return out.permute(0, 3, 1, 2).contiguous()


def draw_affine(b: int, size: int, gen: torch.Generator, *, rotation_deg: float = 0.0, shift: float = 0.0,
                shear_deg: float = 0.0, zoom: float = 0.0) -> dict[str, torch.Tensor]:
    """Per-image parameters ``theta`` (°), ``tx``, ``ty`` (pixels), ``shear`` (°), ``zx``, ``zy``
    (each ``(b,)`` float64), drawn uniformly in the ranges as Keras draws them; a range of 0 draws
    nothing (its parameter is the identity)."""

    def uniform(lo: float, hi: float) -> torch.Tensor:
        u = torch.rand(b, generator=gen, device=gen.device, dtype=torch.float64)
        return lo + (hi - lo) * u

    zeros = torch.zeros(b, dtype=torch.float64, device=gen.device)
    p = {"theta": zeros, "tx": zeros, "ty": zeros, "shear": zeros, "zx": zeros + 1, "zy": zeros + 1}
    if rotation_deg:
        p["theta"] = uniform(-rotation_deg, rotation_deg)
    if shift:  # Keras: tx from height_shift_range·h, ty from width_shift_range·w (square images here)
        p["tx"] = uniform(-shift, shift) * size
        p["ty"] = uniform(-shift, shift) * size
    if shear_deg:
        p["shear"] = uniform(-shear_deg, shear_deg)
    if zoom:
        p["zx"], p["zy"] = uniform(1 - zoom, 1 + zoom), uniform(1 - zoom, 1 + zoom)
    return p


def affine_matrices(theta, tx, ty, shear, zx, zy, size: int) -> torch.Tensor:
    """``(b, 3, 3)`` float64 matrices mapping an output pixel (row, column, 1) to the input
    position it samples, for per-image parameters as :func:`draw_affine` returns them."""
    theta, shear = torch.deg2rad(torch.as_tensor(theta, dtype=torch.float64)), torch.deg2rad(torch.as_tensor(shear, dtype=torch.float64))
    tx, ty, zx, zy = (torch.as_tensor(v, dtype=torch.float64, device=theta.device) for v in (tx, ty, zx, zy))
    one, zero = torch.ones_like(theta), torch.zeros_like(theta)

    def mat(*rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    rotation = mat((theta.cos(), -theta.sin(), zero), (theta.sin(), theta.cos(), zero), (zero, zero, one))
    shift = mat((one, zero, tx), (zero, one, ty), (zero, zero, one))
    shearing = mat((one, -shear.sin(), zero), (zero, shear.cos(), zero), (zero, zero, one))
    zooming = mat((zx, zero, zero), (zero, zy, zero), (zero, zero, one))
    o = size / 2 - 0.5  # the centre of pixel indices 0 … N − 1
    to_centre = mat((one, zero, one * o), (zero, one, one * o), (zero, zero, one))
    from_centre = mat((one, zero, -one * o), (zero, one, -one * o), (zero, zero, one))
    m = to_centre @ rotation @ shift @ shearing @ zooming @ from_centre
    swap = [1, 0, 2]  # Keras builds in (x, y) and swaps to numpy's (row, column)
    return m[:, swap][:, :, swap]


def warp(x: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Resample ``x (b, C, N, N)``: output pixel (r, c) takes the bilinear value of the input at
    ``matrices[i] @ (r, c, 1)``, with the edge pixels repeated outside the image."""
    b, _, h, w = x.shape
    m = matrices.to(device=x.device, dtype=torch.float32)
    r, c = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32),
                          torch.arange(w, device=x.device, dtype=torch.float32), indexing="ij")
    rc1 = torch.stack([r, c, torch.ones_like(r)], -1).reshape(-1, 3)  # (N², 3)
    src = torch.einsum("bij,pj->bpi", m[:, :2], rc1)  # (b, N², 2): input (row, column)
    grid = torch.stack([2 * src[..., 1] / (w - 1) - 1, 2 * src[..., 0] / (h - 1) - 1], -1).reshape(b, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def random_affine(x: torch.Tensor, gen: torch.Generator, *, rotation_deg: float = 0.0, shift: float = 0.0,
                  shear_deg: float = 0.0, zoom: float = 0.0) -> torch.Tensor:
    """A random affine warp per image (see the module docstring); ranges of 0 leave that part out."""
    p = draw_affine(x.shape[0], x.shape[-1], gen, rotation_deg=rotation_deg, shift=shift, shear_deg=shear_deg,
                    zoom=zoom)
    return warp(x, affine_matrices(**p, size=x.shape[-1]))

