"""Inception-v1 I3D (Carreira & Zisserman, 2017) with the parameter names of ``pytorch-i3d``.

Why our own module: the VideoGPT / TATS checkpoint is a state dict of ``pytorch_i3d.InceptionI3d``,
a class that lives in a GitHub repository (piergiaj/pytorch-i3d) and is not published on PyPI, so no
installable package loads that file; the FVD packages on PyPI (e.g. ``cd-fvd``) wrap the TorchScript
I3D or VideoMAE instead, and the TorchScript file needs no code at all (``torch.jit.load``, used
for ``kind="stylegan-v"``).

Private helper of :mod:`m3ddm_ray.evaluation.metrics.video_distance` (FVD features). Written from the architecture
description: the module and parameter names are chosen so that the FVD checkpoint used by VideoGPT
and TATS (``i3d_pretrained_400.pt``, a plain state dict of ``pytorch_i3d.InceptionI3d(400)``) loads
with ``strict=True``:

* stem: ``Conv3d_1a_7x7`` (7x7x7 / 2, 64), ``MaxPool3d_2a_3x3`` (1x3x3 / 1,2,2), ``Conv3d_2b_1x1``
  (64), ``Conv3d_2c_3x3`` (192), ``MaxPool3d_3a_3x3`` (1x3x3 / 1,2,2);
* inception blocks ``Mixed_3b .. Mixed_5c`` with branches ``b0`` (1x1), ``b1a``/``b1b`` (1x1 then
  3x3x3), ``b2a``/``b2b`` (1x1 then 3x3x3), ``b3a`` (3x3x3 max-pool) / ``b3b`` (1x1), concatenated in
  that order; ``MaxPool3d_4a_3x3`` (3x3x3 / 2) and ``MaxPool3d_5a_2x2`` (2x2x2 / 2) between stages;
* head: average pool ``(2, 7, 7)`` with stride 1, dropout (identity in eval), ``logits`` (1x1x1 conv
  with bias, 1024 -> ``num_classes``), squeeze of the two spatial axes, mean over time.

Every convolution unit is ``conv3d`` (no bias) -> ``bn`` (``BatchNorm3d``, eps ``1e-5`` as in the
VideoGPT copy of pytorch-i3d; the original pytorch-i3d uses ``1e-3``) -> ReLU; ``logits`` has a bias
and neither batch norm nor activation. All convolutions and max-pools use TensorFlow "SAME" padding
computed from the input size (zero padding, the extra pixel at the end), because the weights come
from the TensorFlow release.

Input: float ``(N, 3, T, H, W)`` in ``[-1, 1]``; at ``H = W = 224`` the last stage is ``7 x 7`` and the
average pool leaves ``ceil(ceil(ceil(T/2)/2)/2) - 1`` time steps, so ``T >= 9`` frames are needed.
Output of :meth:`InceptionI3d.forward`: ``(N, num_classes)`` logits averaged over time.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InceptionI3d", "same_padding", "min_frames", "output_time_steps"]

_Triple = Tuple[int, int, int]


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow "SAME" padding ``(before, after)`` of one axis of length ``size``.

    The output has ``ceil(size / stride)`` elements; the total padding is ``kernel - stride`` when
    ``stride`` divides ``size`` and ``kernel - size % stride`` otherwise (never negative); the odd
    element, if any, goes after.
    """
    rem = size % stride
    total = max(kernel - (stride if rem == 0 else rem), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: _Triple, stride: _Triple) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt = same_padding(t, kernel[0], stride[0])
    ph = same_padding(h, kernel[1], stride[1])
    pw = same_padding(w, kernel[2], stride[2])
    if not any(pt + ph + pw):
        return x
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1], pt[0], pt[1]))


class _SamePool(nn.Module):
    """3-D max-pool after zero "SAME" padding (parameter-free)."""

    def __init__(self, kernel: _Triple, stride: _Triple):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class _Unit(nn.Module):
    """``conv3d`` (+ ``bn`` + ReLU) with "SAME" padding; names as in pytorch-i3d's ``Unit3D``."""

    def __init__(self, cin: int, cout: int, kernel: _Triple = (1, 1, 1), stride: _Triple = (1, 1, 1),
                 *, bn_relu: bool = True, bias: bool = False):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.bn_relu = bn_relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, stride=self.stride, padding=0, bias=bias)
        if bn_relu:
            self.bn = nn.BatchNorm3d(cout, eps=1e-5, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn_relu:
            x = F.relu(self.bn(x))
        return x


class _Mixed(nn.Module):
    """Inception block; ``widths = (b0, b1a, b1b, b2a, b2b, b3b)`` output channels."""

    def __init__(self, cin: int, widths: Sequence[int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = _Unit(cin, w0)
        self.b1a = _Unit(cin, w1a)
        self.b1b = _Unit(w1a, w1b, (3, 3, 3))
        self.b2a = _Unit(cin, w2a)
        self.b2b = _Unit(w2a, w2b, (3, 3, 3))
        self.b3a = _SamePool((3, 3, 3), (1, 1, 1))
        self.b3b = _Unit(cin, w3b)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


# (name, in_channels, (b0, b1a, b1b, b2a, b2b, b3b)) of the inception blocks, and the pools between.
_MIXED: List[Tuple[str, Tuple[int, ...]]] = [
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
]


class InceptionI3d(nn.Module):
    """I3D classifier; ``forward`` returns time-averaged logits ``(N, num_classes)``.

    Sub-modules are registered in forward order, so iterating ``self.stages`` names runs the network.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3):
        super().__init__()
        self.num_classes = int(num_classes)
        self.stage_names: List[str] = []

        def add(name: str, module: nn.Module) -> None:
            self.add_module(name, module)
            self.stage_names.append(name)

        add("Conv3d_1a_7x7", _Unit(in_channels, 64, (7, 7, 7), (2, 2, 2)))
        add("MaxPool3d_2a_3x3", _SamePool((1, 3, 3), (1, 2, 2)))
        add("Conv3d_2b_1x1", _Unit(64, 64))
        add("Conv3d_2c_3x3", _Unit(64, 192, (3, 3, 3)))
        add("MaxPool3d_3a_3x3", _SamePool((1, 3, 3), (1, 2, 2)))
        channels = 192
        for name, spec in _MIXED:
            if name.startswith("MaxPool"):
                add(name, _SamePool(*spec))
            else:
                block = _Mixed(channels, spec)
                add(name, block)
                channels = block.out_channels
        self.feature_channels = channels  # 1024
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)
        self.logits = _Unit(channels, self.num_classes, bn_relu=False, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = self.logits(self.dropout(self.avg_pool(x)))  # (N, classes, T', 1, 1) at 224 x 224
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"I3D expects 224 x 224 frames; the logits map is {tuple(x.shape[-2:])}")
        return x[..., 0, 0].mean(dim=2)


def output_time_steps(t: int) -> int:
    """Time steps left after the average pool for a ``t``-frame input (224 x 224 frames)."""
    for stride in (2, 2, 2):  # Conv3d_1a, MaxPool3d_4a, MaxPool3d_5a
        t = math.ceil(t / stride)
    return t - 1


def min_frames() -> int:
    """Smallest number of frames the network accepts (9)."""
    t = 1
    while output_time_steps(t) < 1:
        t += 1
    return t
