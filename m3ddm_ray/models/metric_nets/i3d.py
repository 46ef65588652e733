"""Inception-v1 I3D (Carreira & Zisserman, 2017) with the parameter names of ``pytorch-i3d``.

Why our own module: the VideoGPT / TATS checkpoint is a state dict of ``pytorch_i3d.InceptionI3d``,
a class that lives in a GitHub repository (piergiaj/pytorch-i3d) and is not published on PyPI, so no
installable package loads that file; the FVD packages on PyPI (e.g. ``cd-fvd``) wrap the TorchScript
I3D or VideoMAE instead, and the TorchScript file needs no code at all (``torch.jit.load``, used
for ``kind="stylegan-v"``).

The network of the FVD features (:class:`m3ddm_ray.evaluation.metrics.FVDFeatureExtractor`) and its
loader (:func:`load_i3d`). Written from the architecture description: the module and parameter names
are chosen so that the FVD checkpoint used by VideoGPT and TATS (``i3d_pretrained_400.pt``, a plain
state dict of ``pytorch_i3d.InceptionI3d(400)``) loads with ``strict=True``:

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
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from m3ddm_ray.errors import InputError, ModelLoadError

from .checkpoints import PathLike, file_tag, load_state_dict, seeded, strict_load

__all__ = ["InceptionI3d", "same_padding", "min_frames", "output_time_steps", "load_i3d", "I3D_KINDS",
           "I3D_VIDEOGPT_FILENAME", "I3D_STYLEGANV_FILENAME", "I3D_STYLEGANV_URL"]

#: The two published checkpoints :func:`load_i3d` reads.
I3D_KINDS = ("videogpt", "stylegan-v")
#: The VideoGPT / TATS I3D checkpoint (state dict of pytorch-i3d's ``InceptionI3d(400)``).
I3D_VIDEOGPT_FILENAME = "i3d_pretrained_400.pt"
_I3D_VIDEOGPT_SOURCE = (
    "VideoGPT's videogpt/download.py (gdown id 1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT), the same file "
    "TATS and common_metrics_on_video_quality use"
)
#: StyleGAN-V's TorchScript I3D (the TF-hub FVD network, converted).
I3D_STYLEGANV_FILENAME = "i3d_torchscript.pt"
I3D_STYLEGANV_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"

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


class _StyleGANVStandIn(nn.Module):
    """A random-init I3D with the call convention of StyleGAN-V's ``i3d_torchscript.pt``."""

    def __init__(self):
        super().__init__()
        self.i3d = InceptionI3d(400)

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if rescale:
            x = x / 255.0 * 2.0 - 1.0
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        logits = self.i3d(x)
        return logits if return_features else torch.softmax(logits, dim=1)


def _missing_message(kind: str, path: Optional[Path]) -> str:
    where = "no weights path given" if path is None else f"{path} does not exist"
    if kind == "videogpt":
        return (f"I3D (videogpt): {where}. Pass weights=PATH of {I3D_VIDEOGPT_FILENAME} "
                f"(from {_I3D_VIDEOGPT_SOURCE}); random_init=True is for tests only")
    return (f"I3D (stylegan-v): {where}. Pass weights=PATH of {I3D_STYLEGANV_FILENAME} "
            f"(download {I3D_STYLEGANV_URL}, as StyleGAN-V's src/metrics/frechet_video_distance.py "
            f"does); random_init=True is for tests only")


def load_i3d(kind: str, weights: Optional[PathLike] = None, *, random_init: bool = False,
             seed: int = 0) -> Tuple[nn.Module, str]:
    """The I3D of ``kind`` on the CPU, in eval mode, and a tag naming its weights.

    ``kind="videogpt"``: :class:`InceptionI3d` (400 classes) with ``weights`` = VideoGPT's
    ``i3d_pretrained_400.pt`` state dict, loaded strictly. ``kind="stylegan-v"``: ``weights`` =
    StyleGAN-V's ``i3d_torchscript.pt``, read with ``torch.jit.load`` and called as
    ``model(x, rescale=..., resize=..., return_features=...)``. ``random_init=True`` (tests only):
    a seeded random I3D (for ``stylegan-v`` behind the same call convention), no file read.

    Returns:
        ``(module, tag)``: ``tag`` is ``"<path> sha256:<12 hex>"`` or ``"random-init(seed=N); ..."``.

    Raises:
        InputError: an unknown ``kind``, or ``random_init`` with ``weights``.
        ModelLoadError: missing, unreadable or mismatching weights (the message names the file and
            where to get it).
    """
    if kind not in I3D_KINDS:
        raise InputError(f"kind={kind!r}; expected 'videogpt' or 'stylegan-v'")
    if random_init:
        if weights is not None:
            raise InputError("random_init=True cannot be combined with weights")
        model = seeded(seed, (lambda: InceptionI3d(400)) if kind == "videogpt" else _StyleGANVStandIn)
        return model.eval(), f"random-init(seed={seed}); NOT comparable with published FVD"
    path = None if weights is None else Path(weights)
    if path is None or not path.is_file():
        raise ModelLoadError(_missing_message(kind, path))
    if kind == "videogpt":
        model = InceptionI3d(400)
        strict_load(model, load_state_dict(path, "I3D (videogpt)"), path, "I3D (videogpt)")
    else:
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(
                f"I3D (stylegan-v): {path} is not a TorchScript module loadable with torch.jit.load "
                f"({e}); kind='stylegan-v' expects {I3D_STYLEGANV_FILENAME} ({I3D_STYLEGANV_URL}), "
                f"kind='videogpt' a state dict like {I3D_VIDEOGPT_FILENAME}"
            ) from e
    return model.eval(), file_tag(path)
