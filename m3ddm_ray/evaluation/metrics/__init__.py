"""Full-reference and distribution metrics of outpainted videos: PSNR, SSIM, LPIPS, FVD, BMSE.

Levels:

* **per frame**: :func:`psnr`, :func:`ssim`, :class:`LPIPS`, :func:`bmse` return one ``float64``
  value per frame, shape ``(T,)``;
* **per clip**: :class:`ClipScores` turns a ``(pred, gt, mask)`` triple into a dict of clip numbers
  (the mean over frames, as the M3DDM / M3DDM+ evaluation scripts do) plus ``metric_impl`` strings
  naming the implementation and the weights behind every number;
* **per dataset**: :func:`summarize_clips` averages clip rows, and :func:`frechet_distance` of the
  :class:`FVDFeatureExtractor` features of all generated vs all real clips gives FVD.

Conventions (as in :mod:`m3ddm_ray.quality`): a clip is an RGB ``uint8`` array ``(T, H, W, 3)``;
``pred`` is the outpainted output, ``gt`` the ground truth of the same shape; ``mask`` is ``(H, W)``
``uint8``/``bool`` with **1 = generated**, 0 = known (:func:`m3ddm_ray.geometry.pixel_mask`).

Which metric is better when:

=========  ==================  ==================================================================
metric     range               better
=========  ==================  ==================================================================
PSNR       ``[0, inf]`` dB     higher (``inf`` = identical frame)
SSIM       ``[-1, 1]``         higher (1 = identical frame)
LPIPS      ``[0, ~1]``         lower (0 = identical frame)
FVD        ``[0, inf)``        lower (0 = same feature statistics)
BMSE       ``[0, 1]``          higher = sharper, lower = blurrier (a no-reference blur proxy)
=========  ==================  ==================================================================

PSNR / SSIM / BMSE need numpy, scipy and scikit-image only; LPIPS and FVD import torch when they are
constructed.

One module per metric (import everything from ``m3ddm_ray.evaluation.metrics``): :mod:`.pixel`
(MSE, PSNR), :mod:`.structural` (SSIM, scikit-image), :mod:`.blur` (BMSE), :mod:`.perceptual`
(LPIPS), :mod:`.video_distance` (I3D features, Fréchet distance with scipy), :mod:`.scores`
(per-clip rows and dataset means); :mod:`._common` holds the shared checks. The LPIPS and I3D
networks and their weight files are :mod:`m3ddm_ray.models.metric_nets`.
"""

from .blur import bmse
from .perceptual import LPIPS
from .pixel import mse, psnr
from .scores import ClipScores, summarize_clips
from .structural import ssim
from .video_distance import FVDFeatureExtractor, frechet_distance

__all__ = ["psnr", "ssim", "bmse", "mse", "LPIPS", "FVDFeatureExtractor", "frechet_distance", "ClipScores",
           "summarize_clips"]
