"""LPIPS v0.1 with the AlexNet trunk (Zhang et al., CVPR 2018), written from the paper and the
definitions of the ``lpips`` package (richzhang/PerceptualSimilarity).

Why our own module and not the package: ``lpips`` (0.1.4, and ``torchmetrics``' LPIPS, which
wraps it) builds its trunk with ``torchvision.models.alexnet``, so it cannot load the standard
weight files without torchvision; torchvision wheels pin one exact torch build (CPU or one CUDA
variant), and depending on it would let pip replace the project's torch. This module is ~100
lines, has the same parameter names, loads the same two standard files strictly with
``torch.load(weights_only=True)``, and ``tests/test_eval_metrics.py`` checks it against the
functional definition.

The network of :class:`m3ddm_ray.evaluation.metrics.LPIPS` and its loader (:func:`load_lpips`).
Parameter names follow the two checkpoints that are used with it, so both load strictly:

* ``features.{0,3,6,8,10}.{weight,bias}``: torchvision's ImageNet AlexNet (``alexnet-owt-7be5be79.pth``,
  whose ``classifier.*`` entries are ignored). Layout of ``features`` (index: layer):
  ``0`` conv 3->64 k11 s4 p2, ``1`` ReLU, ``2`` max-pool k3 s2, ``3`` conv 64->192 k5 p2, ``4`` ReLU,
  ``5`` max-pool k3 s2, ``6`` conv 192->384 k3 p1, ``7`` ReLU, ``8`` conv 384->256 k3 p1, ``9`` ReLU,
  ``10`` conv 256->256 k3 p1, ``11`` ReLU, ``12`` max-pool k3 s2 (unused by LPIPS).
* ``lin{0..4}.model.1.weight``: the five linear heads of ``lpips/weights/v0.1/alex.pth``, each a
  ``1 x 1`` convolution ``C_k -> 1`` without bias behind a dropout (index 0, so the weight sits at
  index 1), ``C = (64, 192, 384, 256, 256)``.

Distance of two images ``x0, x1`` in ``[-1, 1]`` (``(N, 3, H, W)``):

1. scaling layer ``(x - shift) / scale`` with ``shift = (-0.030, -0.088, -0.188)`` and
   ``scale = (0.458, 0.448, 0.450)`` (per RGB channel: ImageNet mean/std mapped to the [-1, 1] range);
2. AlexNet activations after the ReLUs 1, 4, 7, 9, 11 of ``features``;
3. each activation unit-normalised over channels: ``f / (sqrt(sum_c f^2) + 1e-10)``;
4. squared difference, weighted sum over channels by ``lin_k`` (1x1 conv), mean over ``H, W``;
5. sum of the five layer values -> one number per image pair (0 for identical images).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from m3ddm_ray.errors import InputError, ModelLoadError

from .checkpoints import PathLike, file_tag, load_state_dict, seeded, strict_load

__all__ = ["AlexNetFeatures", "LPIPSNet", "CHANNELS", "TAPS", "SHIFT", "SCALE", "min_side", "load_lpips",
           "ALEXNET_FILENAME", "ALEXNET_URL", "LPIPS_LINEAR_URL", "default_alexnet_path"]

#: File name of torchvision's ImageNet AlexNet in the torch hub cache.
ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"
#: Where torchvision downloads it from.
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
#: The LPIPS v0.1 AlexNet linear heads as shipped in the ``lpips`` package.
LPIPS_LINEAR_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"

#: Output channels of the five tapped AlexNet layers.
CHANNELS = (64, 192, 384, 256, 256)
#: Indices in ``features`` of the ReLUs whose outputs are compared.
TAPS = (1, 4, 7, 9, 11)
#: LPIPS scaling layer constants (per RGB channel).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


def min_side() -> int:
    """Smallest image side AlexNet's ``features[:12]`` accepts (31 pixels)."""
    s = 1
    while True:
        a = (s + 2 * 2 - 11) // 4 + 1  # conv 0
        b = (a - 3) // 2 + 1 if a >= 3 else 0  # pool 2 (conv 3 keeps the size)
        c = (b - 3) // 2 + 1 if b >= 3 else 0  # pool 5 (convs 6, 8, 10 keep it)
        if a >= 1 and c >= 1:
            return s
        s += 1


