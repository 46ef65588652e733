"""Per-clip score rows (:class:`ClipScores`) and their dataset means (:func:`summarize_clips`)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional

import numpy as np

from m3ddm_ray.errors import InputError
from m3ddm_ray.quality import check_mask

from ._common import check_pair
from .blur import bmse
from .perceptual import LPIPS
from .pixel import mse, psnr
from .structural import ssim

__all__ = ["ClipScores", "summarize_clips"]


_IMPL_PSNR = "psnr: 10*log10(255^2/MSE) per frame on uint8 RGB (= skimage peak_signal_noise_ratio), frame mean"
_IMPL_SSIM = {
    "gaussian": ("ssim: skimage.metrics.structural_similarity(channel_axis=-1, data_range=255, "
                 "gaussian_weights=True, sigma=1.5, use_sample_covariance=False), frame mean"),
    "uniform": ("ssim: skimage.metrics.structural_similarity(channel_axis=-1, data_range=255) "
                "(7x7 uniform window, as in M3DDM+ evaluate.py), frame mean"),
}
_IMPL_BMSE = ("bmse: M3DDM+ (tamaki-lab/M3DDM-Plus src/evaluate.py) mean((f - gaussian_filter(f, 5))^2), "
              "f = frame/255, frame mean; bmse_generated: same over mask==1 pixels (m3ddm_ray variant)")


class ClipScores:
    """Per-clip numbers of one outpainted clip against its ground truth.

    ``ClipScores(lpips=None)(pred, gt, mask)`` returns a dict:

    * ``psnr``, ``ssim``, ``lpips``, ``mse``: whole-frame full-reference scores, mean over frames
      (the common protocol; ``psnr`` is ``inf`` if every frame is identical, and a single identical
      frame makes the mean ``inf`` too -- as in the M3DDM+ script);
    * ``psnr_generated``, ``mse_generated``: the same restricted to the generated pixels
      (``mask == 1``; NaN if there are none) -- the part outpainting actually changed;
    * ``bmse``: the published M3DDM+ blur proxy of ``pred`` (whole frame, :func:`bmse`);
      ``bmse_generated``: its generated-region variant; ``bmse_gt``: BMSE of ``gt``, a sharpness
      baseline (``bmse / bmse_gt < 1`` = output blurrier than the truth);
    * ``num_frames``: ``T``;
    * ``metric_impl``: ``{metric name: description}``, including the LPIPS weights (path + sha256
      prefix, or ``random-init``).

    ``lpips`` is ``NaN`` (and ``metric_impl['lpips'] = 'not computed'``) when no :class:`LPIPS`
    instance is given.

    Args:
        lpips: an :class:`LPIPS` instance or ``None``.
        ssim_window: ``"gaussian"`` (default protocol) or ``"uniform"`` (see :func:`ssim`).
    """

    def __init__(self, lpips: Optional[LPIPS] = None, *, ssim_window: str = "gaussian"):
        if ssim_window not in _IMPL_SSIM:
            raise InputError(f"ssim_window={ssim_window!r}; expected 'gaussian' or 'uniform'")
        self.lpips = lpips
        self.ssim_window = ssim_window

    def __call__(self, pred, gt, mask) -> Dict[str, Any]:
        p, g = check_pair(pred, gt)
        m = check_mask(mask, p.shape[1:3])
        out: Dict[str, Any] = {
            "psnr": float(np.mean(psnr(p, g))),
            "psnr_generated": float(np.mean(psnr(p, g, mask=m))),
            "ssim": float(np.mean(ssim(p, g, window=self.ssim_window))),
            "lpips": float(np.mean(self.lpips(p, g))) if self.lpips is not None else float("nan"),
            "mse": float(np.mean(mse(p, g))),
            "mse_generated": float(np.mean(mse(p, g, mask=m))),
            "bmse": float(np.mean(bmse(p))),
            "bmse_generated": float(np.mean(bmse(p, mask=m))),
            "bmse_gt": float(np.mean(bmse(g))),
            "num_frames": int(p.shape[0]),
        }
        out["metric_impl"] = {
            "psnr": _IMPL_PSNR,
            "ssim": _IMPL_SSIM[self.ssim_window],
            "lpips": self.lpips.metric_impl if self.lpips is not None else "not computed",
            "bmse": _IMPL_BMSE,
        }
        return out


def summarize_clips(rows: Iterable[Mapping[str, Any]]) -> Dict[str, Any]:
    """Dataset-level means of :class:`ClipScores` rows (every clip weighs the same).

    Numeric keys are averaged over the clips where they are finite (``inf`` PSNRs of perfect clips
    and NaNs are left out and counted in ``<key>_nonfinite``); ``num_clips`` and ``num_frames`` (sum)
    are added; ``metric_impl`` is taken from the first row and must be the same in all rows
    (otherwise :class:`InputError`: numbers from different implementations/weights do not average).
    FVD is not a mean of clip values: compute it with :func:`frechet_distance` on the
    :class:`FVDFeatureExtractor` features of all clips.
    """
    rows = list(rows)
    if not rows:
        raise InputError("rows is empty; nothing to summarize")
    impl = rows[0].get("metric_impl")
    for i, r in enumerate(rows):
        if r.get("metric_impl") != impl:
            raise InputError(f"rows[{i}] has a different metric_impl than rows[0]; they do not average")
    keys = [k for k, v in rows[0].items()
            if k not in ("metric_impl", "num_frames") and isinstance(v, (int, float)) and not isinstance(v, bool)]
    out: Dict[str, Any] = {"num_clips": len(rows), "num_frames": int(sum(int(r.get("num_frames", 0)) for r in rows))}
    for k in keys:
        vals = np.array([float(r[k]) for r in rows], dtype=np.float64)
        ok = np.isfinite(vals)
        out[k] = float(vals[ok].mean()) if ok.any() else float("nan")
        out[f"{k}_nonfinite"] = int((~ok).sum())
    out["metric_impl"] = impl
    return out
