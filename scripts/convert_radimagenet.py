#!/usr/bin/env python
"""Convert RadImageNet's Keras ResNet-50 weights to a timm ``resnet50`` PyTorch state dict.

    python scripts/convert_radimagenet.py RadImageNet-ResNet50_notop.h5 radimagenet_resnet50.pth

Reads the Keras 2 HDF5 file with h5py (no TensorFlow needed), maps the layer names
(conv1_conv -> conv1, conv1_bn -> bn1, convN_blockM_K_conv/bn -> layer{N-1}.{M-1}.conv{K}/bn{K},
K = 0 -> downsample.0/.1), transposes kernels, folds the Keras conv biases into the following
batch norms, adds the input preprocessing RadImageNet's Keras models were trained with
(``input_norm.mean``/``.std``: Keras ``preprocess_input``, then ``/255``), verifies that the result
loads strictly into timm's resnet50 (classifier excepted) and saves plain tensors (``torch.save``;
loadable with ``torch.load(weights_only=True)``) or ``.safetensors``. See docs/REAL_DATA.md.

(``source="radimagenet"`` also reads the .h5 directly; the conversion saves doing it per start.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def convert(src, dst, *, bgr_to_rgb: bool = False, verify: bool = True) -> dict:
    import torch

    from spectral_ray.weights import keras_radimagenet_to_timm, load_weights_into, read_keras_h5

    state = keras_radimagenet_to_timm(read_keras_h5(src), bgr_to_rgb=bgr_to_rgb)
    if verify:
        import timm

        load_weights_into(timm.create_model("resnet50", pretrained=False, num_classes=1000), state, where=str(src))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(dst))
    else:
        torch.save(state, dst)
    return state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="Keras HDF5 weights, e.g. RadImageNet-ResNet50_notop.h5")
    ap.add_argument("dst", help="output .pth (torch.save of a state dict) or .safetensors")
    ap.add_argument("--bgr-to-rgb", action="store_true", help="reverse conv1's input channels (weights trained on BGR input)")
    ap.add_argument("--no-verify", action="store_true", help="skip loading the result into timm's resnet50")
    args = ap.parse_args(argv)
    try:
        state = convert(args.src, args.dst, bgr_to_rgb=args.bgr_to_rgb, verify=not args.no_verify)
    except (FileNotFoundError, ValueError) as e:
        print(f"convert_radimagenet: {e}", file=sys.stderr)
        return 1
    n = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked") and not k.startswith("input_norm."))
    print(f"wrote {args.dst}: {len(state)} tensors, {n / 1e6:.1f} M parameters (timm resnet50 layout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
