"""LPIPS v0.1 (AlexNet) per frame: weight discovery, strict loading, the metric object.

The network itself is :mod:`m3ddm_ray.evaluation._lpips` (own module: why, see its top).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np
from einops import rearrange

from m3ddm_ray.errors import InputError, ModelLoadError

from ._common import (PathLike, check_min_side, check_pair, file_tag, frame_chunks, import_torch, load_state_dict,
                      seeded, strict_load)

__all__ = ["LPIPS", "ALEXNET_FILENAME", "ALEXNET_URL", "LPIPS_LINEAR_URL", "default_alexnet_path"]

#: File name of torchvision's ImageNet AlexNet in the torch hub cache.
ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"
#: Where torchvision downloads it from.
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
#: The LPIPS v0.1 AlexNet linear heads as shipped in the ``lpips`` package.
LPIPS_LINEAR_URL = (
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"
)


def default_alexnet_path() -> Path:
    """``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` (``torch.hub.get_dir()`` rules)."""
    return Path(import_torch().hub.get_dir()) / "checkpoints" / ALEXNET_FILENAME


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


class LPIPS:
    """LPIPS v0.1 distance with the AlexNet trunk, per frame (own implementation, see ``_lpips``).

    Matches ``lpips.LPIPS(net='alex', version='0.1')(x0, x1)`` of richzhang/PerceptualSimilarity
    (the M3DDM+ evaluation uses exactly that): inputs RGB in ``[-1, 1]``; scaling layer
    ``(x - shift) / scale``; AlexNet ReLU 1..5 activations unit-normalised over channels; squared
    differences weighted by the five linear heads; spatial mean per layer; sum over layers.

    Weights:

    * ``backbone_weights``: torchvision's ImageNet AlexNet state dict (``features.N.weight``, ...;
      ``classifier.*`` ignored). Default: ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``
      (:func:`default_alexnet_path`), where ``torchvision.models.alexnet(weights=...)`` caches it.
    * ``linear_weights``: the lpips heads (``lin0.model.1.weight`` ... ``lin4.model.1.weight``).
      Default: ``weights/v0.1/alex.pth`` inside an installed ``lpips`` package.
    * ``random_init=True`` (tests only): both seeded-random (heads non-negative, as trained heads
      are), no file read; :attr:`metric_impl` then says ``random-init`` -- such numbers are NOT
      comparable with published LPIPS.

    Files are read with ``torch.load(weights_only=True)`` and loaded strictly.

    Args:
        backbone_weights, linear_weights: paths or ``None`` for the defaults above.
        device: torch device for the network (``"cpu"``, ``"cuda:0"``, ...).
        random_init: see above; requires both paths to be ``None``.
        seed: seed of the random init.
        batch_size: frame pairs per forward pass.

    Raises:
        ModelLoadError: a weights file is missing (the message names it and how to get it) or does
            not match the network.
        InputError: ``random_init`` combined with a path, or a bad ``batch_size``.
    """

    def __init__(self, backbone_weights: Optional[PathLike] = None,
                 linear_weights: Optional[PathLike] = None, device: str = "cpu", *,
                 random_init: bool = False, seed: int = 0, batch_size: int = 16):
        torch = import_torch()
        from m3ddm_ray.evaluation._lpips import CHANNELS, LPIPSNet

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r} must be a positive integer")
        self.batch_size = batch_size
        self.device = torch.device(device)
        impl = ("LPIPS v0.1 AlexNet (m3ddm_ray own implementation of richzhang/PerceptualSimilarity "
                "lpips.LPIPS(net='alex'), spatial mean, inputs [-1,1])")
        if random_init:
            if backbone_weights is not None or linear_weights is not None:
                raise InputError("random_init=True cannot be combined with backbone_weights/linear_weights")

            def build():
                net = LPIPSNet()
                for k in range(len(CHANNELS)):
                    w = getattr(net, f"lin{k}").model[1].weight
                    with torch.no_grad():
                        w.copy_(torch.rand(w.shape) / w.shape[1])
                return net

            net = seeded(seed, build)
            self.metric_impl = (f"{impl}; backbone=random-init(seed={seed}); "
                                f"linear=random-init(seed={seed}); NOT comparable with published LPIPS")
        else:
            bpath = Path(backbone_weights) if backbone_weights is not None else default_alexnet_path()
            if not bpath.is_file():
                raise ModelLoadError(
                    f"LPIPS: AlexNet weights not found at {bpath}. Download torchvision's "
                    f"{ALEXNET_FILENAME} ({ALEXNET_URL}) to {default_alexnet_path()} (set TORCH_HOME to "
                    f"move that folder) or pass backbone_weights=PATH; random_init=True is for tests only"
                )
            if linear_weights is not None:
                lpath = Path(linear_weights)
            else:
                lpath = _lpips_package_weights() or Path("<lpips package>/weights/v0.1/alex.pth")
            if not lpath.is_file():
                raise ModelLoadError(
                    f"LPIPS: linear-head weights not found at {lpath}. `pip install lpips` (its "
                    f"weights/v0.1/alex.pth is found automatically) or download {LPIPS_LINEAR_URL} "
                    f"and pass linear_weights=PATH"
                )
            net = LPIPSNet()
            sd = load_state_dict(bpath, "LPIPS AlexNet backbone")
            feats = {k: v for k, v in sd.items() if k.startswith("features.")}
            if not feats:
                raise ModelLoadError(
                    f"LPIPS AlexNet backbone: {bpath} has no 'features.*' entries; expected torchvision's "
                    f"AlexNet state dict ({ALEXNET_FILENAME})"
                )
            strict_load(net.net, feats, bpath, "LPIPS AlexNet backbone")
            heads = load_state_dict(lpath, "LPIPS linear heads")
            full = {f"net.{k}": v for k, v in net.net.state_dict().items()}
            full.update(heads)
            strict_load(net, full, lpath, "LPIPS linear heads")
            self.metric_impl = f"{impl}; backbone={file_tag(bpath)}; linear={file_tag(lpath)}"
        self.net = net.eval().requires_grad_(False).to(self.device)

    def __call__(self, pred, gt) -> np.ndarray:
        """Per-frame LPIPS of two clips.

        Args:
            pred, gt: ``uint8 (T, H, W, 3)`` RGB, same shape, ``H, W >= 31``; mapped to ``[-1, 1]``
                as ``x / 127.5 - 1``.

        Returns:
            ``float64 (T,)``, ``>= 0``; lower is better; 0 for identical frames.
        """
        torch = import_torch()
        from m3ddm_ray.evaluation._lpips import min_side

        p, g = check_pair(pred, gt)
        check_min_side(p, min_side(), "LPIPS (AlexNet)")
        out = np.empty(p.shape[0], dtype=np.float64)
        with torch.no_grad():
            for sl in frame_chunks(p.shape[0], self.batch_size):
                x0 = self._to_tensor(p[sl])
                x1 = self._to_tensor(g[sl])
                out[sl] = self.net(x0, x1).double().cpu().numpy()
        return out

    def _to_tensor(self, frames: np.ndarray):
        torch = import_torch()
        t = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return rearrange(t, "n h w c -> n c h w").float() / 127.5 - 1.0
