"""BMSE, the no-reference blur proxy of M3DDM+ (``scipy.ndimage.gaussian_filter``), per frame."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from m3ddm_ray.errors import InputError
from m3ddm_ray.quality import check_frames, check_mask

from ._common import frame_chunks

__all__ = ["bmse", "BMSE_SIGMA"]


#: Gaussian sigma of the M3DDM+ BMSE (``scipy.ndimage.gaussian_filter(frame, 5)``).
BMSE_SIGMA = 5.0


def bmse(frames, mask=None, *, sigma: float = BMSE_SIGMA) -> np.ndarray:
    """Per-frame "blur MSE": how much a frame changes when it is blurred (no reference needed).

    Definition followed -- M3DDM+ (Murakawa et al., IWAIT 2026), ``compute_video_metrics`` in
    ``src/evaluate.py`` of github.com/tamaki-lab/M3DDM-Plus (commit ``fd34df0e``)::

        f  = frame.astype(float32) / 255            # H x W x 3, values in [0, 1]
        fb = scipy.ndimage.gaussian_filter(f, 5)    # sigma 5 on EVERY axis, mode 'reflect'
        BMSE = mean((f - fb) ** 2)                  # over all pixels and channels

    and the clip value is the mean over frames. A scalar sigma makes scipy blur the channel axis as
    well (a quirk of the reference, kept for parity); with ``reflect`` borders that channel blur is
    symmetric, so RGB (here) and BGR (the reference reads frames with OpenCV) give the same value.
    The reference applies it to the generated (outpainted) video only and says: "If generated result
    is blurry, applying blur causes small change".

    Args:
        frames: ``uint8 (T, H, W, 3)``, the outpainted clip.
        mask: optional ``(H, W)`` 0/1 mask. ``None`` (default) is the published whole-frame BMSE.
            With a mask, the squared differences are averaged over the generated pixels only
            (``mask == 1``), the blur itself still running on the whole frame -- an m3ddm-ray
            variant, **not** the published number. An all-zero mask gives NaN.
        sigma: Gaussian sigma in pixels (and channels); 5 in the reference.

    Returns:
        ``float64 (T,)`` in ``[0, 1]``. Higher = more high-frequency detail (sharper); lower =
        blurrier; 0 for a constant frame. Not a fidelity measure: noise also raises it.
    """
    x_all = check_frames(frames, "frames")
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise InputError(f"sigma={sigma!r} must be a positive number")
    region = None if mask is None else check_mask(mask, x_all.shape[1:3])
    if region is not None and not region.any():
        return np.full(x_all.shape[0], np.nan)
    out = np.empty(x_all.shape[0], dtype=np.float64)
    s = float(sigma)
    for sl in frame_chunks(x_all.shape[0]):
        x = x_all[sl].astype(np.float32) / 255.0
        d = x - gaussian_filter(x, sigma=(0.0, s, s, s), mode="reflect")
        d *= d
        if region is not None:
            d = d[:, region, :]
        out[sl] = d.reshape(d.shape[0], -1).mean(axis=1, dtype=np.float64)
    return out
