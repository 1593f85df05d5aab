"""Train and evaluate loops: a JSON-able :class:`Recipe`, :func:`fit`, :func:`evaluate`.

Data live in memory: images ``(n, C, N, N)`` float32 in [0, 1] and int labels, converted to
tensors once (and moved to the device once); batches are index slices, so there are no
DataLoader workers and little per-step Python. Given a seed, a run is deterministic on the CPU,
and on CUDA too (:func:`deterministic_kernels`; same GPU model and software stack); model init
is the caller's: seed before :func:`spectral_ray.models.create_model`.

Gentle fine-tuning recipes (docs/SCIENCE.md, finding F2): ``freeze_stages`` (stem + first stages
frozen, their batch-norm statistics too), ``backbone_lr_mult`` (smaller backbone lr than head
lr) and ``linear_probe_epochs`` (head only, then the rest of the schedule with the unfrozen
backbone).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spectral_ray import augment as _augment
from spectral_ray import kernels as _kernels
from spectral_ray import models as _models

__all__ = ["Recipe", "fit", "evaluate", "predict_proba", "auc_score", "DivergenceError", "as_arrays",
           "deterministic_kernels"]


OPTIMIZERS = ("adamw", "sgd", "adam")


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite. ``epoch`` (1-based) and ``step`` (0-based within the
    epoch; None for a validation loss) say where."""

    def __init__(self, message: str, *, epoch: int, step: int | None, phase: str = "train"):
        super().__init__(message)
        self.epoch, self.step, self.phase = epoch, step, phase


@dataclass
class Recipe:
    """How to train. Plain data: ``dataclasses.asdict`` is JSON-able, :meth:`from_dict` reads it back."""

    optimizer: Literal["adamw", "sgd", "adam"] = "adamw"  # adam: L2-coupled weight decay (torch.optim.Adam)
    lr: float = 1e-3
    backbone_lr_mult: float = 1.0  # backbone lr = lr * backbone_lr_mult; 1.0 = same as head
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    adam_eps: float = 1e-8  # adam / adamw epsilon (Keras' Adam uses 1e-7)
    epochs: int = 5
    batch_size: int = 32
    scheduler: Literal["none", "cosine"] = "none"  # cosine: per step, over all epochs
    augment: bool = False  # random horizontal flips + shifts of up to size/8 (reflect padding)
    # random affine warp per training image (spectral_ray.augment.random_affine); 0 = that part off
    affine_rotation_deg: float = 0.0  # rotation ~ U(±deg)
    affine_shift: float = 0.0  # shifts ~ U(±shift) × size, rows and columns
    affine_shear_deg: float = 0.0  # shear angle ~ U(±deg)
    affine_zoom: float = 0.0  # zoom per axis ~ U(1 ± zoom)
    head_dropout: float = 0.0  # dropout on the classifier's input (the pooled features) while training
    early_stopping_patience: int | None = None  # None = off; when on, the best weights by val loss are restored
    freeze_stages: int = 0  # stem + first n stages frozen for the whole run (0 = none, -1 = whole backbone)
    linear_probe_epochs: int = 0  # head-only epochs (counted within ``epochs``) before unfreezing
    label_smoothing: float = 0.0
    bf16: bool = False  # autocast bfloat16 for forward passes
    channels_last: bool = False
    # on the CPU, convolutions on maps of at most this many pixels run as one matmul
    # (spectral_ray.kernels; faster there, and no oneDNN bf16 NaN on 1x1 maps); 0 = off
    small_map_conv_pixels: int = 0
    # the eval sets (e.g. I.I.D./O.O.D. test) every k-th epoch; 0 = only the weights fit returns,
    # once at the end (history["final"]); the validation set is evaluated every epoch regardless
    eval_sets_every: int = 1
    num_threads: int | None = None  # torch.set_num_threads inside fit (restored after)
    eval_batch_size: int = 256

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, got {self.optimizer!r}")
        if self.scheduler not in ("none", "cosine"):
            raise ValueError(f"scheduler must be 'none' or 'cosine', got {self.scheduler!r}")
        if not (self.lr > 0 and self.backbone_lr_mult >= 0 and self.weight_decay >= 0):
            raise ValueError("lr must be > 0, backbone_lr_mult and weight_decay >= 0")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch_size >= 1")
        if self.linear_probe_epochs < 0 or self.linear_probe_epochs > self.epochs:
            raise ValueError(f"linear_probe_epochs must be in [0, epochs={self.epochs}], got {self.linear_probe_epochs}")
        if self.freeze_stages < -1:
            raise ValueError("freeze_stages must be >= -1 (-1 = whole backbone)")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be >= 1 or None")
        if self.small_map_conv_pixels < 0 or self.eval_sets_every < 0:
            raise ValueError("small_map_conv_pixels and eval_sets_every must be >= 0, got "
                             f"{self.small_map_conv_pixels}, {self.eval_sets_every}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be > 0, got {self.adam_eps}")
        if not 0 <= self.head_dropout < 1:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        affine = (self.affine_rotation_deg, self.affine_shift, self.affine_shear_deg, self.affine_zoom)
        if not all(math.isfinite(v) and v >= 0 for v in affine) or self.affine_shift >= 1 or self.affine_zoom >= 1:
            raise ValueError("affine_rotation_deg, affine_shift, affine_shear_deg, affine_zoom must be >= 0, "
                             f"affine_shift and affine_zoom < 1; got {affine}")

    @property
    def affine(self) -> dict[str, float]:
        """The affine warp's ranges as :func:`spectral_ray.augment.random_affine` takes them."""
        return {"rotation_deg": self.affine_rotation_deg, "shift": self.affine_shift,
                "shear_deg": self.affine_shear_deg, "zoom": self.affine_zoom}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | "Recipe" | None) -> "Recipe":
        """A Recipe from a dict (unknown keys raise ``TypeError`` naming them)."""
        if d is None:
            return cls()
        if isinstance(d, cls):
            return d
        return from_fields(cls, d, "recipe")


