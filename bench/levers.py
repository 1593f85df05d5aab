"""Each speed lever of a fine-tune trial alone and together: time per trial and what it does to
the AUCs, against the seed-to-seed noise of the same trials, all in one run.

One quick-sweep grid point (natural backbone, ct_lesion, band ω 0.75 at amplitude 0.2,
degradation 0.5) on ``--folds`` folds, in-process (no Ray), one thread. Levers (recipe knobs,
spectral_ray.training.Recipe): ``eval_sets_every: 0`` (I.I.D./O.O.D. test sets once, at the end),
``bf16`` + ``channels_last``, ``small_map_conv_pixels: 16`` (small-map convolutions as one matmul),
all together (the presets since issue 15). The noise reference is the baseline recipe with
another fine-tuning seed. Fused Adam(W) is on in every row (no knob); its step alone is timed
against the foreach optimizer at the end.

    .venv/bin/python bench/levers.py --folds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, header, load_now  # noqa: E402

OFF = {"bf16": False, "channels_last": False, "small_map_conv_pixels": 0, "eval_sets_every": 1}
LEVERS = [
    ("baseline (fp32, every set every epoch)", OFF, 0),
    ("  seed noise: baseline, fine-tuning seed + 1", OFF, 1),
    ("eval_sets_every 0", {**OFF, "eval_sets_every": 0}, 0),
    ("bf16 + channels_last", {**OFF, "bf16": True, "channels_last": True}, 0),
    ("small_map_conv_pixels 16", {**OFF, "small_map_conv_pixels": 16}, 0),
    ("all (the presets)", {"bf16": True, "channels_last": True, "small_map_conv_pixels": 16, "eval_sets_every": 0}, 0),
]
POINT = {"source": "natural", "edit_strength": 0.0, "artifact_omega": 0.75, "artifact_amplitude": 0.2,
         "degradation": 0.5}


def configs(store: str, folds: int, recipe: dict, seed_offset: int) -> list:
    from spectral_ray.config import TrialConfig, load_sweep
    from trainables.launcher import grid_points

    base = grid_points(load_sweep(REPO / "sweeps" / "embedded-quick.yaml"))[0]
    base = {**base, **POINT, "store": store, "finetune": {**base["finetune"], **recipe}}
    return [TrialConfig.model_validate({**base, "fold": f, "finetune_seed": base["seed"] + seed_offset})
            for f in range(folds)]


def run(cfgs: list) -> tuple[float, list[dict]]:
    from spectral_ray.experiment import run_finetune

    times, finals = [], []
    for cfg in cfgs:
        t0 = time.perf_counter()
        finals.append(run_finetune(cfg))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), finals


def optimizer_step(fused: bool, steps: int = 30) -> float:
    """Seconds per AdamW step over resnet10t's parameters (gradients preset), fused vs foreach."""
    import timm
    import torch

    torch.manual_seed(0)
    m = timm.create_model("resnet10t", in_chans=1, num_classes=2)
    for p in m.parameters():
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=fused, foreach=None if fused else True)
    for _ in range(3):
        opt.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t0) / steps


def step_rate(model_name: str, size: int, batch: int, fast: bool, steps: int) -> float:
    """Training images/s of ``fit``'s step (one thread): the presets' execution knobs or plain fp32."""
    import timm
    import torch
    import torch.nn.functional as F

    from spectral_ray.kernels import small_map_convs

    torch.manual_seed(0)
    m = timm.create_model(model_name, in_chans=1, num_classes=2)
    x, y = torch.rand(batch, 1, size, size), torch.randint(0, 2, (batch,))
    if fast:
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            loss = F.cross_entropy(m(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with small_map_convs(m, 16 if fast else 0):
        step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
    return batch * steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=3)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    header("fine-tune trial levers: time per trial and AUCs")
    print(f"# point {POINT}, folds 0-{args.folds - 1}; load at start {load_now():.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        from spectral_ray.experiment import get_backbone

        get_backbone(configs(tmp, 1, {}, 0)[0])  # pretrain outside the timing
        rows = [(name, *run(configs(tmp, args.folds, recipe, off))) for name, recipe, off in LEVERS]
    base_t, base = rows[0][1], rows[0][2]
    print(f"\n{'lever':<44} {'s/trial':>8} {'ratio':>7}  {'iid_auc per fold':<24} {'ood_auc per fold':<24} mean |Δiid| |Δood|")
    for name, t, finals in rows:
        iid = [f["iid_auc"] for f in finals]
        ood = [f["ood_auc"] for f in finals]
        d_iid = statistics.mean(abs(a - b["iid_auc"]) for a, b in zip(iid, base))
        d_ood = statistics.mean(abs(a - b["ood_auc"]) for a, b in zip(ood, base))
        print(f"{name:<44} {t:8.2f} {base_t / t:6.2f}×  {' '.join(f'{v:.3f}' for v in iid):<24} "
              f"{' '.join(f'{v:.3f}' for v in ood):<24} {d_iid:.3f} {d_ood:.3f}")
    print("\ntraining step, one thread, images/s: plain fp32 → presets (bf16 + channels_last + small-map GEMM)")
    for name, size, batch, steps in (("resnet10t", 64, 32, 10), ("resnet18", 64, 32, 10), ("resnet50", 224, 16, 2)):
        plain, fast = step_rate(name, size, batch, False, steps), step_rate(name, size, batch, True, steps)
        print(f"  {name:<10} {size:>3} px, batch {batch:>2}: {plain:7.1f} → {fast:7.1f}  ({fast / plain:.2f}×)")
    fused, foreach = optimizer_step(True), optimizer_step(False)
    print(f"\nAdamW step, resnet10t: foreach {foreach * 1e3:.1f} ms, fused {fused * 1e3:.1f} ms, "
          f"ratio {foreach / fused:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
