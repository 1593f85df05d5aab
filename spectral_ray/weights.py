"""Published starting points: ImageNet weights (timm hub or a local file) and RadImageNet ResNet-50.

``load_pretrained(model_name, in_chans=, num_classes=, source=, file=)`` returns a timm model whose
backbone holds published weights, whose classifier is fresh (unless the file's classifier
already has ``num_classes`` outputs) and whose input normalisation is the one the weights were
trained with (:func:`spectral_ray.models.set_input_normalization`; models take raw [0, 1] images):

- ``source="timm"``: ImageNet weights through timm's hub (needs the network, or the hub cache);
  when unreachable it fails at once with a message explaining how to use a local file.
  Preprocessing: the model's ``pretrained_cfg`` mean/std.
- ``source="file"``: a local timm/torchvision-compatible state dict (``.pth``/``.pt``/``.bin``
  read with ``torch.load(weights_only=True)``, or ``.safetensors``): the architecture's
  ``pretrained_cfg`` mean/std unless the file carries its own (``input_norm.mean``/``.std``);
  also a spectral-ray backbone file (:func:`spectral_ray.models.load_backbone`; its normalisation kept).
- ``source="radimagenet"``: RadImageNet's ResNet-50, either the official PyTorch checkpoint
  (``nn.Sequential(*list(resnet50().children())[:9])`` under ``backbone.``; preprocessing
  ``(x·255 − 127.5)·2/255``, i.e. mean = std = 0.5), the Keras HDF5 file (converted in memory;
  Keras ``preprocess_input`` then ``/255``) or a file written by ``scripts/convert_radimagenet.py``
  (which carries that preprocessing). See docs/REAL_DATA.md.

``preprocessing="identity"`` or ``{"mean": [...], "std": [...]}`` overrides what the weights carry.
Input channels are adapted as timm does (``adapt_input_conv``: ``in_chans=1`` sums the RGB
filters of the first convolution; the RGB mean/std are then averaged). A file that does not fit
the model raises :class:`WeightsMismatch` listing the missing, unexpected and mis-shaped keys.
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

from spectral_ray import models

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
    "keras_radimagenet_to_timm",
    "radimagenet_torch_to_timm",
    "read_keras_h5",
    "KERAS_BN_EPS",
    "PREPROCESSING",
]

SOURCES = ("timm", "file", "radimagenet")
KERAS_BN_EPS = 1.001e-5  # keras.applications ResNet50 BatchNormalization epsilon
TORCH_BN_EPS = 1e-5
# Keras `imagenet_utils.preprocess_input` (mode "caffe"): RGB -> BGR, minus these per-channel means (0-255 units).
KERAS_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# Input normalisation of each published start, in units of images in [0, 1] (x -> (x - mean) / std):
PREPROCESSING = {
    # RadImageNet's PyTorch example (acl/acl_pytorch_train.ipynb): image = (image - 127.5) * 2 / 255
    "radimagenet_torch": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    # RadImageNet's Keras training (acl_train.py): ImageDataGenerator(rescale=1/255,
    # preprocessing_function=preprocess_input) -- Keras runs preprocess_input first, then rescales:
    # (x*255 - mean_bgr) / 255 = x - mean_bgr/255; channels in BGR order, as conv1 expects them.
    "radimagenet_keras": {"mean": tuple(m / 255 for m in KERAS_CAFFE_MEAN_BGR), "std": (1.0, 1.0, 1.0)},
}
PREPROCESSING_CHOICES = ("auto", "identity")


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
    preprocessing="auto",
    **model_kwargs,
) -> nn.Module:
    """A ``model_name`` model started from published weights (see the module docstring).

    Args:
        in_chans: input channels of the new model (1 sums the pretrained RGB filters).
        num_classes: classifier outputs; a pretrained classifier of another size is dropped.
        source: ``"timm"``, ``"file"`` or ``"radimagenet"``; ``file`` is the path for the last two
            (``source`` may also be a ``parse_weights_spec`` string such as ``"file:/w/r50.pth"``).
        hub_timeout: seconds to wait for the hub before declaring it unreachable.
        preprocessing: ``"auto"`` (what the weights were trained with), ``"identity"`` (none) or
            ``{"mean": [...], "std": [...]}`` in units of images in [0, 1].
    """
    override = _check_preprocessing(preprocessing)
    if source not in SOURCES:
        source, spec_file = parse_weights_spec(source)
        file = file if file is not None else spec_file
    if source == "timm":
        if file is not None:
            raise ValueError("source='timm' downloads hub weights; pass source='file' to use a local file")
        model = _from_hub(model_name, in_chans, num_classes, hub_timeout, model_kwargs)
        models.set_input_normalization(model, *_cfg_mean_std(model))
        return _override(model, override)
    if file in (None, ""):
        raise ValueError(f"source={source!r} needs file=<path to the weights>")
    path = Path(file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if models.is_backbone_file(path):
        model = models.create_model(model_name, in_chans=in_chans, num_classes=num_classes, **model_kwargs)
        models.load_backbone(model, path)  # the head stays fresh; the input normalisation comes with it
        return _override(model, override)
    state = _radimagenet_state(path) if source == "radimagenet" else read_state_dict(path)
    model = models.create_model(model_name, in_chans=in_chans, num_classes=num_classes, **model_kwargs)
    load_weights_into(model, state, where=str(path))
    if models.input_normalization(model) is None:  # the file carries none: the architecture's published one
        models.set_input_normalization(model, *_cfg_mean_std(model))
    return _override(model, override)


def _check_preprocessing(preprocessing):
    if isinstance(preprocessing, str):
        if preprocessing not in PREPROCESSING_CHOICES:
            raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSING_CHOICES)} or "
                             f"{{'mean': [...], 'std': [...]}}, got {preprocessing!r}")
        return None if preprocessing == "auto" else preprocessing
    if isinstance(preprocessing, Mapping) and set(preprocessing) == {"mean", "std"}:
        return (preprocessing["mean"], preprocessing["std"])
    raise ValueError(f"preprocessing must be 'auto', 'identity' or {{'mean': [...], 'std': [...]}}, got {preprocessing!r}")


def _override(model: nn.Module, override) -> nn.Module:
    if override is None:
        return model
    if override == "identity":  # mean 0, std 1: the input as it is, and the state-dict layout kept
        return models.set_input_normalization(model, 0.0, 1.0)
    return models.set_input_normalization(model, *override)


def _cfg_mean_std(model: nn.Module) -> tuple:
    """The mean/std timm publishes with the architecture's weights (``pretrained_cfg``)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean") or IMAGENET_DEFAULT_MEAN), tuple(cfg.get("std") or IMAGENET_DEFAULT_STD)