def check_fields(cls, d: dict, what: str) -> None:
    """Raise ``TypeError`` naming the keys of ``d`` that are no field of the dataclass ``cls``, and
    the allowed ones (``what`` names the kind of config in the message)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise TypeError(f"unknown {what} key(s) {unknown}; allowed: {sorted(names)}")


def from_fields(cls, d: dict, what: str):
    """``cls(**d)`` for a dataclass ``cls``, after :func:`check_fields`."""
    check_fields(cls, d, what)
    return cls(**d)


# ------------------------------------------------------------------------------------ data


def as_arrays(data) -> tuple[Any, Any]:
    """``(images, labels)`` from a pair or an object with ``.images`` / ``.labels``."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, data.labels
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"expected (images, labels) or an object with .images/.labels, got {type(data).__name__}")


def plain_strides(x: torch.Tensor) -> torch.Tensor:
    """``x`` contiguous with row-major strides (no copy when it is contiguous already).

    A size-1 dimension may carry any stride: numpy gives ``images[:, None]`` stride 0 there and
    fancy indexing of that 4 bytes, as a freshly generated 1-channel dataset has. Torch counts
    such a tensor as contiguous *and* channels-last, ``.contiguous()`` / ``.clone()`` keep the
    strides, and ``x[idx]`` batches come out channels-last, so convolutions take other oneDNN
    kernels with other rounding: bit-identical data trained to a different model than the same
    data loaded from the cache (and chaotic training made that a different AUC)."""
    x = x.contiguous()
    return x.view(-1).view(x.shape)


def _to_tensors(data, device) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = as_arrays(data)
    x = torch.as_tensor(images).to(device=device, dtype=torch.float32)
    y = torch.as_tensor(labels).to(device=device, dtype=torch.long)
    if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"images must be (n, C, N, N) with one label each; got {tuple(x.shape)}, {tuple(y.shape)}")
    return plain_strides(x), y


@contextlib.contextmanager
def deterministic_kernels(device: torch.device):
    """On CUDA, deterministic kernels for the duration (restored after); nothing on the CPU.

    cuDNN otherwise picks weight-gradient algorithms that accumulate with atomics, so the same
    trial gave other AUCs on a rerun (H200: 0.692 vs 0.699 I.I.D.; bench/gpu.py). Reruns of a
    sweep are meant to reproduce, and the bf16-vs-fp32 comparison is meaningless under that noise.
    ``warn_only``: an op with no deterministic CUDA kernel warns instead of failing the trial."""
    if device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    cudnn = torch.backends.cudnn
    old = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn.deterministic, cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = old[0], old[1]
        torch.use_deterministic_algorithms(old[2], warn_only=old[3])


