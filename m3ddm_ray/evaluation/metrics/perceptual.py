"""LPIPS v0.1 (AlexNet) per frame. The network and its weight files are
:mod:`m3ddm_ray.models.metric_nets.lpips` (own implementation: why, see its top)."""

from __future__ import annotations

import numpy as np
from einops import rearrange

from m3ddm_ray.errors import InputError

from ._common import check_min_side, check_pair, frame_chunks

__all__ = ["LPIPS"]


class LPIPS:
    """LPIPS v0.1 distance with the AlexNet trunk, per frame.

    Matches ``lpips.LPIPS(net='alex', version='0.1')(x0, x1)`` of richzhang/PerceptualSimilarity
    (the M3DDM+ evaluation uses exactly that): inputs RGB in ``[-1, 1]``; scaling layer
    ``(x - shift) / scale``; AlexNet ReLU 1..5 activations unit-normalised over channels; squared
    differences weighted by the five linear heads; spatial mean per layer; sum over layers.

    Args:
        backbone_weights, linear_weights: torchvision's AlexNet and the lpips heads, or ``None`` for
            the defaults (:func:`m3ddm_ray.models.metric_nets.lpips.load_lpips`, which reads them
            strictly with ``torch.load(weights_only=True)``).
        device: torch device for the network (``"cpu"``, ``"cuda:0"``, ...).
        random_init: seeded random weights, no file read (tests only): :attr:`metric_impl` then says
            ``random-init`` -- such numbers are NOT comparable with published LPIPS.
        seed: seed of the random init.
        batch_size: frame pairs per forward pass.

    Raises:
        ModelLoadError: a weights file is missing (the message names it and how to get it) or does
            not match the network.
        InputError: ``random_init`` combined with a path, or a bad ``batch_size``.
    """

    def __init__(self, backbone_weights=None, linear_weights=None, device: str = "cpu", *,
                 random_init: bool = False, seed: int = 0, batch_size: int = 16):
        import torch
        from m3ddm_ray.models.metric_nets.lpips import load_lpips

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r} must be a positive integer")
        self.batch_size = batch_size
        self.device = torch.device(device)
        net, weights_tag = load_lpips(backbone_weights, linear_weights, random_init=random_init, seed=seed)
        self.metric_impl = ("LPIPS v0.1 AlexNet (m3ddm_ray own implementation of richzhang/PerceptualSimilarity "
                            f"lpips.LPIPS(net='alex'), spatial mean, inputs [-1,1]); {weights_tag}")
        self.net = net.to(self.device)

    def __call__(self, pred, gt) -> np.ndarray:
        """Per-frame LPIPS of two clips.

        Args:
            pred, gt: ``uint8 (T, H, W, 3)`` RGB, same shape, ``H, W >= 31``; mapped to ``[-1, 1]``
                as ``x / 127.5 - 1``.

        Returns:
            ``float64 (T,)``, ``>= 0``; lower is better; 0 for identical frames.
        """
        import torch
        from m3ddm_ray.models.metric_nets.lpips import min_side

        p, g = check_pair(pred, gt)
        check_min_side(p, min_side(), "LPIPS (AlexNet)")
        out = np.empty(p.shape[0], dtype=np.float64)
        with torch.no_grad():
            for sl in frame_chunks(p.shape[0], self.batch_size):
                out[sl] = self.net(self._to_tensor(p[sl]), self._to_tensor(g[sl])).double().cpu().numpy()
        return out

    def _to_tensor(self, frames: np.ndarray):
        import torch
        t = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return rearrange(t, "n h w c -> n c h w").float() / 127.5 - 1.0
