"""``spectral-ray data``: look at the datasets — preview grids and mean spectra as PNGs."""

from __future__ import annotations

import json
from pathlib import Path

from spectral_ray.cli import UserError


def _param(text: str):
    if "=" not in text:
        raise UserError(f"--param expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _common(p) -> None:
    p.add_argument("name", help="registered dataset name (natural, medical, ct_lesion, mri_knee, …)")
    p.add_argument("--size", type=int, default=64, help="image size in pixels, even (default: 64)")
    p.add_argument("--n", type=int, default=None, help="number of images (default: the dataset's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="extra dataset parameter (JSON value), repeatable, e.g. --param channels=3")


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="preview datasets and their spectra (PNG)",
                          description="Look at the data: per-class preview grids and mean radial spectra.")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    p = dsub.add_parser("preview", help="PNG grid of samples per class (and clean vs artifact pairs)")
    _common(p)
    p.add_argument("--artifact", default=None, metavar="FAMILY", help="artifact family (band, photon_noise, nlm, lowpass)")
    p.add_argument("--omega", type=float, default=None, help="artifact frequency (band, lowpass)")
    p.add_argument("--amplitude", type=float, default=None, help="artifact amplitude (band)")
    p.add_argument("--artifact-param", action="append", default=[], metavar="KEY=VALUE", help="other artifact parameter")
    p.add_argument("--degradation", type=float, default=1.0,
                   help="fraction of the shown positive-class images carrying the artifact (default: 1)")
    p.add_argument("--per-class", type=int, default=8, help="samples per class (default: 8)")
    p.add_argument("--dpi", type=int, default=60, help="PNG resolution (default: 60)")
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: NAME-preview.png)")
    p.set_defaults(func=run_preview)

    s = dsub.add_parser("spectrum", help="PNG of the mean radial PSD on log-log axes with its fitted slope")
    _common(s)
    s.add_argument("--compare", action="append", default=[], metavar="NAME", help="also plot this dataset (repeatable)")
    s.add_argument("--max-images", type=int, default=2000, help="images averaged per dataset (default: 2000)")
    s.add_argument("--out", type=Path, default=None, help="PNG path (default: NAME-spectrum.png)")
    s.set_defaults(func=run_spectrum)


def _load(name: str, args, **extra):
    from spectral_ray.data import get_dataset

    params = dict(_param(t) for t in args.param)
    params.update(size=args.size, seed=args.seed, **extra)
    if args.n is not None:
        params["n"] = args.n
    try:
        return get_dataset(name, **params)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None


def run_preview(args) -> int:
    from spectral_ray.plots import preview_grid

    if not 0.0 <= args.degradation <= 1.0:
        raise UserError(f"--degradation must be in [0, 1], got {args.degradation}")
    artifact = _artifact(args)
    ds = _load(args.name, args)
    out = args.out or Path(f"{args.name}-preview.png")
    preview_grid(ds, out, per_class=args.per_class, artifact=artifact, degradation=args.degradation, seed=args.seed, dpi=args.dpi)
    print(f"wrote {out}")
    return 0


def _artifact(args):
    """The artifact ``--artifact FAMILY`` with ``--omega``/``--amplitude``/``--artifact-param``, or None."""
    if not args.artifact:
        if args.omega is not None or args.amplitude is not None:
            raise UserError("--omega/--amplitude need --artifact FAMILY")
        return None
    from spectral_ray.artifacts import get_artifact

    aparams = dict(_param(t) for t in args.artifact_param)
    if args.omega is not None:
        aparams["omega"] = args.omega
    if args.amplitude is not None:
        aparams["amplitude"] = args.amplitude
    try:
        return get_artifact(args.artifact, **aparams)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None


def run_spectrum(args) -> int:
    from spectral_ray.plots import dataset_spectra_plot

    datasets = [_load(name, args) for name in [args.name, *args.compare]]
    out = args.out or Path(f"{args.name}-spectrum.png")
    slopes = dataset_spectra_plot(datasets, out, max_images=args.max_images)
    for name, slope in slopes.items():
        print(f"{name}: log-log slope {slope:.3f}")
    print(f"wrote {out}")
    return 0
