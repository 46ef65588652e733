"""Pixel-error metrics per frame: MSE (on the [0, 1] scale, as M3DDM+ reports it) and PSNR (dB)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from m3ddm_ray.errors import InputError
from m3ddm_ray.quality import check_mask

from ._common import check_pair, frame_chunks

__all__ = ["mse", "psnr"]


def _sq_err_sums(p: np.ndarray, g: np.ndarray, region: Optional[np.ndarray] = None) -> np.ndarray:
    """Exact per-frame sums of squared uint8 differences (``int64``), optionally over ``region``."""
    out = np.empty(p.shape[0], dtype=np.int64)
    for sl in frame_chunks(p.shape[0], 32):
        d = p[sl].astype(np.int32) - g[sl].astype(np.int32)
        d *= d
        if region is not None:
            d = d[:, region, :]
        out[sl] = d.reshape(d.shape[0], -1).sum(axis=1, dtype=np.int64)
    return out


def mse(pred, gt, mask=None) -> np.ndarray:
    """Per-frame mean squared error on the ``[0, 1]`` scale (values / 255), as M3DDM+ reports MSE.

    Args:
        pred, gt: ``uint8 (T, H, W, 3)``, same shape.
        mask: optional ``(H, W)`` 0/1 mask; when given, only pixels with ``mask == 1`` (generated)
            count. An all-zero mask gives NaN.

    Returns:
        ``float64 (T,)`` in ``[0, 1]``; lower is better.
    """
    p, g = check_pair(pred, gt)
    region = None if mask is None else check_mask(mask, p.shape[1:3])
    n = p.shape[1] * p.shape[2] if region is None else int(region.sum())
    if n == 0:
        return np.full(p.shape[0], np.nan)
    return _sq_err_sums(p, g, region) / (n * 3 * 255.0 * 255.0)


def psnr(pred, gt, data_range: float = 255.0, mask=None) -> np.ndarray:
    """Per-frame peak signal-to-noise ratio in dB.

    ``PSNR_t = 10 * log10(data_range**2 / MSE_t)`` with ``MSE_t`` the mean of the squared differences
    over all pixels and the three channels of frame ``t`` (in uint8 levels), the definition of
    ``skimage.metrics.peak_signal_noise_ratio(gt[t], pred[t], data_range=255)``; identical to the
    M3DDM+ evaluation's ``20 log10(1 / sqrt(MSE))`` on frames scaled to ``[0, 1]``.

    Args:
        pred, gt: ``uint8 (T, H, W, 3)``, same shape.
        data_range: peak value (255 for uint8 frames).
        mask: optional ``(H, W)`` 0/1 mask; when given the MSE is taken over the generated pixels
            only (``mask == 1``; NaN if there are none). Not part of the common protocol, which
            scores whole frames.

    Returns:
        ``float64 (T,)``; higher is better; ``inf`` for a frame identical to its ground truth.
    """
    p, g = check_pair(pred, gt)
    if not (isinstance(data_range, (int, float)) and data_range > 0):
        raise InputError(f"data_range={data_range!r} must be a positive number")
    region = None if mask is None else check_mask(mask, p.shape[1:3])
    n = p.shape[1] * p.shape[2] if region is None else int(region.sum())
    if n == 0:
        return np.full(p.shape[0], np.nan)
    err = _sq_err_sums(p, g, region) / (n * 3.0)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(data_range) ** 2 / err)