def _device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device, bf16: bool):
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


# ------------------------------------------------------------------------------ evaluation


def auc_score(labels: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC: binary → on ``proba[:, 1]``; multi-class → macro one-vs-rest over the classes
    present. NaN when undefined (a single class in ``labels``)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    proba = np.asarray(proba, dtype=np.float64)
    present = np.unique(labels)
    if present.size < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(labels, proba[:, 1]))
    # macro OvR over present classes (a class absent from labels has no AUC)
    aucs = [roc_auc_score(labels == c, proba[:, c]) for c in present]
    return float(np.mean(aucs))


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int, bf16: bool, channels_last: bool) -> torch.Tensor:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    try:
        for s in range(0, x.shape[0], batch_size):
            xb = x[s : s + batch_size].to(device, torch.float32, non_blocking=True)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with _autocast(device, bf16):
                outs.append(model(xb).float())
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, 0, device=device)


def predict_proba(model: nn.Module, images, *, batch_size: int = 256, bf16: bool = False, channels_last: bool = False) -> np.ndarray:
    """Softmax probabilities ``(n, classes)`` (float64 numpy), model in eval mode."""
    x = plain_strides(torch.as_tensor(images, dtype=torch.float32))
    return torch.softmax(_logits(model, x, batch_size, bf16, channels_last), 1).double().cpu().numpy()


