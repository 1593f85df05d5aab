"""``spectral-ray psd``: the learning priority of a model on a few images, as a table and a plot."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "psd",
        help="measure a model's learning priority (radial PSD of input gradients)",
        description="Measure the learning priority of a (random-init or local-file) timm model on a "
        "few images and print it as a table; writes a PNG plot.",
    )
    p.add_argument("--model", default="resnet18", help="timm model name (default: resnet18)")
    p.add_argument("--size", type=int, default=64, help="image size N in pixels, even (default: 64)")
    p.add_argument("--n", type=int, default=64, help="number of images (default: 64)")
    p.add_argument("--dataset", default=None, help="registered dataset to draw images from "
                   "(default: synthetic 1/f² random fields with random labels)")
    p.add_argument("--measure", choices=["power", "freqbias", "lin2022_centred"], default="power",
                   help="power: ring-mean |FFT|² of the gradients (default, what sweeps measure); freqbias: "
                   "Lin et al.'s FreqBias grad.py exactly (per-image min–max |FFT|, its rings); "
                   "lin2022_centred: the same on centred rings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("psd.png"), help="PNG path (default: psd.png)")
    p.set_defaults(func=run)


def synthetic_images(n: int, size: int, channels: int, seed: int):
    """Random fields with 1/f² power (natural-image statistics), scaled to [0, 1]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    u = np.fft.fftfreq(size) * size
    r = np.hypot(u[:, None], u[None, :])
    r[0, 0] = 1.0
    noise = rng.standard_normal((n, channels, size, size)) + 1j * rng.standard_normal((n, channels, size, size))
    x = np.real(np.fft.ifft2(noise / r))
    lo = x.min(axis=(-1, -2), keepdims=True)
    hi = x.max(axis=(-1, -2), keepdims=True)
    return ((x - lo) / (hi - lo)).astype(np.float32), rng.integers(0, 2, n)


def run(args) -> int:
    import numpy as np
    import torch

    from spectral_ray.cli import UserError
    from spectral_ray.models import create_model
    from spectral_ray.plots import plot_spectra
    from spectral_ray.spectrum import learning_priority, measure_axis, summarize

    from spectral_ray.data.dataset import check_size

    try:
        check_size(args.size)  # the datasets' one rule, for random images too
    except ValueError as e:
        raise UserError(f"--{e}") from None
    torch.manual_seed(args.seed)
    if args.dataset:
        from spectral_ray.data import get_dataset

        try:
            ds = get_dataset(args.dataset, size=args.size, seed=args.seed)
        except (ValueError, TypeError) as e:
            raise UserError(str(e)) from None
        idx = np.random.default_rng(args.seed).permutation(len(ds))[: args.n]
        images, labels, num_classes = ds.images[idx], ds.labels[idx], len(ds.classes)
    else:
        images, labels = synthetic_images(args.n, args.size, 1, args.seed)
        num_classes = 2
    try:
        model = create_model(args.model, in_chans=images.shape[1], num_classes=num_classes)
    except ValueError as e:
        raise UserError(str(e)) from None
    p = learning_priority(model, images, labels, measure=args.measure).numpy()
    omega = measure_axis(args.measure, args.size)
    first_bin = 1 if args.measure == "freqbias" else 0
    axis = "r/r_max" if args.measure == "freqbias" else "k/K"
    print(f"learning priority ({args.measure}) of {args.model} (random init) on {len(labels)} images of {args.size} px")
    print(f"{'bin':>3}  {axis:>7}  {'unit-sum':>9}  {'unit-max':>8}")
    for k, (w, v) in enumerate(zip(omega, p), start=first_bin):
        print(f"{k:>3}  {w:7.3f}  {v:9.5f}  {v / p.max():8.4f}")
    if args.measure == "power":  # the summaries read bins on the k/K axis of the power measure
        s, s_nodc = summarize(p), summarize(p, exclude_dc=True)
        print("summary:", ", ".join(f"{k}={v:.3f}" for k, v in s.items()))
        print("without DC:", ", ".join(f"{k}={v:.3f}" for k, v in s_nodc.items()))
    # freqbias's min-max scaled profiles reach 0: a linear y-axis, on its own r/r_max x-axis
    plot_spectra({args.model: p}, args.out, title=f"Learning priority ({args.measure}), {args.model}, {args.size} px",
                 logy=args.measure == "power", x=omega, xlabel=f"normalised radial frequency {axis}")
    print(f"wrote {args.out}")
    return 0
