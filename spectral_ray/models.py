"""Models: a timm factory, input normalisation, backbone checkpoints, head replacement, stage
freezing, lr groups.

Every architecture comes from timm by name. A *backbone* is a model's state dict without its
classifier head; it is what the pretrain-once store keeps and what fine-tuning starts from.

**Input normalisation is part of the model.** Published weights expect their own preprocessing
(timm's ``pretrained_cfg`` mean/std, RadImageNet's; :mod:`spectral_ray.weights`). It is held by an
:class:`InputNormalization` submodule (``input_norm``, buffers ``mean``/``std``) that a forward
pre-hook applies to the raw ``[0, 1]`` input. So training, every learning-priority measurement
(gradients with respect to the raw input include it) and backbone files (its buffers are in the
state dict) all carry it without special cases. A model without one sees its input as it is
(random init, the embedded sources).

Backbone files are written atomically (temporary file + ``os.replace``) and carry a sha256 of
their tensors and metadata inside, so a partial or corrupt file is detected
(:class:`CorruptCheckpoint`) instead of loaded. They are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from spectral_ray.atomic import atomic_open

__all__ = [
    "create_model",
    "InputNormalization",
    "set_input_normalization",
    "input_normalization",
    "adopt_input_normalization",
    "INPUT_NORM",
    "is_backbone_file",
    "head_prefixes",
    "is_head_param",
    "backbone_state",
    "save_backbone",
    "load_backbone",
    "read_backbone",
    "replace_head",
    "model_stages",
    "freeze_stages",
    "param_groups",
    "CorruptCheckpoint",
    "BackboneMismatch",
]

FORMAT = "spectral-ray-backbone/1"
FORMAT_FAMILY = "spectral-ray-backbone"
INPUT_NORM = "input_norm"  # the InputNormalization submodule: state-dict keys input_norm.mean / input_norm.std


class CorruptCheckpoint(RuntimeError):
    """A backbone file is partial, unreadable or fails its checksum."""


class BackboneMismatch(ValueError):
    """A backbone file does not fit the model (missing/unexpected keys or different shapes)."""


# --------------------------------------------------------------------------------- factory


def create_model(name: str, *, in_chans: int = 1, num_classes: int, input_norm=None, **timm_kwargs) -> nn.Module:
    """A timm model ``name`` with ``in_chans`` input channels and a ``num_classes`` head, random
    weights (``pretrained=False``); ``input_norm=(mean, std)`` installs an input normalisation.
    Hub weights are never downloaded. An unknown ``name`` raises ``ValueError`` listing close matches.

    The factory sits below the weight loader: a file of weights (a backbone written by
    :func:`save_backbone`, a timm/torchvision state dict, ``.safetensors``, a converted
    RadImageNet checkpoint) is loaded by :func:`spectral_ray.weights.load_pretrained`
    (``source="file"``), which calls this and then :func:`load_backbone` or adapts the weights.
    """
    import timm

    if not timm.is_model(name):
        candidates = timm.list_models(f"*{name}*")[:10]
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.6)
        suggest = list(dict.fromkeys(close + candidates))[:12]
        raise ValueError(
            f"unknown timm model {name!r}; close matches: {', '.join(suggest) if suggest else '(none)'}"
            " — see timm.list_models(pattern)"
        )
    timm_kwargs.pop("pretrained", None)
    model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **timm_kwargs)
    if input_norm is not None:
        set_input_normalization(model, *input_norm)
    return model


# ------------------------------------------------------------------------ input normalisation


class InputNormalization(nn.Module):
    """``(x − mean) / std`` per channel, on ``(B, C, H, W)`` input; ``mean``/``std`` are ``(C, 1, 1)``
    buffers in the units of the raw input (images in [0, 1])."""

    def __init__(self, mean, std):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        if mean.shape != std.shape:
            raise ValueError(f"input normalisation: mean has {mean.numel()} values, std {std.numel()}")
        if not bool(torch.all(std > 0)):
            raise ValueError(f"input normalisation: std must be > 0, got {std.flatten().tolist()}")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _normalize_input(model: nn.Module, args: tuple):
    return (getattr(model, INPUT_NORM)(args[0]), *args[1:])


def _in_chans(model: nn.Module) -> int:
    """Input channels of the model's first convolution (timm's ``first_conv``, else the first Conv2d)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv")
    modules = dict(model.named_modules())
    for name in ([first] if isinstance(first, str) else list(first or [])):
        if isinstance(modules.get(name), nn.Conv2d):
            return modules[name].in_channels
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError(f"cannot find the input convolution of {type(model).__name__}")


