"""Faster CPU kernels for small feature maps: 2-D convolutions as one matrix multiply.

At 64 px a ResNet's last stages run on 4×4 and 2×2 maps, where oneDNN's convolutions reach a
fraction of the CPU's matmul throughput (``bench/levers.py``: the 512→512 3×3 backward at 2×2
took 24 ms of a 263 ms step), and its bf16 weight-gradient kernel returns NaN on 1×1 maps
(tests/test_training.py). :func:`small_map_convs` computes every convolution whose input has at
most ``max_pixels`` pixels as ``unfold`` + one GEMM instead; autograd derives the backward from
the same two ops. Same function, other rounding.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["conv2d_as_matmul", "small_map_convs"]


def conv2d_as_matmul(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a zero-padded, ungrouped ``nn.Conv2d`` as unfold + matmul.
    ``x`` (B, C, H, W) → (B, out_channels, H', W')."""
    b, _, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (B, C·kh·kw, H'·W')
    # one (B·H'·W', C·kh·kw) × (C·kh·kw, O) GEMM, not B broadcast ones (far slower in bf16: BENCHMARKS.md)
    rows = cols.transpose(1, 2).reshape(b * h_out * w_out, -1)
    out = F.linear(rows, conv.weight.reshape(conv.out_channels, -1), conv.bias)  # (B·H'·W', O)
    # (B, O, H', W') in channels-last memory, as the GEMM wrote it
    return out.view(b, h_out, w_out, conv.out_channels).permute(0, 3, 1, 2)


def _eligible(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


@contextlib.contextmanager
def small_map_convs(model: nn.Module, max_pixels: int):
    """Within the block, each plain ``nn.Conv2d`` of ``model`` whose input has ≤ ``max_pixels``
    pixels (H·W) runs as :func:`conv2d_as_matmul`; larger inputs keep the library kernel.
    ``max_pixels`` 0 = off. Undone on exit (the model's modules are left as they were)."""
    convs = [m for m in model.modules() if _eligible(m)] if max_pixels > 0 else []

    def forward_of(conv: nn.Conv2d):
        library = conv.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            if x.dim() == 4 and x.shape[-2] * x.shape[-1] <= max_pixels:
                return conv2d_as_matmul(conv, x)
            return library(x)

        return forward

    for conv in convs:
        conv.forward = forward_of(conv)  # an instance attribute shadows the class's forward
    try:
        yield
    finally:
        for conv in convs:
            del conv.forward
