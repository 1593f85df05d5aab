"""Regenerate ``tests/fixtures/experiment/``: a tiny *real* Ray Tune experiment folder for the
analysis tests.

A fake function trainable stands in for ``trainables.finetune``: it reports the keys of the
finetune contract (docs/ARCHITECTURE.md, "What the finetune trainable reports") once per epoch,
with synthetic but structured numbers driven by the config, so that every finding F1–F5 has
something to compute:

* pretrained priorities (17 bins = a 32 px image) differ by source (natural decays faster than
  medical) with seed-to-seed noise; the ``band_gain`` edit adds mass around ω̄ = 0.5. The
  backbone's priority on the shared probe set (``psd_probe``) is the same for every trial of a
  backbone; its own-source priority (``psd_pretrained``) is measured on edited images for edited
  backbones and so shows the edit twice as strongly;
* each trial reports ``source_label`` and ``artifact_resolved`` (the artifact's parameters) as
  spectral_ray.experiment.run_finetune does;
* the fine-tuned priority keeps most of the pretrained shape (F2) plus a bump at the artifact
  frequency that grows with degradation (the heat maps);
* O.O.D. AUC falls with degradation, faster the more pretrained priority sits in the artifact band
  (F3, F4, F5); I.I.D. AUC holds; a few O.O.D. AUCs are pinned at exactly 0 (ties);
* one trial raises after its first epoch, so the folder holds an ERROR trial.

Grid: source {natural, medical} × edit_strength {0, 0.5} × degradation {0, 0.5, 1} × fold 0–3
(seed = fold) = 48 trials, one of which fails. Runs in about a minute on 2 CPUs.

Usage:  .venv/bin/python scripts/make_analysis_fixture.py [--out tests/fixtures/experiment]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

K = 16  # 32 px images -> 17 radial bins
EPOCHS = 3
ARTIFACT_BANDWIDTH = 0.1


def _bump(center_bin: float, width: float) -> np.ndarray:
    k = np.arange(K + 1)
    return np.exp(-0.5 * ((k - center_bin) / width) ** 2)


def _unit(p: np.ndarray) -> np.ndarray:
    return p / p.sum()


def fake_finetune(config: dict) -> None:
    from ray import tune

    from spectral_ray.spectrum import alignment, band_mass, cosine, summarize

    seed = int(config["seed"])
    rng_pre = np.random.default_rng(1000 * seed + (0 if config["source"] == "natural" else 1))
    key = repr((config["source"], config["edit_strength"], config["degradation"], config["fold"]))
    rng = np.random.default_rng(zlib.crc32(key.encode()))  # deterministic across processes
    k = np.arange(K + 1)
    decay = 2.5 if config["source"] == "natural" else 6.0
    pre = np.exp(-k / decay) + 0.01
    pre = pre * np.exp(0.08 * rng_pre.standard_normal(K + 1))
    s = float(config["edit_strength"])
    own = pre.copy()
    if s > 0:  # band_gain edit around ω̄ = 0.5 moves priority towards mid frequencies
        pre = pre * (1 + 4 * s * _bump(8, 2.0))
        own = own * (1 + 8 * s * _bump(8, 2.0))  # measured on the edited source: the edit shows twice
    pre, own = _unit(pre), _unit(own)
    art = _unit(_bump(config["artifact_omega"] * K, 0.7))
    resolved = {"omega": config["artifact_omega"], "bandwidth": config["artifact_params"]["bandwidth"],
                "amplitude": config["artifact_amplitude"]}
    d = float(config["degradation"])
    target_shape = _unit(np.exp(-k / 4.0))
    fine = _unit(0.7 * pre + 0.3 * target_shape + 0.05 * d * art)
    fine = _unit(fine * np.exp(0.05 * rng.standard_normal(K + 1)))
    omega, bandwidth = config["artifact_omega"], config["artifact_params"]["bandwidth"]
    bm = band_mass(pre, omega, bandwidth)
    final_ood = 0.85 - d * (0.25 + 5.0 * bm) + 0.03 * rng.standard_normal()
    if final_ood < 0.15:  # the shortcut wins every O.O.D. pair: AUC pinned at exactly 0 (ties)
        final_ood = 0.0
    final_ood = float(np.clip(round(final_ood, 4), 0.0, 1.0))
    final_iid = float(np.clip(0.82 + 0.02 * rng.standard_normal(), 0, 1))
    for epoch in range(1, EPOCHS + 1):
        frac = epoch / EPOCHS
        metrics = {
            "epoch": epoch,
            "train_loss": 0.7 * np.exp(-frac) + 0.02 * rng.random(),
            "val_loss": 0.75 * np.exp(-0.8 * frac) + 0.02 * rng.random(),
            "val_auc": 0.5 + (min(0.97, final_iid + 0.15 * d) - 0.5) * frac,
            "iid_auc": 0.5 + (final_iid - 0.5) * frac,
            "ood_auc": final_ood if epoch == EPOCHS else 0.5 + (final_ood - 0.5) * frac,
        }
        if (config["source"], s, d, config["fold"]) == ("medical", 0.5, 0.5, 3) and epoch == 2:
            raise RuntimeError("simulated failure: CUDA out of memory (fixture ERROR trial)")
        if epoch == EPOCHS:
            sp, sf = summarize(pre), summarize(fine)
            metrics.update(
                source_label=config["source"],
                artifact_resolved=resolved,
                psd_probe=pre.tolist(),
                psd_pretrained=own.tolist(),
                psd_pretrained_on="source",
                psd_finetuned=fine.tolist(),
                psd_artifact=art.tolist(),
                centroid_pretrained=summarize(own)["centroid"],
                centroid_probe=sp["centroid"],
                centroid_finetuned=sf["centroid"],
                centroid_pretrained_nodc=summarize(pre, exclude_dc=True)["centroid"],
                centroid_finetuned_nodc=summarize(fine, exclude_dc=True)["centroid"],
                alignment_pretrained=alignment(own, art),
                alignment_finetuned=alignment(fine, art),
                cosine_pretrained=cosine(own, art),
                cosine_finetuned=cosine(fine, art),
                band_alignment_pretrained=band_mass(own, omega, bandwidth),
                band_alignment_probe=bm,
                band_alignment_finetuned=band_mass(fine, omega, bandwidth),
            )
        tune.report(metrics)
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/experiment"))
    args = parser.parse_args(argv)

    import ray
    from ray import tune

    param_space = {
        "source": tune.grid_search(["natural", "medical"]),
        "edit": "band_gain",
        "edit_strength": tune.grid_search([0.0, 0.5]),
        "target": "ct_lesion",
        "artifact": "band",
        "artifact_omega": 0.5,
        "artifact_amplitude": 0.05,
        "artifact_params": {"bandwidth": ARTIFACT_BANDWIDTH},
        "source_weights": None,
        "degradation": tune.grid_search([0.0, 0.5, 1.0]),
        "fold": tune.grid_search([0, 1, 2, 3]),
        "seed": tune.sample_from(lambda config: config["fold"]),
        "model": "resnet10t",
        "size": 32,
        "lr": 5e-4,
        "epochs": EPOCHS,
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(
            tune.with_resources(fake_finetune, {"cpu": 1}),
            param_space=param_space,
            run_config=tune.RunConfig(storage_path=tmp, name="experiment", verbose=0),
        )
        tuner.fit()
        ray.shutdown()
        src = Path(tmp) / "experiment"
        out = Path(args.out)
        if out.exists():
            shutil.rmtree(out)
        # Left out (analysis/ does not read them, and they keep the fixture under 2 MB): tuner.pkl
        # (a pickled trainable tied to this script's module path) and the TensorBoard event
        # files. Everything else is kept as Ray wrote it.
        shutil.copytree(src, out, ignore=shutil.ignore_patterns("tuner.pkl", "events.out.tfevents*"))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({len(list(out.iterdir()))} entries, {size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