def _per_channel(values, channels: int, what: str) -> torch.Tensor:
    """``values`` for ``channels`` inputs: as given, one value repeated, or the mean of RGB for a
    gray model (whose first conv timm made by summing the RGB filters)."""
    v = torch.as_tensor(values, dtype=torch.float32).flatten()
    if v.numel() == channels:
        return v
    if v.numel() == 1:
        return v.repeat(channels)
    if channels == 1:
        return v.mean().reshape(1)
    raise ValueError(f"input normalisation: {v.numel()} {what} values for a model with {channels} input channels")


def set_input_normalization(model: nn.Module, mean, std) -> nn.Module:
    """Install (or replace) ``(x − mean) / std`` at the model's input, in place; returns the model.

    ``mean``/``std`` per channel in raw-input units (RGB values for a 1-channel model are averaged,
    one value is repeated). The normalisation is the ``input_norm`` submodule, applied by a
    forward pre-hook: ``model(x)`` takes raw ``[0, 1]`` images everywhere."""
    c = _in_chans(model)
    norm = InputNormalization(_per_channel(mean, c, "mean"), _per_channel(std, c, "std"))
    try:
        norm = norm.to(next(model.parameters()).device)
    except StopIteration:
        pass
    had = isinstance(getattr(model, INPUT_NORM, None), InputNormalization)
    setattr(model, INPUT_NORM, norm)
    if not had:
        model.register_forward_pre_hook(_normalize_input)
    return model


def input_normalization(model: nn.Module) -> dict | None:
    """``{"mean": [...], "std": [...]}`` of the model's input normalisation, None without one."""
    norm = getattr(model, INPUT_NORM, None)
    if not isinstance(norm, InputNormalization):
        return None
    return {"mean": [round(float(v), 8) for v in norm.mean.flatten()], "std": [round(float(v), 8) for v in norm.std.flatten()]}


def adopt_input_normalization(model: nn.Module, state, where: str) -> None:
    """Install the normalisation a state dict carries (``input_norm.mean``/``.std``) on ``model``."""
    keys = (f"{INPUT_NORM}.mean", f"{INPUT_NORM}.std")
    present = [k for k in keys if k in state]
    if len(present) == 1:
        raise ValueError(f"{where} holds {present[0]} without its pair ({', '.join(keys)})")
    if present:
        set_input_normalization(model, state[keys[0]], state[keys[1]])


# ------------------------------------------------------------------------------------ head


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module names of the classifier head(s), from timm's ``pretrained_cfg['classifier']``.

    Falls back to the module returned by ``get_classifier()`` (or a final ``fc``/``head``/
    ``classifier``) for non-timm models.
    """
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    cls = cfg.get("classifier")
    if cls:
        names = (cls,) if isinstance(cls, str) else tuple(cls)
        modules = dict(model.named_modules())
        names = tuple(n for n in names if n in modules)
        if names:
            return names
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        for n, m in model.named_modules():
            if m is head and n:
                return (n,)
    for n in ("fc", "head", "classifier"):
        if isinstance(getattr(model, n, None), nn.Module):
            return (n,)
    raise ValueError(f"cannot find the classifier head of {type(model).__name__}")


def is_head_param(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A fresh classifier with ``num_classes`` outputs (timm's ``reset_classifier``); in place."""
    if not hasattr(model, "reset_classifier"):
        raise TypeError(f"{type(model).__name__} has no reset_classifier (not a timm model)")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    model.reset_classifier(num_classes)
    return model.to(device)