# ----------------------------------------------------------------------------- helpers


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
        return models.create_model(model_name, in_chans=in_chans, num_classes=num_classes, **kwargs)  # raises "unknown model"
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
            f"(in a sweep: source_weights: file:/path/{model_name}.pth)."
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


def _show(xs: list[str]) -> str:
    if not xs:
        return "none"
    return ", ".join(xs[:20]) + (f", … ({len(xs)} in all)" if len(xs) > 20 else "")


def load_weights_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, where: str = "weights") -> nn.Module:
    """Load pretrained ``state`` into ``model``: adapt the first conv to the model's input channels,
    drop a classifier of another size, and require every other key to match.

    Raises :class:`WeightsMismatch` listing missing, unexpected and mis-shaped keys. Missing
    ``num_batches_tracked`` buffers and a missing classifier are allowed (fresh head). An input
    normalisation in ``state`` (``input_norm.mean``/``.std``) is installed on the model; the
    model's own, if it has one and ``state`` none, is kept.
    """
    from timm.models import adapt_input_conv

    norm_keys = (f"{models.INPUT_NORM}.mean", f"{models.INPUT_NORM}.std")
    state = dict(state)
    norm = {k: state.pop(k) for k in norm_keys if k in state}
    own = {k: v for k, v in model.state_dict().items() if k not in norm_keys}
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv")
    for conv in ([first] if isinstance(first, str) else list(first or [])):
        k = f"{conv}.weight"
        if k in state and k in own and state[k].ndim == 4 and state[k].shape[1] != own[k].shape[1]:
            state[k] = adapt_input_conv(own[k].shape[1], state[k].float()).to(own[k].dtype)
    heads = models.head_prefixes(model)

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
    models.adopt_input_normalization(model, norm, where)
    model.load_state_dict(state, strict=False)
    return model