class AlexNetFeatures(nn.Module):
    """The convolutional part of AlexNet, laid out as torchvision's ``alexnet().features``.

    ``forward`` returns the five tapped activations (after ReLUs 1, 4, 7, 9, 11).
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            if i > TAPS[-1]:
                break
            x = layer(x)
            if i in TAPS:
                taps.append(x)
        return taps


class _Head(nn.Module):
    """``model = Sequential(Dropout, Conv2d(C, 1, 1, bias=False))`` -> key ``model.1.weight``."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, stride=1, padding=0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPSNet(nn.Module):
    """Scaling layer + AlexNet trunk + five linear heads; ``forward(x0, x1) -> (N,)`` distances.

    ``self.net`` holds the trunk (its state dict is torchvision's ``features.*``); the heads are
    attributes ``lin0 .. lin4`` (state-dict keys ``lin{k}.model.1.weight``). The scaling constants
    are non-persistent buffers, so neither checkpoint needs them.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.net = AlexNetFeatures()
        for k, c in enumerate(CHANNELS):
            self.add_module(f"lin{k}", _Head(c))

    def heads_state_dict(self) -> Dict[str, torch.Tensor]:
        """The five head weights under their lpips names (``lin0.model.1.weight`` ...)."""
        return {f"lin{k}.model.1.weight": getattr(self, f"lin{k}").model[1].weight.detach().clone()
                for k in range(len(CHANNELS))}

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        n = x0.shape[0]
        both = torch.cat([x0, x1], dim=0)
        both = (both - self.shift) / self.scale
        total = torch.zeros(n, dtype=both.dtype, device=both.device)
        for k, f in enumerate(self.net(both)):
            f = f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + _EPS)
            d = (f[:n] - f[n:]) ** 2
            total = total + getattr(self, f"lin{k}")(d).mean(dim=(1, 2, 3))
        return total


def default_alexnet_path() -> Path:
    """``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` (``torch.hub.get_dir()`` rules)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILENAME


def _lpips_package_weights() -> Optional[Path]:
    """``lpips/weights/v0.1/alex.pth`` of an installed ``lpips`` package, without importing it."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "weights" / "v0.1" / "alex.pth"
        if p.is_file():
            return p
    return None


def _random_net() -> LPIPSNet:
    net = LPIPSNet()
    for k in range(len(CHANNELS)):
        w = getattr(net, f"lin{k}").model[1].weight
        with torch.no_grad():
            w.copy_(torch.rand(w.shape) / w.shape[1])  # non-negative, as trained heads are
    return net


def load_lpips(backbone_weights: Optional[PathLike] = None, linear_weights: Optional[PathLike] = None, *,
               random_init: bool = False, seed: int = 0) -> Tuple[LPIPSNet, str]:
    """The :class:`LPIPSNet` on the CPU, in eval mode without gradients, and a tag naming its weights.

    ``backbone_weights``: torchvision's ImageNet AlexNet state dict (``features.*`` used,
    ``classifier.*`` ignored); default :func:`default_alexnet_path`. ``linear_weights``: the lpips
    heads (``lin0.model.1.weight`` ...); default ``weights/v0.1/alex.pth`` of an installed ``lpips``
    package. Both are read with ``torch.load(weights_only=True)`` and loaded strictly.
    ``random_init=True`` (tests only): seeded random weights, no file read.

    Returns:
        ``(net, tag)``: ``tag`` is ``"backbone=<path> sha256:<12 hex>; linear=..."`` or the
        random-init note.

    Raises:
        InputError: ``random_init`` combined with a path.
        ModelLoadError: a missing file (the message names it and how to get it) or one that does not
            match the network.
    """
    if random_init:
        if backbone_weights is not None or linear_weights is not None:
            raise InputError("random_init=True cannot be combined with backbone_weights/linear_weights")
        tag = f"backbone=random-init(seed={seed}); linear=random-init(seed={seed}); NOT comparable with published LPIPS"
        return seeded(seed, _random_net).eval().requires_grad_(False), tag
    bpath = Path(backbone_weights) if backbone_weights is not None else default_alexnet_path()
    if not bpath.is_file():
        raise ModelLoadError(
            f"LPIPS: AlexNet weights not found at {bpath}. Download torchvision's {ALEXNET_FILENAME} "
            f"({ALEXNET_URL}) to {default_alexnet_path()} (set TORCH_HOME to move that folder) or pass "
            f"backbone_weights=PATH; random_init=True is for tests only"
        )
    if linear_weights is not None:
        lpath = Path(linear_weights)
    else:
        lpath = _lpips_package_weights() or Path("<lpips package>/weights/v0.1/alex.pth")
    if not lpath.is_file():
        raise ModelLoadError(
            f"LPIPS: linear-head weights not found at {lpath}. `pip install lpips` (its weights/v0.1/alex.pth "
            f"is found automatically) or download {LPIPS_LINEAR_URL} and pass linear_weights=PATH"
        )
    net = LPIPSNet()
    feats = {k: v for k, v in load_state_dict(bpath, "LPIPS AlexNet backbone").items() if k.startswith("features.")}
    if not feats:
        raise ModelLoadError(f"LPIPS AlexNet backbone: {bpath} has no 'features.*' entries; expected "
                             f"torchvision's AlexNet state dict ({ALEXNET_FILENAME})")
    strict_load(net.net, feats, bpath, "LPIPS AlexNet backbone")
    full = {f"net.{k}": v for k, v in net.net.state_dict().items()}
    full.update(load_state_dict(lpath, "LPIPS linear heads"))
    strict_load(net, full, lpath, "LPIPS linear heads")
    return net.eval().requires_grad_(False), f"backbone={file_tag(bpath)}; linear={file_tag(lpath)}"
