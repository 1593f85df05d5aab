"""fit / evaluate: learning, gentle recipes, early stopping, divergence, determinism."""

import json
import math

import numpy as np
import pytest
import torch

from spectral_ray.models import create_model, head_prefixes
from spectral_ray.training import DivergenceError, Recipe, auc_score, evaluate, fit, predict_proba


def toy(n=96, size=16, seed=0):
    """Learnable binary task: class 1 has a bright top-left square."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, size, size)).astype(np.float32) * 0.5
    y = (np.arange(n) % 2).astype(np.int64)
    x[y == 1, :, 2:6, 2:6] += 0.5
    return x, y


def model(seed=0, classes=2):
    torch.manual_seed(seed)
    return create_model("test_resnet", num_classes=classes)


def test_fit_learns_and_reports_metrics():
    x, y = toy()
    xv, yv = toy(48, seed=1)
    seen = []
    m = model()
    h = fit(m, (x, y), (xv, yv), Recipe(epochs=4, batch_size=16, lr=3e-3), seed=0,
            eval_sets={"iid": (xv, yv), "ood": (xv, 1 - yv)}, on_epoch=seen.append)
    assert [e["epoch"] for e in seen] == [1, 2, 3, 4]
    for k in ("train_loss", "val_loss", "val_auc", "val_accuracy", "iid_auc", "iid_loss", "ood_auc"):
        assert k in seen[-1]
    assert seen[-1]["train_loss"] < seen[0]["train_loss"]
    assert seen[-1]["val_auc"] > 0.9
    assert seen[-1]["ood_auc"] == pytest.approx(1 - seen[-1]["iid_auc"])
    json.dumps(h)  # JSON-able history
    ev = evaluate(m, xv, yv)
    assert ev["auc"] == pytest.approx(seen[-1]["val_auc"]) and ev["loss"] == pytest.approx(seen[-1]["val_loss"], rel=1e-5)
    p = predict_proba(m, xv)
    assert p.shape == (48, 2) and np.allclose(p.sum(1), 1)


def test_auc_undefined_is_nan_and_multiclass():
    assert math.isnan(auc_score(np.zeros(5, int), np.full((5, 2), 0.5)))
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.eye(3)[y] * 0.8 + 0.2 / 3
    assert auc_score(y, p) == pytest.approx(1.0)


def test_dataset_objects_accepted():
    from spectral_ray.data import ImageDataset

    x, y = toy(32)
    ds = ImageDataset(images=x, labels=y, classes=["a", "b"])
    h = fit(model(), ds, ds, {"epochs": 1, "batch_size": 16}, seed=0)
    assert len(h["epochs"]) == 1


def test_determinism():
    x, y = toy(64)
    r = Recipe(epochs=2, batch_size=16, lr=3e-3, augment=True)
    h1 = fit(model(), (x, y), (x[:16], y[:16]), r, seed=3)
    h2 = fit(model(), (x, y), (x[:16], y[:16]), r, seed=3)
    h3 = fit(model(), (x, y), (x[:16], y[:16]), r, seed=4)
    keys = ("train_loss", "val_loss", "val_auc")
    assert [[e[k] for k in keys] for e in h1["epochs"]] == [[e[k] for k in keys] for e in h2["epochs"]]
    assert h1["epochs"][0]["train_loss"] != h3["epochs"][0]["train_loss"]


def test_fit_does_not_depend_on_the_strides_of_a_size_1_channel_axis():
    """A freshly generated 1-channel dataset is ``gray[:, None]`` (stride 0 on the channel axis;
    a fancy-indexed split of it, stride 4 bytes). Torch took such batches as channels-last and
    ran other conv kernels: the same values trained to a different model than a cache-loaded copy."""
    x, y = toy(64)
    odd = np.ascontiguousarray(x[:, 0])[:, None][np.arange(len(x))]  # like make_splits on fresh data
    assert np.array_equal(odd, x) and odd.strides[1] != x.strides[1]
    r = Recipe(epochs=1, batch_size=16, lr=3e-3)
    m1, m2 = model(), model()
    fit(m1, (x, y), None, r, seed=0)
    fit(m2, (odd, y), None, r, seed=0)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert np.array_equal(predict_proba(m1, x), predict_proba(m1, odd))


def test_divergence_raises():
    x, y = toy(64)
    with pytest.raises(DivergenceError) as e:
        fit(model(), (x, y), None, Recipe(optimizer="sgd", lr=1e12, momentum=0.0, epochs=3, batch_size=16), seed=0)
    assert e.value.epoch >= 1 and e.value.step is not None
    bad = x.copy()
    bad[5, 0, 0, 0] = np.nan  # a NaN input: caught at the first step that sees it
    with pytest.raises(DivergenceError, match="epoch 1"):
        fit(model(), (bad, y), None, Recipe(epochs=1, batch_size=64), seed=0)


def test_early_stopping_restores_best():
    x, y = toy(64)
    xv, yv = toy(32, seed=1)
    yv_noise = 1 - yv  # val labels flipped: val loss rises as the model learns the training task
    m = model()
    h = fit(m, (x, y), (xv, yv_noise), Recipe(epochs=8, batch_size=16, lr=3e-3, early_stopping_patience=2), seed=0)
    assert h["stopped_early"]
    best = h["best_epoch"]
    assert len(h["epochs"]) == best + 2
    assert h["best_val_loss"] == min(e["val_loss"] for e in h["epochs"])
    assert evaluate(m, xv, yv_noise)["loss"] == pytest.approx(h["best_val_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="validation"):
        fit(model(), (x, y), None, Recipe(epochs=1, early_stopping_patience=1), seed=0)


def _snapshot(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_frozen_stages_do_not_change():
    x, y = toy(64)
    m = model()
    before = _snapshot(m)
    fit(m, (x, y), None, Recipe(epochs=1, batch_size=16, lr=1e-2, freeze_stages=2), seed=0)
    after = m.state_dict()
    frozen = [k for k in before if k.startswith(("conv1.", "bn1.", "layer1.", "layer2."))]
    moved = [k for k in before if k.startswith(("layer3.", "layer4.", "fc.")) and not torch.equal(before[k], after[k])]
    # parameters and batch-norm running statistics of the frozen part stay put
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(k.startswith("layer3.") for k in moved) and any(k.startswith("fc.") for k in moved)


def test_linear_probe_changes_only_head_then_unfreezes():
    x, y = toy(64)
    m = model()
    before = _snapshot(m)
    head = head_prefixes(m)
    h = fit(m, (x, y), None, Recipe(epochs=1, batch_size=16, lr=1e-2, linear_probe_epochs=1), seed=0)
    assert h["epochs"][0]["linear_probe"] is True
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(head[0] + ".") for k in changed)
    assert all(p.requires_grad for p in m.parameters())  # probe freeze undone
    mid = _snapshot(m)
    h = fit(m, (x, y), None, Recipe(epochs=2, batch_size=16, lr=1e-2, linear_probe_epochs=1), seed=0)
    assert [e["linear_probe"] for e in h["epochs"]] == [True, False]
    assert not torch.equal(mid["layer1.0.conv1.weight"], m.state_dict()["layer1.0.conv1.weight"])


def test_backbone_lr_mult_zero_keeps_backbone():
    x, y = toy(64)
    m = model()
    before = _snapshot(m)
    fit(m, (x, y), None, Recipe(epochs=1, batch_size=16, lr=1e-2, backbone_lr_mult=0.0, weight_decay=0.0), seed=0)
    after = m.state_dict()
    params = {n for n, _ in m.named_parameters()}
    assert all(torch.equal(before[k], after[k]) for k in params if not k.startswith("fc."))
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def test_bf16_channels_last_cosine_runs():
    # 32 px, not 16: at 16 px layer4's stride-2 3x3 conv sees a 1x1 map, and oneDNN's bf16
    # weight gradient for that shape returns NaN in ~40 % of calls on this CPU (torch 2.14.1,
    # AMX). The sweeps' 64 px inputs never shrink that far.
    x, y = toy(32, size=32)
    h = fit(model(), (x, y), (x, y), Recipe(epochs=2, batch_size=16, bf16=True, channels_last=True,
                                            scheduler="cosine", label_smoothing=0.1, num_threads=1), seed=0)
    assert all(math.isfinite(e["val_loss"]) for e in h["epochs"])
    assert h["epochs"][-1]["lr"] < 1e-3


def test_recipe_validation():
    with pytest.raises(ValueError):
        Recipe(optimizer="adam")
    with pytest.raises(ValueError):
        Recipe(epochs=2, linear_probe_epochs=3)
    with pytest.raises(TypeError, match="lrr"):
        Recipe.from_dict({"lrr": 1})
    assert Recipe.from_dict(Recipe().to_dict()) == Recipe()


def test_deterministic_kernels_sets_and_restores_the_flags():
    from spectral_ray.training import deterministic_kernels

    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    with deterministic_kernels(torch.device("cpu")):  # the CPU is deterministic already: untouched
        assert (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled()) == before
    cudnn.benchmark = True  # a caller's autotuning is switched off inside and back on after
    try:
        with deterministic_kernels(torch.device("cuda")):  # sets flags only; needs no GPU
            assert cudnn.deterministic and not cudnn.benchmark
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert cudnn.benchmark and cudnn.deterministic == before[0]
        assert torch.are_deterministic_algorithms_enabled() == before[2]
    finally:
        cudnn.benchmark = before[1]
