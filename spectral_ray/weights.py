"""Published starting points: ImageNet weights (timm hub or a local file) and RadImageNet ResNet-50.

``load_pretrained(model_name, in_chans=, num_classes=, source=, file=)`` returns a timm model whose
backbone holds published weights and whose classifier is fresh (unless the file's classifier
already has ``num_classes`` outputs):

- ``source="timm"``: ImageNet weights through timm's hub (needs the network, or the hub cache);
  when unreachable it fails at once with a message explaining how to use a local file.
- ``source="file"``: a local timm/torchvision-compatible state dict (``.pth``/``.pt``/``.bin``
  read with ``torch.load(weights_only=True)``, or ``.safetensors``); also a spectral-ray backbone
  file (delegated to :func:`spectral_ray.models.create_model`).
- ``source="radimagenet"``: a RadImageNet ResNet-50 checkpoint converted to PyTorch by
  ``scripts/convert_radimagenet.py`` (:func:`keras_resnet50_to_timm`; see docs/REAL_DATA.md).

Input channels are adapted as timm does (``adapt_input_conv``: ``in_chans=1`` sums the RGB
filters of the first convolution). A file that does not fit the model raises
:class:`WeightsMismatch` listing the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

__all__ = [
    "SOURCES",
    "WeightsMismatch",
    "WeightsUnavailable",
    "load_pretrained",
    "parse_weights_spec",
    "read_state_dict",
    "load_weights_into",
    "keras_name_to_timm",
    "keras_resnet50_to_timm",
    "read_keras_h5",
    "KERAS_BN_EPS",
]

SOURCES = ("timm", "file", "radimagenet")
KERAS_BN_EPS = 1.001e-5  # keras.applications ResNet50 BatchNormalization epsilon
TORCH_BN_EPS = 1e-5


class WeightsMismatch(ValueError):
    """A weights file does not fit the model: lists missing / unexpected / mis-shaped keys."""


class WeightsUnavailable(RuntimeError):
    """Hub weights cannot be fetched (offline) and are not cached."""


# ----------------------------------------------------------------------------- public entry


def parse_weights_spec(spec: str) -> tuple[str, str | None]:
    """``"timm"`` -> ("timm", None); ``"file:/p/x.pth"`` / ``"radimagenet:/p/r.pth"`` -> (source, path).

    A bare path (contains a path separator or ends in .pth/.pt/.bin/.safetensors) means ``file``.
    For sweep files that name the starting point in one string.
    """
    spec = str(spec).strip()
    if spec == "timm":
        return "timm", None
    for src in ("file", "radimagenet"):
        if spec.startswith(src + ":"):
            path = spec[len(src) + 1 :]
            if not path:
                raise ValueError(f"weights spec {spec!r} needs a path after '{src}:'")
            return src, path
    if "/" in spec or os.sep in spec or spec.endswith((".pth", ".pt", ".bin", ".safetensors")):
        return "file", spec
    raise ValueError(f"weights spec {spec!r}: expected 'timm', 'file:<path>', 'radimagenet:<path>' or a path")


def load_pretrained(
    model_name: str,
    *,
    in_chans: int = 3,
    num_classes: int = 2,
    source: str = "timm",
    file=None,
    hub_timeout: float = 3.0,
    **model_kwargs,
) -> nn.Module:
    """A ``model_name`` model started from published weights (see the module docstring).

    Args:
        in_chans: input channels of the new model (1 sums the pretrained RGB filters).
        num_classes: classifier outputs; a pretrained classifier of another size is dropped.
        source: ``"timm"``, ``"file"`` or ``"radimagenet"``; ``file`` is the path for the last two
            (``source`` may also be a ``parse_weights_spec`` string such as ``"file:/w/r50.pth"``).
        hub_timeout: seconds to wait for the hub before declaring it unreachable.
    """
    if source not in SOURCES:
        source, spec_file = parse_weights_spec(source)
        file = file if file is not None else spec_file
    if source == "timm":
        if file is not None:
            raise ValueError("source='timm' downloads hub weights; pass source='file' to use a local file")
        return _from_hub(model_name, in_chans, num_classes, hub_timeout, model_kwargs)
    if file in (None, ""):
        raise ValueError(f"source={source!r} needs file=<path to the weights>")
    path = Path(file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if source == "radimagenet" and path.suffix.lower() in (".h5", ".hdf5", ".keras"):
        raise ValueError(
            f"{path} is a Keras file; convert it to PyTorch first: "
            f"python scripts/convert_radimagenet.py {path} radimagenet_resnet50.pth (see docs/REAL_DATA.md)"
        )
    from_models = _models_module()
    if from_models is not None and _is_backbone_file(path):
        return from_models.create_model(model_name, in_chans=in_chans, num_classes=num_classes, pretrained_file=str(path), **model_kwargs)
    model = _create(model_name, in_chans, num_classes, model_kwargs)
    load_weights_into(model, read_state_dict(path), where=str(path))
    return model


# ----------------------------------------------------------------------------- helpers


def _models_module():
    try:
        from spectral_ray import models
    except ImportError:
        return None
    return models if hasattr(models, "create_model") else None


def _is_backbone_file(path: Path) -> bool:
    if path.suffix.lower() == ".safetensors":
        return False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(obj, dict) and str(obj.get("format", "")).startswith("spectral-ray-backbone")


def _create(model_name: str, in_chans: int, num_classes: int, kwargs: dict) -> nn.Module:
    models = _models_module()
    if models is not None:
        return models.create_model(model_name, in_chans=in_chans, num_classes=num_classes, **kwargs)
    import timm

    return timm.create_model(model_name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)


def _hub_reachable(timeout: float) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    host = re.sub(r"^https?://", "", os.environ.get("HF_ENDPOINT", "https://huggingface.co")).split("/")[0]
    host, _, port = host.partition(":")
    try:
        with socket.create_connection((host, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(model_name: str, in_chans: int, num_classes: int, timeout: float, kwargs: dict) -> nn.Module:
    import timm

    if not timm.is_model(model_name):
        return _create(model_name, in_chans, num_classes, kwargs)  # raises the factory's "unknown model" error
    reachable = _hub_reachable(timeout)
    try:
        if reachable:
            return timm.create_model(model_name, pretrained=True, in_chans=in_chans, num_classes=num_classes, **kwargs)
        import huggingface_hub.constants as hf_constants

        old = hf_constants.HF_HUB_OFFLINE
        hf_constants.HF_HUB_OFFLINE = True  # cache only: no retries against an unreachable host
        try:
            return timm.create_model(model_name, pretrained=True, in_chans=in_chans, num_classes=num_classes, **kwargs)
        finally:
            hf_constants.HF_HUB_OFFLINE = old
    except Exception as e:  # hub / cache errors come in many types
        why = "the timm hub (huggingface.co) is not reachable from this machine" if not reachable else f"{type(e).__name__}: {e}"
        raise WeightsUnavailable(
            f"cannot load ImageNet weights for {model_name!r} through timm: {why}, and they are not in the local "
            f"hub cache. Use a local file instead: on a machine with network run "
            f"`python -c \"import timm, torch; torch.save(timm.create_model('{model_name}', pretrained=True).state_dict(), "
            f"'{model_name}.pth')\"`, copy {model_name}.pth here and pass source='file', file='{model_name}.pth' "
            f"(in a sweep: weights: file:/path/{model_name}.pth)."
        ) from None


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Tensors from a checkpoint, read safely: ``.safetensors``, or ``torch.load(weights_only=True)``.

    Unwraps ``{"state_dict": …}`` / ``{"model": …}`` / ``{"state_dict_ema": …}`` containers and a
    ``module.`` (DataParallel) prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(
                f"cannot read {path} with torch.load(weights_only=True) ({type(e).__name__}: {e}); only plain "
                "tensor state dicts are accepted, never arbitrary pickles"
            ) from e
    for k in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
            break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    state = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        state[k[7:] if k.startswith("module.") else k] = v
    return state


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    models = _models_module()
    if models is not None and hasattr(models, "head_prefixes"):
        return tuple(models.head_prefixes(model))
    cls = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "fc"
    return (cls,) if isinstance(cls, str) else tuple(cls)


def _show(xs: list[str]) -> str:
    if not xs:
        return "none"
    return ", ".join(xs[:20]) + (f", … ({len(xs)} in all)" if len(xs) > 20 else "")


def load_weights_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, where: str = "weights") -> nn.Module:
    """Load pretrained ``state`` into ``model``: adapt the first conv to the model's input channels,
    drop a classifier of another size, and require every other key to match.

    Raises :class:`WeightsMismatch` listing missing, unexpected and mis-shaped keys. Missing
    ``num_batches_tracked`` buffers and a missing classifier are allowed (fresh head).
    """
    from timm.models import adapt_input_conv

    state = dict(state)
    own = model.state_dict()
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv")
    for conv in ([first] if isinstance(first, str) else list(first or [])):
        k = f"{conv}.weight"
        if k in state and k in own and state[k].ndim == 4 and state[k].shape[1] != own[k].shape[1]:
            state[k] = adapt_input_conv(own[k].shape[1], state[k].float()).to(own[k].dtype)
    heads = _head_prefixes(model)

    def is_head(k):
        return any(k == p or k.startswith(p + ".") for p in heads)

    for k in [k for k in state if is_head(k)]:
        if k not in own or state[k].shape != own[k].shape:
            del state[k]  # classifier of another size: the head stays fresh
    missing = sorted(k for k in set(own) - set(state) if not is_head(k) and not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in set(own) & set(state) if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        raise WeightsMismatch(
            f"{where} does not fit {type(model).__name__} "
            f"({getattr(model, 'pretrained_cfg', {}).get('architecture', '?')}): "
            f"missing keys: {_show(missing)}; unexpected keys: {_show(unexpected)}; shape mismatches: {_show(shapes)}"
        )
    model.load_state_dict(state, strict=False)
    return model


# ----------------------------------------------------------------------------- RadImageNet (Keras) conversion

_BLOCK_RE = re.compile(r"^conv([2-5])_block(\d+)_([0-3])_(conv|bn)$")


def keras_name_to_timm(layer: str) -> str | None:
    """Keras ResNet50 layer name -> timm ``resnet50`` module name (None if the layer has no weights here).

    ``conv1_conv`` -> ``conv1``; ``conv1_bn`` -> ``bn1``; ``convN_blockM_K_conv`` ->
    ``layer{N-1}.{M-1}.conv{K}`` (K = 1, 2, 3); ``convN_blockM_K_bn`` -> ``layer{N-1}.{M-1}.bn{K}``;
    K = 0 is the projection shortcut: ``…downsample.0`` (conv) / ``…downsample.1`` (bn);
    ``predictions`` / ``fc1000`` -> ``fc``.
    """
    if layer == "conv1_conv":
        return "conv1"
    if layer == "conv1_bn":
        return "bn1"
    if layer in ("predictions", "fc1000", "probs"):
        return "fc"
    m = _BLOCK_RE.match(layer)
    if not m:
        return None
    stage, block, k, kind = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
    base = f"layer{stage - 1}.{block - 1}"
    if k == 0:
        return f"{base}.downsample.{0 if kind == 'conv' else 1}"
    return f"{base}.{kind}{k}"


def _split_keras_key(key: str) -> tuple[str, str]:
    parts = key.replace(":0", "").split("/")
    if len(parts) < 2:
        raise ValueError(f"Keras weight name {key!r} is not 'layer/weight'")
    return parts[0], parts[-1]


def keras_resnet50_to_timm(
    weights: Mapping[str, np.ndarray],
    *,
    bgr_to_rgb: bool = False,
    keras_eps: float = KERAS_BN_EPS,
    torch_eps: float = TORCH_BN_EPS,
) -> dict[str, torch.Tensor]:
    """Convert Keras ResNet50 weights (``{"conv1_conv/kernel:0": array, …}``) to a timm ``resnet50`` state dict.

    - conv kernels ``(kh, kw, in, out)`` -> ``(out, in, kh, kw)``; dense ``(in, out)`` -> ``(out, in)``;
    - BN ``gamma, beta, moving_mean, moving_variance`` -> ``weight, bias, running_mean, running_var``
      (+ ``num_batches_tracked = 0``);
    - Keras convs carry a bias, timm's do not: it is folded into the following BN
      (``running_mean -= conv_bias``), which is exact;
    - Keras BN uses eps 1.001e-5, torch 1e-5: ``running_var += keras_eps - torch_eps`` keeps the
      normalisation identical;
    - ``bgr_to_rgb`` reverses the input channels of ``conv1`` (for weights trained on BGR input).

    Every Keras layer must map; unknown layers raise ``ValueError`` listing them.
    """
    layers: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in weights.items():
        layer, w = _split_keras_key(key)
        layers.setdefault(layer, {})[w] = np.asarray(arr)
    unknown = sorted(l for l in layers if keras_name_to_timm(l) is None)
    if unknown:
        raise ValueError(f"Keras layers that are not part of ResNet50: {_show(unknown)}")
    out: dict[str, torch.Tensor] = {}
    conv_bias: dict[str, np.ndarray] = {}
    for layer, ws in layers.items():
        name = keras_name_to_timm(layer)
        if layer.endswith("_conv"):
            if "kernel" not in ws:
                raise ValueError(f"Keras layer {layer!r} has no kernel (weights: {sorted(ws)})")
            k = ws["kernel"]
            if k.ndim != 4:
                raise ValueError(f"Keras layer {layer!r}: kernel must be 4-D (kh, kw, in, out), got {k.shape}")
            k = np.transpose(k, (3, 2, 0, 1))
            if bgr_to_rgb and name == "conv1":
                k = k[:, ::-1]
            out[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(k, dtype=np.float32))
            if "bias" in ws:
                conv_bias[layer[: -len("_conv")]] = ws["bias"].astype(np.float64)
        elif layer.endswith("_bn"):
            need = ("gamma", "beta", "moving_mean", "moving_variance")
            miss = [w for w in need if w not in ws]
            if miss:
                raise ValueError(f"Keras layer {layer!r} lacks {miss}")
            out[f"{name}.weight"] = torch.from_numpy(ws["gamma"].astype(np.float32))
            out[f"{name}.bias"] = torch.from_numpy(ws["beta"].astype(np.float32))
            out[f"{name}.running_mean"] = torch.from_numpy(ws["moving_mean"].astype(np.float64))  # bias folded below
            out[f"{name}.running_var"] = torch.from_numpy(
                (ws["moving_variance"].astype(np.float64) + (keras_eps - torch_eps)).astype(np.float32)
            )
            out[f"{name}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        else:  # dense classifier
            out["fc.weight"] = torch.from_numpy(np.ascontiguousarray(ws["kernel"].T, dtype=np.float32))
            if "bias" in ws:
                out["fc.bias"] = torch.from_numpy(ws["bias"].astype(np.float32))
    for prefix, b in conv_bias.items():
        bn = keras_name_to_timm(prefix + "_bn")
        key = f"{bn}.running_mean"
        if key not in out:
            raise ValueError(f"Keras conv {prefix}_conv has a bias but no {prefix}_bn to fold it into")
        out[key] = out[key] - torch.from_numpy(b)
    for k in [k for k in out if k.endswith("running_mean")]:
        out[k] = out[k].float()
    return out


def read_keras_h5(path) -> dict[str, np.ndarray]:
    """Weights of a Keras 2 HDF5 file (``save_weights`` or full ``model.save``) as ``{"layer/weight": array}``.

    Reads with h5py only (no TensorFlow). Keras 3 ``.weights.h5`` files (``layers/…/vars/0``) are
    not supported: load them in Keras and re-save with ``save_weights(..., save_format='h5')``.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras weights file not found: {path}")
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        g = f["model_weights"] if "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("layer_names", [])]
        if names:
            for layer in names:
                lg = g[layer]
                for wn in lg.attrs.get("weight_names", []):
                    wn = wn.decode() if isinstance(wn, bytes) else str(wn)
                    out[f"{layer}/{wn.split('/')[-1].replace(':0', '')}"] = np.asarray(lg[wn])
        else:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    parts = name.split("/")
                    out[f"{parts[0]}/{parts[-1].replace(':0', '')}"] = np.asarray(obj)

            g.visititems(visit)
    if not out:
        raise ValueError(f"{path} holds no Keras weights (expected layer groups with 'weight_names')")
    if any(k.startswith(("layers/", "vars/")) for k in out):
        raise ValueError(f"{path} looks like a Keras 3 .weights.h5 file; re-save it in the Keras 2 HDF5 format")
    return out
