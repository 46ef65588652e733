"""SSIM per frame (Wang et al., 2004) through scikit-image, with the protocols' fixed parameters."""

from __future__ import annotations

import numpy as np

from m3ddm_ray.errors import InputError

from ._common import check_pair, check_min_side

__all__ = ["ssim", "SSIM_WINDOWS"]

#: ``window`` -> ``skimage.metrics.structural_similarity`` keyword arguments (besides
#: ``channel_axis=-1, data_range=255``) and the window side they imply.
SSIM_WINDOWS = {
    "gaussian": ({"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}, 11),
    "uniform": ({}, 7),
}


def ssim(pred, gt, *, window: str = "gaussian") -> np.ndarray:
    """Per-frame structural similarity (Wang et al., 2004), averaged over the three RGB channels.

    Computed by ``skimage.metrics.structural_similarity`` (the library is the implementation; this
    wrapper validates the clip, fixes the protocol parameters and loops over frames):

    * ``window="gaussian"`` (default, the common video-outpainting protocol):
      ``structural_similarity(p, g, channel_axis=-1, data_range=255, gaussian_weights=True,
      sigma=1.5, use_sample_covariance=False)`` -- Gaussian window sigma 1.5 truncated at 3.5 sigma
      (11 x 11), population covariance, ``C1 = (0.01 * 255)**2``, ``C2 = (0.03 * 255)**2``, the SSIM
      map averaged after cropping 5 pixels on each side, then the mean over channels;
    * ``window="uniform"``: scikit-image's default window (7 x 7 box, sample covariance, 3-pixel
      crop), ``structural_similarity(p, g, channel_axis=-1, data_range=255)`` -- what the M3DDM+
      evaluation script calls (there on float32 frames / 255, which agrees to ~1e-6).

    Args:
        pred, gt: ``uint8 (T, H, W, 3)``, same shape, ``H, W >= 11`` (``>= 7`` for ``uniform``).
        window: ``"gaussian"`` or ``"uniform"``.

    Returns:
        ``float64 (T,)`` in ``[-1, 1]``; higher is better; exactly 1.0 for identical frames.
    """
    from skimage.metrics import structural_similarity

    p, g = check_pair(pred, gt)
    if window not in SSIM_WINDOWS:
        raise InputError(f"window={window!r}; expected 'gaussian' or 'uniform'")
    kwargs, win = SSIM_WINDOWS[window]
    check_min_side(p, win, f"SSIM with the {window} window ({win} x {win})")
    return np.array([structural_similarity(p[t], g[t], channel_axis=-1, data_range=255, **kwargs)
                     for t in range(p.shape[0])], dtype=np.float64)
