"""The global-frame encoder of M3DDM: VAE latents of the global frames -> cross-attention tokens.

The official model builds it from five ``transformers`` ``ResNetStage`` modules (bottleneck layers,
ReLU, BatchNorm, two layers per stage) and a final 3x3 convolution to 320 channels
(``LightImageEncoder`` in ``src/model/unet_3d_condition_video.py``). This is a small stand-alone
re-implementation with the same parameter names (``resnet_layer.{i}.layers.{j}.{shortcut,layer}...``)
so the released checkpoint loads without ``transformers``.

Token count: a ``(·, 4, h, h)`` latent gives a ``(·, 320, ⌈h/2⌉ - 2, ⌈h/2⌉ - 2)`` map (one stride-2
stage, then an unpadded 3x3 conv): 14 x 14 = 196 tokens per global frame at the 32 x 32 latents of a
256 canvas, 3136 for 16 frames.
"""

from __future__ import annotations

import torch
from torch import nn

#: (in_channels, out_channels, stride) of the five stages, as in the official LightImageEncoder.
STAGES = ((4, 8, 1), (8, 16, 1), (16, 32, 2), (32, 64, 1), (64, 128, 1))


class ConvBN(nn.Module):
    """Conv2d (no bias, 'same' padding) + BatchNorm2d + optional ReLU (``ResNetConvLayer``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True):
        super().__init__()
        self.convolution = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.normalization = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalization(self.convolution(x))
        return torch.relu(x) if self.relu else x


class Shortcut(nn.Module):
    """Projection shortcut: 1x1 strided Conv2d (no bias) + BatchNorm2d (``ResNetShortCut``)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.convolution = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        self.normalization = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalization(self.convolution(x))


class Bottleneck(nn.Module):
    """1x1 reduce (÷4) -> 3x3 (carries the stride) -> 1x1 expand, plus shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, reduction: int = 4):
        super().__init__()
        mid = cout // reduction
        self.shortcut = Shortcut(cin, cout, stride) if (cin != cout or stride != 1) else nn.Identity()
        self.layer = nn.Sequential(
            ConvBN(cin, mid, kernel=1),
            ConvBN(mid, mid, kernel=3, stride=stride),
            ConvBN(mid, cout, kernel=1, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.layer(x) + self.shortcut(x))


class Stage(nn.Module):
    """Two bottleneck layers; the first changes width and carries the stride."""

    def __init__(self, cin: int, cout: int, stride: int, depth: int = 2):
        super().__init__()
        self.layers = nn.Sequential(
            Bottleneck(cin, cout, stride), *[Bottleneck(cout, cout) for _ in range(depth - 1)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GlobalFrameEncoder(nn.Module):
    """``(N, 4, h, w)`` latents (scaled by 0.18215) -> ``(N, 320, ⌈h/2⌉-2, ⌈w/2⌉-2)`` token maps.

    BatchNorm layers use their running statistics: the model must be in ``eval()`` mode for inference.
    """

    def __init__(self, out_channels: int = 320):
        super().__init__()
        self.resnet_layer = nn.Sequential(*[Stage(cin, cout, s) for cin, cout, s in STAGES])
        self.convolution = nn.Conv2d(STAGES[-1][1], out_channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convolution(self.resnet_layer(x))