def _metrics_from_logits(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    loss = float(F.cross_entropy(logits, y))
    proba = torch.softmax(logits, 1).double().cpu().numpy()
    labels = y.cpu().numpy()
    acc = float((proba.argmax(1) == labels).mean()) if len(labels) else float("nan")
    auc = auc_score(labels, proba) if np.isfinite(proba).all() else float("nan")
    return {"loss": loss, "auc": auc, "accuracy": acc}


def evaluate(model: nn.Module, images, labels, *, batch_size: int = 256, bf16: bool = False, channels_last: bool = False) -> dict[str, float]:
    """``{"loss", "auc", "accuracy"}`` of the model on (images, labels): mean cross-entropy
    (no label smoothing), ROC AUC (see :func:`auc_score`; NaN when undefined), accuracy."""
    device = next(model.parameters()).device
    x, y = _to_tensors((images, labels), device)
    return _metrics_from_logits(_logits(model, x, batch_size, bf16, channels_last), y)


# -------------------------------------------------------------------------------- training


def _set_train_mode(model: nn.Module) -> None:
    """Train mode, except batch-norm layers whose parameters are all frozen stay in eval mode
    (a frozen stage keeps its running statistics)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps):
                m.eval()


def _epoch_metrics(model, sets, recipe) -> dict[str, float]:
    out = {}
    for name, (x, y) in sets.items():
        m = _metrics_from_logits(_logits(model, x, recipe.eval_batch_size, recipe.bf16, recipe.channels_last), y)
        out.update({f"{name}_{k}": v for k, v in m.items()})
    return out


def fit(
    model: nn.Module,
    train,
    val=None,
    recipe: Recipe | dict | None = None,
    *,
    seed: int = 0,
    eval_sets: dict[str, Any] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    device=None,
) -> dict:
    """Train ``model`` on ``train`` with ``recipe``; returns the history.

    ``train``/``val``/each of ``eval_sets`` are ``(images, labels)`` or objects with ``.images``
    and ``.labels``. Each epoch computes ``train_loss`` (mean over steps, with label smoothing as
    trained), ``val_loss``/``val_auc``/``val_accuracy`` and ``{name}_loss``/``{name}_auc``/
    ``{name}_accuracy`` for every eval set (e.g. ``iid_auc``, ``ood_auc``), then calls
    ``on_epoch(metrics)`` (metrics has ``epoch``, 1-based, plus ``lr``, ``linear_probe``,
    ``epoch_time_s``, ``images_per_s``).

    The model is moved to ``device`` (default CUDA when available) and left there. With early
    stopping the best weights by ``val_loss`` are restored at the end. A NaN/inf loss raises
    :class:`DivergenceError`. ``freeze_stages`` changes the model's ``requires_grad`` flags for
    good (the caller's model stays frozen as trained); the linear-probe freeze is undone.

    ``recipe.eval_sets_every`` = k evaluates the eval sets only every k-th epoch (0: not during
    training); ``history["final"]`` always holds every set's metrics for the returned weights.

    Returns ``{"epochs": [metrics, …], "final", "best_epoch", "best_val_loss", "stopped_early",
    "train_time_s", "images_per_s", "recipe", "seed", "device"}``.
    """
    recipe = Recipe.from_dict(recipe)
    dev = _device(device)
    old_threads = torch.get_num_threads()
    if recipe.num_threads:
        torch.set_num_threads(int(recipe.num_threads))
    try:
        with deterministic_kernels(dev):
            return _fit(model, train, val, recipe, seed, eval_sets or {}, on_epoch, dev)
    finally:
        if recipe.num_threads:
            torch.set_num_threads(old_threads)


def _fit(model, train, val, recipe: Recipe, seed: int, eval_sets: dict, on_epoch, dev: torch.device) -> dict:
    """The protocol of :func:`fit`, step by step: seed, move data and model, build the optimizer,
    then per epoch train, evaluate, track the best epoch and maybe stop; restore the best weights."""
    order_gen = _seed(seed)
    x_tr, y_tr, sets = _load_data(model, train, val, eval_sets, recipe, dev)
    opt, backbone = _optimizer(model, recipe, dev)
    loop = _Loop(model, recipe, dev, x_tr, y_tr, opt, order_gen, _augmenter(recipe, x_tr.shape[-1], seed, dev))
    history: dict = {"epochs": [], "best_epoch": None, "best_val_loss": None, "stopped_early": False}
    best = _BestEpoch(recipe.early_stopping_patience)
    t_start = time.perf_counter()
    small_maps = recipe.small_map_conv_pixels if dev.type == "cpu" else 0
    try:
        with _head_dropout(model, recipe.head_dropout), _kernels.small_map_convs(model, small_maps):
            for epoch in range(1, recipe.epochs + 1):
                probe = epoch <= recipe.linear_probe_epochs
                for p in backbone:
                    p.requires_grad_(not probe)
                metrics = _epoch(loop, model, _sets_of_epoch(sets, recipe, epoch), recipe, epoch, probe)
                history["epochs"].append(metrics)
                stop = best.update(epoch, metrics, model, history)
                if on_epoch is not None:
                    on_epoch(dict(metrics))
                if stop:
                    history["stopped_early"] = True
                    break
            best.restore(model)
            history["final"] = _final_metrics(model, sets, recipe, history, best.state is not None)
    finally:
        for p in backbone:
            p.requires_grad_(True)
        model.eval()
    elapsed = time.perf_counter() - t_start
    history.update(
        train_time_s=elapsed,
        images_per_s=loop.images_seen / elapsed if elapsed > 0 else float("nan"),
        recipe=recipe.to_dict(),
        seed=seed,
        device=str(dev),
    )
    return history


def _sets_of_epoch(sets: dict, recipe: Recipe, epoch: int) -> dict:
    """The sets evaluated after ``epoch``: validation always, the eval sets every
    ``recipe.eval_sets_every``-th epoch (none during training when it is 0)."""
    k = recipe.eval_sets_every
    return {name: s for name, s in sets.items() if name == "val" or (k and epoch % k == 0)}


def _final_metrics(model, sets: dict, recipe: Recipe, history: dict, restored: bool) -> dict:
    """Every set's metrics for the weights :func:`fit` returns (the best epoch's when early
    stopping restored them, else the last epoch's): the sets evaluated after that epoch are taken
    from its metrics (same weights), only the others are evaluated now."""
    epochs = history["epochs"]
    epoch = history["best_epoch"] if restored else len(epochs)
    done = epochs[epoch - 1] if epoch else {}
    kinds = ("loss", "auc", "accuracy")
    out = {f"{name}_{m}": done[f"{name}_{m}"] for name in sets if f"{name}_loss" in done for m in kinds}
    missing = {name: s for name, s in sets.items() if f"{name}_loss" not in done}
    return {**out, **(_evaluate_epoch(model, missing, recipe, epoch) if missing else {})}


def _epoch(loop: "_Loop", model, sets: dict, recipe: Recipe, epoch: int, probe: bool) -> dict:
    """Train one epoch, then evaluate: the epoch's metrics with their timing."""
    t0 = time.perf_counter()
    metrics = {**loop.train_epoch(epoch), "linear_probe": probe}
    train_time = time.perf_counter() - t0
    metrics.update(_evaluate_epoch(model, sets, recipe, epoch))
    metrics["epoch_time_s"] = time.perf_counter() - t0
    metrics["images_per_s"] = loop.steps_per_epoch * loop.batch / train_time if train_time > 0 else float("nan")
    return metrics


@contextlib.contextmanager
def _head_dropout(model: nn.Module, p: float):
    """Dropout with probability ``p`` on the classifier head's input (the pooled features) while
    the model is in train mode, as a forward pre-hook on each head module; removed on exit."""
    if not p:
        yield
        return
    modules = dict(model.named_modules())

    def drop(module, args):
        return (F.dropout(args[0], p, training=module.training), *args[1:])

    handles = [modules[name].register_forward_pre_hook(drop) for name in _models.head_prefixes(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _seed(seed: int) -> torch.Generator:
    """Seed torch and numpy; returns the generator of the data order (on the CPU: the same order
    on any device)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator(device="cpu").manual_seed(seed)


def _load_data(model, train, val, eval_sets: dict, recipe: Recipe, dev: torch.device):
    """Model and data onto the device: ``(x_train, y_train, {"val": …, name: …})``."""
    model.to(dev)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    x_tr, y_tr = _to_tensors(train, dev)
    if x_tr.shape[0] < 2:
        raise ValueError("need at least 2 training images")
    sets = {}
    if val is None and recipe.early_stopping_patience is not None:
        raise ValueError("early stopping needs a validation set (val=None given)")
    if val is not None:
        sets["val"] = _to_tensors(val, dev)
    for name, data in eval_sets.items():
        if name == "val" or name == "train":
            raise ValueError(f"eval set name {name!r} is reserved")
        sets[name] = _to_tensors(data, dev)
    return x_tr, y_tr, sets


def _optimizer(model, recipe: Recipe, dev: torch.device) -> tuple[torch.optim.Optimizer, list[nn.Parameter]]:
    """The recipe's permanent freeze, then the optimizer over what stays trainable; also the
    trainable backbone parameters (the ones a linear probe freezes for its epochs)."""
    if recipe.freeze_stages:
        _models.freeze_stages(model, "all" if recipe.freeze_stages == -1 else recipe.freeze_stages)
    groups = _models.param_groups(model, recipe.lr, recipe.backbone_lr_mult, recipe.weight_decay)
    if not groups:
        raise ValueError("no trainable parameters")
    for g in groups:
        g["initial_lr"] = g["lr"]
    if recipe.optimizer in ("adamw", "adam"):
        # fused: one kernel for all parameters (deterministic, like foreach); on the CPU it saves
        # the per-tensor sqrt/div passes of a resnet10t step (measured: bench/levers.py, BENCHMARKS.md)
        adam = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
        opt = adam(groups, lr=recipe.lr, weight_decay=recipe.weight_decay, eps=recipe.adam_eps, fused=True)
    else:
        opt = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    head = _models.head_prefixes(model)
    backbone = [p for name, p in model.named_parameters() if p.requires_grad and not _models.is_head_param(name, head)]
    return opt, backbone


def _augmenter(recipe: Recipe, size: int, seed: int, dev: torch.device) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The recipe's training-batch augmentation as ``batch -> batch``: flips and shifts
    (``augment``), then the affine warp (``affine_*``), drawing from one generator (seed + 1, on
    the device); None without augmentation."""
    affine = recipe.affine if any(recipe.affine.values()) else None
    if not recipe.augment and affine is None:
        return None
    gen = torch.Generator(device=dev).manual_seed(seed + 1)
    max_shift = max(1, size // 8)

    def augment(xb: torch.Tensor) -> torch.Tensor:
        if recipe.augment:
            xb = _augment.flip_shift(xb, gen, max_shift)
        if affine is not None:
            xb = _augment.random_affine(xb, gen, **affine)
        return xb

    return augment


class _Loop:
    """The training steps of one fit: batches in a seeded order, the lr schedule, NaN checks."""

    def __init__(self, model, recipe: Recipe, dev, x, y, opt, order_gen, augment):
        self.model, self.recipe, self.dev, self.x, self.y = model, recipe, dev, x, y
        self.opt, self.order_gen, self.augment = opt, order_gen, augment
        n = x.shape[0]
        self.batch = min(recipe.batch_size, n)
        self.steps_per_epoch = n // self.batch + (1 if n % self.batch > 1 else 0)  # a last batch of 1 is skipped (batch norm)
        self.total_steps = max(1, self.steps_per_epoch * recipe.epochs)
        self.check_every = 1 if dev.type == "cpu" else 32  # avoid a device sync per step on GPUs
        self.step_global = 0
        self.images_seen = 0

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training set in a fresh seeded order: ``{"epoch", "train_loss", "lr"}``."""
        _set_train_mode(self.model)
        order = torch.randperm(self.x.shape[0], generator=self.order_gen).to(self.dev)
        losses = torch.zeros(self.steps_per_epoch, device=self.dev)
        for step in range(self.steps_per_epoch):
            idx = order[step * self.batch : (step + 1) * self.batch]
            self._step(self.x[idx], self.y[idx], losses, step, epoch)
            self.images_seen += idx.numel()
        return {"epoch": epoch, "train_loss": float(losses.mean()), "lr": self.opt.param_groups[0]["lr"]}

    def _step(self, xb, yb, losses, step: int, epoch: int) -> None:
        """Augment, schedule the lr, forward, record the loss in ``losses[step]``, check, step."""
        recipe = self.recipe
        if self.augment is not None:
            xb = self.augment(xb)
        if recipe.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        if recipe.scheduler == "cosine":
            f = 0.5 * (1 + math.cos(math.pi * self.step_global / self.total_steps))
            for g in self.opt.param_groups:
                g["lr"] = g["initial_lr"] * f
        with _autocast(self.dev, recipe.bf16):
            out = self.model(xb)
        loss = F.cross_entropy(out.float(), yb, label_smoothing=recipe.label_smoothing)
        losses[step] = loss.detach()
        if (step + 1) % self.check_every == 0 or step == self.steps_per_epoch - 1:
            self._check_finite(losses, step, epoch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step_global += 1

    def _check_finite(self, losses, step: int, epoch: int) -> None:
        window = losses[max(0, step + 1 - self.check_every) : step + 1]
        if not bool(torch.isfinite(window).all()):
            bad = int((~torch.isfinite(losses[: step + 1])).nonzero()[0])
            raise DivergenceError(
                f"training loss became {float(losses[bad])} at epoch {epoch}, step {bad} "
                f"(lr {self.recipe.lr}, optimizer {self.recipe.optimizer})",
                epoch=epoch,
                step=bad,
            )


def _evaluate_epoch(model, sets: dict, recipe: Recipe, epoch: int) -> dict[str, float]:
    """``{set}_loss/_auc/_accuracy`` for every evaluation set; a NaN/inf loss raises."""
    metrics = _epoch_metrics(model, sets, recipe)
    for k in [k for k in metrics if k.endswith("_loss")]:
        if not math.isfinite(metrics[k]):
            raise DivergenceError(f"{k} became {metrics[k]} at epoch {epoch}", epoch=epoch, step=None, phase=k)
    return metrics


class _BestEpoch:
    """The best epoch by validation loss and, with early stopping, its weights and the patience count."""

    def __init__(self, patience: int | None):
        self.patience, self.best_loss, self.bad_epochs, self.state = patience, math.inf, 0, None

    def update(self, epoch: int, metrics: dict, model, history: dict) -> bool:
        """Record the epoch; True when early stopping says stop."""
        if "val_loss" not in metrics:
            return False
        if metrics["val_loss"] < self.best_loss:
            self.best_loss, self.bad_epochs = metrics["val_loss"], 0
            history["best_epoch"], history["best_val_loss"] = epoch, self.best_loss
            if self.patience is not None:
                self.state = copy.deepcopy(model.state_dict())
            return False
        self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    def restore(self, model) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)