# ----------------------------------------------------------------------------- RadImageNet

# RadImageNet's PyTorch ResNet-50: nn.Sequential(*list(torchvision resnet50().children())[:9]) saved
# as the `backbone` attribute of a module: index -> torchvision/timm name (2 relu, 3 maxpool,
# 8 avgpool hold no weights).
RADIMAGENET_TORCH_LAYERS = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def radimagenet_torch_to_timm(state: Mapping[str, torch.Tensor], *, where: str = "weights") -> dict[str, torch.Tensor]:
    """RadImageNet's official PyTorch checkpoint (``backbone.0.weight`` … ``backbone.7.2.bn3.bias``)
    -> a timm ``resnet50`` state dict, with the release's preprocessing (``input_norm``: mean = std
    = 0.5). Every key must be ``backbone.<0|1|4|5|6|7>.<…>``; any other raises
    :class:`WeightsMismatch` naming the keys and the layout expected."""
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for k, v in state.items():
        head, _, rest = k.partition(".")
        index, _, tail = rest.partition(".")
        if head != "backbone" or index not in RADIMAGENET_TORCH_LAYERS or not tail:
            unexpected.append(k)
            continue
        out[f"{RADIMAGENET_TORCH_LAYERS[index]}.{tail}"] = v
    if unexpected:
        raise WeightsMismatch(
            f"{where} is not in the layout of RadImageNet's PyTorch ResNet-50 (the module "
            "nn.Sequential(*list(resnet50().children())[:9]) saved as 'backbone': backbone.0 = conv1, "
            f"backbone.1 = bn1, backbone.4-7 = layer1-4); unexpected keys: {_show(sorted(unexpected))}"
        )
    return _with_preprocessing(out, PREPROCESSING["radimagenet_torch"])


def keras_radimagenet_to_timm(weights: Mapping[str, np.ndarray], *, bgr_to_rgb: bool = False) -> dict[str, torch.Tensor]:
    """RadImageNet's Keras ResNet-50 weights -> a timm ``resnet50`` state dict
    (:func:`keras_resnet50_to_timm`) carrying its preprocessing: Keras ``preprocess_input``
    (BGR, ImageNet means subtracted) then ``/255`` (:data:`PREPROCESSING`); with ``bgr_to_rgb``
    conv1 takes RGB and the means are reversed with it."""
    state = keras_resnet50_to_timm(weights, bgr_to_rgb=bgr_to_rgb)
    prep = PREPROCESSING["radimagenet_keras"]
    if bgr_to_rgb:
        prep = {k: tuple(reversed(v)) for k, v in prep.items()}
    return _with_preprocessing(state, prep)


def _with_preprocessing(state: dict, prep: Mapping) -> dict:
    state[f"{models.INPUT_NORM}.mean"] = torch.tensor(prep["mean"], dtype=torch.float32).reshape(-1, 1, 1)
    state[f"{models.INPUT_NORM}.std"] = torch.tensor(prep["std"], dtype=torch.float32).reshape(-1, 1, 1)
    return state


def _radimagenet_state(path: Path) -> dict[str, torch.Tensor]:
    """The timm state dict (with preprocessing) of a RadImageNet file in any of its three forms."""
    if path.suffix.lower() in (".h5", ".hdf5", ".keras"):
        return keras_radimagenet_to_timm(read_keras_h5(path))
    state = read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        return radimagenet_torch_to_timm(state, where=str(path))
    if f"{models.INPUT_NORM}.mean" not in state:
        raise WeightsMismatch(
            f"{path}: neither RadImageNet's PyTorch checkpoint (keys backbone.0 ... backbone.7) nor a file written by "
            "scripts/convert_radimagenet.py (timm keys with input_norm.mean/std, the Keras preprocessing): a timm-layout "
            "file without its preprocessing cannot say what RadImageNet input it expects. Convert the Keras .h5 again "
            "with scripts/convert_radimagenet.py, pass the .h5 itself, or use source='file' with preprocessing=..."
        )
    return state


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