# ------------------------------------------------------------------------- backbone files


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without the classifier head (CPU, detached copies)."""
    prefixes = head_prefixes(model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not is_head_param(k, prefixes)}


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _checksum(state: dict[str, torch.Tensor], meta: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k]
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


def save_backbone(model: nn.Module, path, meta: dict | None = None) -> Path:
    """Write the backbone (state dict minus head) with ``meta`` and a sha256 to ``path`` atomically.

    ``meta`` must be JSON-able (it is stored as a JSON string). Returns ``path``.
    """
    return _save_state(model, backbone_state(model), path, meta)


def save_head(model: nn.Module, path, meta: dict | None = None) -> Path:
    """Write only the classifier head (a few KiB; ``read_backbone`` reads it back), same format."""
    prefixes = head_prefixes(model)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if is_head_param(k, prefixes)}
    return _save_state(model, state, path, {**(meta or {}), "part": "head"})


def _save_state(model: nn.Module, state: dict[str, torch.Tensor], path, meta: dict | None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    meta.setdefault("model", getattr(model, "default_cfg", {}).get("architecture", type(model).__name__))
    meta.setdefault("head", list(head_prefixes(model)))
    meta_json = json.dumps(meta, sort_keys=True, default=str)
    payload = {
        "format": FORMAT,
        "state_dict": state,
        "meta": meta_json,
        "sha256": _checksum(state, json.loads(meta_json)),
    }
    with atomic_open(path) as f:
        torch.save(payload, f)
    return path


def is_backbone_file(path) -> bool:
    """Whether ``path`` is a spectral-ray backbone file (any format version: an old or newer one is
    then refused by :func:`read_backbone` with a message, not read as a plain state dict).
    ``.safetensors`` never is; an unreadable file is not."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch zip file: some other format, decided by its reader
        return False
    return isinstance(obj, dict) and str(obj.get("format", "")).startswith(FORMAT_FAMILY)


