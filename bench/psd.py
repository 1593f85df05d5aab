"""Batched radial PSD and learning priority vs a straightforward per-image numpy implementation.

Run: .venv/bin/python bench/psd.py [--repeats 5] [--threads 1]

Baseline = what one writes first: loop over images, ``np.fft.fft2`` + ``fftshift``, then one
boolean ring mask per radius to average the power. For the learning priority the baseline also
takes each image's input gradient in its own backward pass.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import header, median_time, row  # noqa: E402
from spectral_ray.spectrum import learning_priority, radial_psd  # noqa: E402


def naive_radial_psd(images: np.ndarray) -> np.ndarray:
    n = images.shape[-1]
    u = np.arange(n) - n // 2
    r = np.sqrt(u[:, None] ** 2 + u[None, :] ** 2)
    out = np.zeros((len(images), n // 2 + 1))
    for i, img in enumerate(images):
        power = np.abs(np.fft.fftshift(np.fft.fft2(img))) ** 2
        for k in range(n // 2 + 1):
            out[i, k] = power[(r >= k - 0.5) & (r < k + 0.5)].mean()
    return out


def naive_learning_priority(model, images, labels) -> np.ndarray:
    model.eval()
    spectra = []
    for x, y in zip(images, labels):
        x = x[None].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x), y[None], reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        spectra.append(naive_radial_psd(g.sum(1).numpy())[0])
    p = np.mean(spectra, 0)
    return p / p.sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    header("bench/psd.py — batched spectrum vs per-image numpy loop")
    rng = np.random.default_rng(0)
    for n in (64, 224):
        x = rng.random((args.batch, n, n)).astype(np.float32)
        xt = torch.from_numpy(x)
        np.testing.assert_allclose(radial_psd(xt).numpy(), naive_radial_psd(x), rtol=1e-3)
        base = median_time(lambda: naive_radial_psd(x), args.repeats)
        ours = median_time(lambda: radial_psd(xt), args.repeats)
        row(f"radial_psd, batch {args.batch}, {n}×{n}", base, ours, target=20)

    import timm

    for name, n in (("resnet18", 64), ("resnet18", 224)):
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, in_chans=1, num_classes=2)
        images = torch.rand(args.batch, 1, n, n)
        labels = torch.randint(0, 2, (args.batch,))
        np.testing.assert_allclose(learning_priority(model, images, labels).numpy(),
                                   naive_learning_priority(model, images, labels), rtol=2e-3, atol=1e-7)
        reps = max(1, args.repeats // 2)
        base = median_time(lambda: naive_learning_priority(model, images, labels), reps, warmup=0)
        ours = median_time(lambda: learning_priority(model, images, labels), reps, warmup=0)
        row(f"learning_priority {name}, batch {args.batch}, {n}×{n}", base, ours)


if __name__ == "__main__":
    main()
