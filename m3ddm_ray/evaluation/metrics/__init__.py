"""Full-reference and distribution metrics of outpainted videos: PSNR, SSIM, LPIPS, FVD, BMSE.

Per frame, :func:`psnr`, :func:`ssim`, :class:`LPIPS`, :func:`bmse` return ``float64 (T,)``; per
clip, :class:`ClipScores` gives the means over frames with ``metric_impl`` strings naming the
implementation and weights; per dataset, :func:`summarize_clips` averages clip rows and
:func:`frechet_distance` of :class:`FVDFeatureExtractor` features gives FVD. A clip is RGB ``uint8
(T, H, W, 3)``, a mask ``(H, W)`` with 1 = generated (:func:`m3ddm_ray.geometry.pixel_mask`). Ranges
and which direction is better: docs/evaluation.md, "Metrics". PSNR / SSIM / BMSE need no torch; LPIPS
and FVD load their networks (:mod:`m3ddm_ray.models.metric_nets`) when they are constructed.

One module per metric: :mod:`.pixel` (MSE, PSNR), :mod:`.structural` (SSIM, scikit-image),
:mod:`.blur` (BMSE), :mod:`.perceptual` (LPIPS), :mod:`.video_distance` (I3D features, Fréchet
distance), :mod:`.scores` (per-clip rows and dataset means); :mod:`._common` holds the shared checks.
"""

from .blur import bmse
from .perceptual import LPIPS
from .pixel import mse, psnr
from .scores import ClipScores, summarize_clips
from .structural import ssim
from .video_distance import FVDFeatureExtractor, frechet_distance

__all__ = ["psnr", "ssim", "bmse", "mse", "LPIPS", "FVDFeatureExtractor", "frechet_distance", "ClipScores",
           "summarize_clips"]