def read_backbone(path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, meta)`` from a backbone file, verified against its checksum.

    Raises ``FileNotFoundError`` when absent and :class:`CorruptCheckpoint` when the file is
    partial, unreadable, not a backbone file, or its checksum does not match.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"backbone file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a truncated/garbled zip
        raise CorruptCheckpoint(f"cannot read backbone file {path}: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else None
        raise CorruptCheckpoint(f"{path} is not a spectral-ray backbone file of format {FORMAT}"
                                + (f" (it is {found!r}: written by another version of spectral-ray)" if found else ""))
    try:
        state, meta = obj["state_dict"], json.loads(obj["meta"])
        expected = obj["sha256"]
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptCheckpoint(f"backbone file {path} is incomplete: {e}") from e
    actual = _checksum(state, meta)
    if actual != expected:
        raise CorruptCheckpoint(f"checksum mismatch in {path}: stored {expected[:12]}…, computed {actual[:12]}…")
    return state, meta


def load_backbone(model: nn.Module, path) -> dict:
    """Load a backbone file into ``model`` (head untouched); returns the file's meta. The file's
    input normalisation, if it has one, is installed on the model first.

    Every backbone key of the model must be in the file with the same shape and vice versa;
    otherwise :class:`BackboneMismatch` lists the missing, unexpected and mis-shaped keys.
    """
    state, meta = read_backbone(path)
    adopt_input_normalization(model, state, f"backbone {path}")
    prefixes = head_prefixes(model)
    own = {k: v for k, v in model.state_dict().items() if not is_head_param(k, prefixes)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:

        def show(xs):
            return ", ".join(xs[:20]) + (f", … ({len(xs)} in all)" if len(xs) > 20 else "") if xs else "none"

        raise BackboneMismatch(
            f"backbone {path} (model {meta.get('model')!r}) does not fit {type(model).__name__}: "
            f"missing keys: {show(missing)}; unexpected keys: {show(unexpected)}; shape mismatches: {show(shapes)}"
        )
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    return meta


# ---------------------------------------------------------------------------------- stages


def _stage_params(model: nn.Module) -> list[tuple[str, set[str]]]:
    """``[(stage name, its parameter names), …]`` in forward order.

    From timm's ``feature_info`` (entries that own parameters); failing that, from timm's coarse
    ``group_matcher`` block groups (the stem group 0, final-norm groups and the head left out).
    """
    modules = dict(model.named_modules())
    names = [n for n, _ in model.named_parameters()]
    out: list[tuple[str, set[str]]] = []
    for info in getattr(model, "feature_info", None) or []:
        mod = info["module"] if isinstance(info, dict) else getattr(info, "module", None)
        if mod not in modules and isinstance(mod, str) and mod.replace("_", ".") in modules:
            mod = mod.replace("_", ".")
        if mod in modules:
            params = {n for n in names if n.startswith(mod + ".")}
            if params:
                out.append((mod, params))
    if out:
        return out
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        prefixes = head_prefixes(model)
        groups = group_parameters(model, model.group_matcher(coarse=True))
        for gid, params in sorted(groups.items()):
            params = {p for p in params if not is_head_param(p, prefixes)}
            if gid == 0 or gid >= 99999 or not params:
                continue  # stem, final norms, head
            ordered = [n for n in names if n in params]
            out.append((os.path.commonprefix(ordered).rstrip(".") or f"group{gid}", params))
        if out:
            return out
    raise ValueError(f"cannot find the stages of {type(model).__name__} (no feature_info or group_matcher)")


def model_stages(model: nn.Module) -> list[str]:
    """Names of the model's stages in forward order, e.g. ``['layer1', 'layer2', 'layer3',
    'layer4']`` for a ResNet (timm ``feature_info``; timm's ``group_matcher`` as a fallback)."""
    return [name for name, _ in _stage_params(model)]


def freeze_stages(model: nn.Module, n: int | str) -> list[str]:
    """Freeze the stem and the first ``n`` stages (``requires_grad=False``); returns frozen names.

    ``n = 0`` freezes nothing; ``n = "all"`` (or ``n`` ≥ number of stages) freezes the whole
    backbone — everything but the head. Stages are :func:`model_stages`; the stem is every
    parameter registered before the first stage. All parameters registered up to the end of
    stage ``n`` are frozen (timm registers modules in forward order). :func:`spectral_ray.training.fit`
    keeps the batch-norm layers of fully frozen modules in eval mode, so their running statistics
    do not move either.
    """
    params = list(model.named_parameters())
    prefixes = head_prefixes(model)
    if n == "all":
        frozen = [name for name, _ in params if not is_head_param(name, prefixes)]
    else:
        n = int(n)
        if n < 0:
            raise ValueError(f"freeze_stages needs n >= 0 or 'all', got {n}")
        if n == 0:
            return []
        stages = _stage_params(model)
        if n >= len(stages):
            frozen = [name for name, _ in params if not is_head_param(name, prefixes)]
        else:
            last_stage = stages[n - 1][1]
            end = max(i for i, (name, _) in enumerate(params) if name in last_stage) + 1
            frozen = [name for name, _ in params[:end] if not is_head_param(name, prefixes)]
    frozen_set = set(frozen)
    for name, p in params:
        if name in frozen_set:
            p.requires_grad_(False)
    return frozen


# ----------------------------------------------------------------------------- lr groups


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float = 1.0, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups: head at ``lr``, backbone at ``lr * backbone_lr_mult``.

    Only parameters with ``requires_grad`` are included. Biases and other 1-d parameters (norm
    weights) get no weight decay. Each group has a ``name`` (``head``, ``head_no_decay``,
    ``backbone``, ``backbone_no_decay``); empty groups are left out.
    """
    prefixes = head_prefixes(model)
    buckets: dict[str, list] = {"head": [], "head_no_decay": [], "backbone": [], "backbone_no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if is_head_param(name, prefixes) else "backbone"
        no_decay = p.ndim <= 1 or name.endswith(".bias") or re.search(r"(pos_embed|cls_token|reg_token)", name)
        buckets[part + ("_no_decay" if no_decay else "")].append(p)
    groups = []
    for key, ps in buckets.items():
        if not ps:
            continue
        groups.append(
            {
                "name": key,
                "params": ps,
                "lr": lr * (backbone_lr_mult if key.startswith("backbone") else 1.0),
                "weight_decay": 0.0 if key.endswith("no_decay") else weight_decay,
            }
        )
    return groups
