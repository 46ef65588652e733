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

PSNR / SSIM / BMSE need numpy + scipy only; LPIPS and FVD import torch when they are constructed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import linalg
from scipy.ndimage import gaussian_filter, uniform_filter

from m3ddm_ray.errors import InputError, ModelLoadError

__all__ = [
    "psnr",
    "ssim",
    "bmse",
    "mse",
    "LPIPS",
    "FVDFeatureExtractor",
    "frechet_distance",
    "ClipScores",
    "summarize_clips",
    "ALEXNET_FILENAME",
    "ALEXNET_URL",
    "LPIPS_LINEAR_URL",
    "I3D_VIDEOGPT_FILENAME",
    "I3D_STYLEGANV_FILENAME",
    "I3D_STYLEGANV_URL",
    "default_alexnet_path",
    "BMSE_SIGMA",
]

PathLike = Union[str, os.PathLike]

#: File name of torchvision's ImageNet AlexNet in the torch hub cache.
ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"
#: Where torchvision downloads it from.
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
#: The LPIPS v0.1 AlexNet linear heads as shipped in the ``lpips`` package.
LPIPS_LINEAR_URL = (
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"
)
#: The VideoGPT / TATS I3D checkpoint (state dict of pytorch-i3d's ``InceptionI3d(400)``).
I3D_VIDEOGPT_FILENAME = "i3d_pretrained_400.pt"
_I3D_VIDEOGPT_SOURCE = (
    "VideoGPT's videogpt/download.py (gdown id 1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT), the same file "
    "TATS and common_metrics_on_video_quality use"
)
#: StyleGAN-V's TorchScript I3D (the TF-hub FVD network, converted).
I3D_STYLEGANV_FILENAME = "i3d_torchscript.pt"
I3D_STYLEGANV_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"

_FRAME_CHUNK = 8  # frames per vectorised SSIM / BMSE / PSNR step (bounds float64 temporaries)


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------


def _check_clip(x, name: str) -> np.ndarray:
    from ..quality import check_frames

    return check_frames(x, name)


def _check_pair(pred, gt) -> Tuple[np.ndarray, np.ndarray]:
    p = _check_clip(pred, "pred")
    g = _check_clip(gt, "gt")
    if p.shape != g.shape:
        raise InputError(f"pred has shape {p.shape} but gt has shape {g.shape}; they must match")
    return p, g


def _check_mask(mask, hw: Tuple[int, int]) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype != np.bool_ and arr.dtype != np.uint8:
        raise InputError(f"mask has dtype {arr.dtype}; expected uint8 (values 0/1) or bool")
    if arr.shape != tuple(hw):
        raise InputError(f"mask has shape {arr.shape}; expected (H, W) = {tuple(hw)}")
    if arr.dtype == np.uint8 and arr.size and int(arr.max()) > 1:
        raise InputError(f"mask has values up to {int(arr.max())}; expected only 0 and 1")
    return arr.astype(bool)


def _min_side(arr: np.ndarray, need: int, what: str) -> None:
    h, w = arr.shape[1:3]
    if min(h, w) < need:
        raise InputError(f"frames are {h} x {w}; {what} needs H and W >= {need}")


def _chunks(t: int, size: int = _FRAME_CHUNK) -> Iterable[slice]:
    for t0 in range(0, t, size):
        yield slice(t0, min(t0 + size, t))


def _file_tag(path: Path) -> str:
    """``"<path> sha256:<first 12 hex digits>"`` of a weights file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{path} sha256:{h.hexdigest()[:12]}"


# --------------------------------------------------------------------------------------------------
# PSNR / MSE
# --------------------------------------------------------------------------------------------------


def _sq_err_sums(p: np.ndarray, g: np.ndarray, region: Optional[np.ndarray] = None) -> np.ndarray:
    """Exact per-frame sums of squared uint8 differences (``int64``), optionally over ``region``."""
    out = np.empty(p.shape[0], dtype=np.int64)
    for sl in _chunks(p.shape[0], 32):
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
    p, g = _check_pair(pred, gt)
    region = None if mask is None else _check_mask(mask, p.shape[1:3])
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
    p, g = _check_pair(pred, gt)
    if not (isinstance(data_range, (int, float)) and data_range > 0):
        raise InputError(f"data_range={data_range!r} must be a positive number")
    region = None if mask is None else _check_mask(mask, p.shape[1:3])
    n = p.shape[1] * p.shape[2] if region is None else int(region.sum())
    if n == 0:
        return np.full(p.shape[0], np.nan)
    err = _sq_err_sums(p, g, region) / (n * 3.0)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(data_range) ** 2 / err)


# --------------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------------

_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_SSIM_SIGMA, _SSIM_TRUNCATE = 1.5, 3.5
_SSIM_UNIFORM_WIN = 7


def ssim(pred, gt, *, window: str = "gaussian") -> np.ndarray:
    """Per-frame structural similarity (Wang et al., 2004), averaged over the three RGB channels.

    ``window="gaussian"`` (default, the common video-outpainting protocol) equals, frame by frame,
    ``skimage.metrics.structural_similarity(p, g, channel_axis=-1, data_range=255,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``: local means, variances and
    covariance from a Gaussian window (sigma 1.5, truncated at 3.5 sigma -> 11 x 11, ``reflect``
    borders), population (not sample) covariance, ``C1 = (0.01 * 255)**2``, ``C2 = (0.03 * 255)**2``,
    the SSIM map averaged after cropping 5 pixels on each side, then the mean over channels.

    ``window="uniform"``: scikit-image's default window instead (7 x 7 box, sample covariance with
    factor 49/48, 3-pixel crop) -- what ``skimage.metrics.structural_similarity(p, g,
    channel_axis=-1, data_range=255)`` computes and what the M3DDM+ evaluation script calls (there
    on float32 frames / 255, which agrees to ~1e-6).

    Everything runs in float64, vectorised over chunks of frames with ``scipy.ndimage`` filters.

    Args:
        pred, gt: ``uint8 (T, H, W, 3)``, same shape, ``H, W >= 11`` (``>= 7`` for ``uniform``).
        window: ``"gaussian"`` or ``"uniform"``.

    Returns:
        ``float64 (T,)`` in ``[-1, 1]``; higher is better; exactly 1.0 for identical frames.
    """
    p, g = _check_pair(pred, gt)
    if window == "gaussian":
        radius = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)
        win = 2 * radius + 1

        def filt(a: np.ndarray) -> np.ndarray:
            return gaussian_filter(a, sigma=(0.0, _SSIM_SIGMA, _SSIM_SIGMA, 0.0),
                                   truncate=_SSIM_TRUNCATE, mode="reflect")

        cov_norm = 1.0
    elif window == "uniform":
        win = _SSIM_UNIFORM_WIN

        def filt(a: np.ndarray) -> np.ndarray:
            return uniform_filter(a, size=(1, win, win, 1), mode="reflect")

        cov_norm = win * win / (win * win - 1.0)
    else:
        raise InputError(f"window={window!r}; expected 'gaussian' or 'uniform'")
    _min_side(p, win, f"SSIM with the {window} window ({win} x {win})")
    c1 = (_SSIM_K1 * 255.0) ** 2
    c2 = (_SSIM_K2 * 255.0) ** 2
    pad = (win - 1) // 2
    out = np.empty(p.shape[0], dtype=np.float64)
    for sl in _chunks(p.shape[0]):
        x = p[sl].astype(np.float64)
        y = g[sl].astype(np.float64)
        ux, uy = filt(x), filt(y)
        vx = cov_norm * (filt(x * x) - ux * ux)
        vy = cov_norm * (filt(y * y) - uy * uy)
        vxy = cov_norm * (filt(x * y) - ux * uy)
        s = ((2.0 * ux * uy + c1) * (2.0 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        h, w = s.shape[1:3]
        s = s[:, pad:h - pad, pad:w - pad, :]
        out[sl] = s.mean(axis=(1, 2), dtype=np.float64).mean(axis=1)
    return out


# --------------------------------------------------------------------------------------------------
# BMSE (blur proxy of M3DDM+)
# --------------------------------------------------------------------------------------------------

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
    x_all = _check_clip(frames, "frames")
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise InputError(f"sigma={sigma!r} must be a positive number")
    region = None if mask is None else _check_mask(mask, x_all.shape[1:3])
    if region is not None and not region.any():
        return np.full(x_all.shape[0], np.nan)
    out = np.empty(x_all.shape[0], dtype=np.float64)
    s = float(sigma)
    for sl in _chunks(x_all.shape[0]):
        x = x_all[sl].astype(np.float32) / 255.0
        d = x - gaussian_filter(x, sigma=(0.0, s, s, s), mode="reflect")
        d *= d
        if region is not None:
            d = d[:, region, :]
        out[sl] = d.reshape(d.shape[0], -1).mean(axis=1, dtype=np.float64)
    return out


# --------------------------------------------------------------------------------------------------
# Torch helpers (imported lazily)
# --------------------------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _load_state_dict(path: Path, what: str) -> Dict[str, Any]:
    torch = _torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling / format error
        raise ModelLoadError(f"{what}: could not read {path} with torch.load(weights_only=True): {e}") from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise ModelLoadError(f"{what}: {path} does not hold a state dict (got {type(obj).__name__})")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _strict_load(module, sd: Mapping[str, Any], path: Path, what: str) -> None:
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{what}: {path} does not match the expected parameters: {e}") from e


def _seeded(seed: int, build):
    torch = _torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


def default_alexnet_path() -> Path:
    """``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` (``torch.hub.get_dir()`` rules)."""
    return Path(_torch().hub.get_dir()) / "checkpoints" / ALEXNET_FILENAME


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


# --------------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------------


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
        torch = _torch()
        from m3ddm_ray.evaluation import _lpips

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
                net = _lpips.LPIPSNet()
                for k in range(len(_lpips.CHANNELS)):
                    w = getattr(net, f"lin{k}").model[1].weight
                    with torch.no_grad():
                        w.copy_(torch.rand(w.shape) / w.shape[1])
                return net

            net = _seeded(seed, build)
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
            net = _lpips.LPIPSNet()
            sd = _load_state_dict(bpath, "LPIPS AlexNet backbone")
            feats = {k: v for k, v in sd.items() if k.startswith("features.")}
            if not feats:
                raise ModelLoadError(
                    f"LPIPS AlexNet backbone: {bpath} has no 'features.*' entries; expected torchvision's "
                    f"AlexNet state dict ({ALEXNET_FILENAME})"
                )
            _strict_load(net.net, feats, bpath, "LPIPS AlexNet backbone")
            heads = _load_state_dict(lpath, "LPIPS linear heads")
            full = {f"net.{k}": v for k, v in net.net.state_dict().items()}
            full.update(heads)
            _strict_load(net, full, lpath, "LPIPS linear heads")
            self.metric_impl = f"{impl}; backbone={_file_tag(bpath)}; linear={_file_tag(lpath)}"
        self.net = net.eval().requires_grad_(False).to(self.device)

    def __call__(self, pred, gt) -> np.ndarray:
        """Per-frame LPIPS of two clips.

        Args:
            pred, gt: ``uint8 (T, H, W, 3)`` RGB, same shape, ``H, W >= 31``; mapped to ``[-1, 1]``
                as ``x / 127.5 - 1``.

        Returns:
            ``float64 (T,)``, ``>= 0``; lower is better; 0 for identical frames.
        """
        torch = _torch()
        from m3ddm_ray.evaluation._lpips import min_side

        p, g = _check_pair(pred, gt)
        _min_side(p, min_side(), "LPIPS (AlexNet)")
        out = np.empty(p.shape[0], dtype=np.float64)
        with torch.no_grad():
            for sl in _chunks(p.shape[0], self.batch_size):
                x0 = self._to_tensor(p[sl])
                x1 = self._to_tensor(g[sl])
                out[sl] = self.net(x0, x1).double().cpu().numpy()
        return out

    def _to_tensor(self, frames: np.ndarray):
        torch = _torch()
        t = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return t.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------
# FVD
# --------------------------------------------------------------------------------------------------


def _styleganv_standin(seed: int):
    """A random-init stand-in with the call convention of StyleGAN-V's ``i3d_torchscript.pt``."""
    torch = _torch()
    import torch.nn.functional as F

    from m3ddm_ray.evaluation._i3d import InceptionI3d

    class _StandIn(torch.nn.Module):
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

    return _seeded(seed, _StandIn)


class FVDFeatureExtractor:
    """Per-video I3D features for the Fréchet video distance; two published checkpoints.

    ``kind="videogpt"`` -- ``i3d_pretrained_400.pt`` of VideoGPT / TATS, a plain state dict of
    pytorch-i3d's ``InceptionI3d(400)``. The network is re-implemented here with the same parameter
    names (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b0.conv3d.weight``, ...,
    ``logits.conv3d.weight``) and loaded strictly. Preprocessing as VideoGPT's ``fvd.preprocess``
    (wilson1yan/VideoGPT ``videogpt/data.py``): ``x / 255``, bilinear resize (``align_corners=False``)
    of the shorter side to 224 (longer side ``ceil``), centre crop 224 x 224, then ``(x - 0.5) * 2``
    -> ``[-1, 1]``. The feature is the 400-d logit vector averaged over time (VideoGPT's
    ``InceptionI3d.forward``, which its ``get_fvd_logits`` uses). Note: VideoGPT's own script stops
    at ``x - 0.5`` (range ``[-0.5, 0.5]``); the widely used re-packaging in
    common_metrics_on_video_quality multiplies by 2 (``[-1, 1]``, the range I3D was trained on),
    which is the default here; ``input_range=0.5`` reproduces the original VideoGPT numbers.
    Needs ``T >= 9`` frames.

    ``kind="stylegan-v"`` -- StyleGAN-V's ``i3d_torchscript.pt`` (the TF-hub FVD I3D as TorchScript),
    loaded with ``torch.jit.load`` and called as ``model(x, rescale=False, resize=True,
    return_features=True)`` on float ``(N, 3, T, H, W)`` in ``[-1, 1]`` (``x / 127.5 - 1``; the
    network resizes to 224 itself). StyleGAN-V's own metric passes uint8 ``[0, 255]`` with
    ``rescale=True``, which the module maps by ``x / 255 * 2 - 1`` (per its author,
    universome/fvd-comparison#4) -- the same input. Returns the 400-d pre-softmax features.

    ``random_init=True`` (tests only): a seeded random I3D (for ``stylegan-v`` wrapped in the same
    call convention), no file read; :attr:`metric_impl` says ``random-init``.

    Args:
        kind: ``"videogpt"`` or ``"stylegan-v"``.
        weights: path of the checkpoint (required unless ``random_init``).
        device: torch device.
        random_init: see above.
        seed: seed of the random init.
        batch_size: videos per forward pass.
        input_range: ``videogpt`` only: frames are mapped to ``[-input_range, input_range]``.

    Raises:
        ModelLoadError: missing / unreadable / mismatching weights (the message names the file and
            where to get it).
        InputError: bad arguments.
    """

    feature_dim = 400

    def __init__(self, kind: str, weights: Optional[PathLike] = None, device: str = "cpu", *,
                 random_init: bool = False, seed: int = 0, batch_size: int = 4, input_range: float = 1.0):
        torch = _torch()
        from m3ddm_ray.evaluation._i3d import InceptionI3d

        if kind not in ("videogpt", "stylegan-v"):
            raise InputError(f"kind={kind!r}; expected 'videogpt' or 'stylegan-v'")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r} must be a positive integer")
        if not (isinstance(input_range, (int, float)) and input_range > 0):
            raise InputError(f"input_range={input_range!r} must be a positive number")
        if kind == "stylegan-v" and input_range != 1.0:
            raise InputError("input_range applies to kind='videogpt' only (stylegan-v takes [-1, 1])")
        self.kind = kind
        self.batch_size = batch_size
        self.input_range = float(input_range)
        self.device = torch.device(device)
        if random_init:
            if weights is not None:
                raise InputError("random_init=True cannot be combined with weights")
            if kind == "videogpt":
                model = _seeded(seed, lambda: InceptionI3d(400))
            else:
                model = _styleganv_standin(seed)
            weights_tag = f"random-init(seed={seed}); NOT comparable with published FVD"
        else:
            if weights is None:
                raise ModelLoadError(self._missing_message(None))
            path = Path(weights)
            if not path.is_file():
                raise ModelLoadError(self._missing_message(path))
            if kind == "videogpt":
                model = InceptionI3d(400)
                _strict_load(model, _load_state_dict(path, "I3D (videogpt)"), path, "I3D (videogpt)")
            else:
                try:
                    model = torch.jit.load(str(path), map_location="cpu")
                except Exception as e:  # noqa: BLE001
                    raise ModelLoadError(
                        f"I3D (stylegan-v): {path} is not a TorchScript module loadable with torch.jit.load "
                        f"({e}); kind='stylegan-v' expects {I3D_STYLEGANV_FILENAME} ({I3D_STYLEGANV_URL}), "
                        f"kind='videogpt' a state dict like {I3D_VIDEOGPT_FILENAME}"
                    ) from e
            weights_tag = _file_tag(path)
        self.model = model.eval().to(self.device)
        if kind == "videogpt":
            self.metric_impl = (f"FVD features: I3D logits (400-d, time mean), m3ddm_ray own InceptionI3d "
                                f"with pytorch-i3d names, VideoGPT preprocessing (224 short side + centre "
                                f"crop, range [-{self.input_range:g},{self.input_range:g}]); "
                                f"weights={weights_tag}")
        else:
            net = ("random stand-in (m3ddm_ray InceptionI3d) behind the StyleGAN-V TorchScript I3D call"
                   if random_init else "StyleGAN-V TorchScript I3D")
            self.metric_impl = (f"FVD features: {net} (400-d, rescale=False, resize=True, "
                                f"return_features=True, input [-1,1]); weights={weights_tag}")

    def _missing_message(self, path: Optional[Path]) -> str:
        where = "no weights path given" if path is None else f"{path} does not exist"
        if self.kind == "videogpt":
            return (f"I3D (videogpt): {where}. Pass weights=PATH of {I3D_VIDEOGPT_FILENAME} "
                    f"(from {_I3D_VIDEOGPT_SOURCE}); random_init=True is for tests only")
        return (f"I3D (stylegan-v): {where}. Pass weights=PATH of {I3D_STYLEGANV_FILENAME} "
                f"(download {I3D_STYLEGANV_URL}, as StyleGAN-V's src/metrics/frechet_video_distance.py "
                f"does); random_init=True is for tests only")

    # -- preprocessing ---------------------------------------------------------------------------

    @staticmethod
    def _as_videos(videos) -> List[np.ndarray]:
        if isinstance(videos, np.ndarray):
            if videos.ndim != 5:
                raise InputError(
                    f"videos has shape {videos.shape}; expected (N, T, H, W, 3) uint8 or a list of "
                    f"(T, H, W, 3) clips"
                )
            items = list(videos)
        elif isinstance(videos, (list, tuple)):
            items = list(videos)
        else:
            raise InputError(f"videos is a {type(videos).__name__}; expected an array or a list of clips")
        if not items:
            raise InputError("videos is empty")
        return [_check_clip(v, f"videos[{i}]") for i, v in enumerate(items)]

    def preprocess(self, clips: Sequence[np.ndarray]):
        """Stack same-shape ``uint8 (T, H, W, 3)`` clips into the network input on :attr:`device`.

        Returns:
            ``float32 (N, 3, T, 224, 224)`` for ``videogpt`` (range ``[-input_range, input_range]``),
            ``float32 (N, 3, T, H, W)`` in ``[-1, 1]`` for ``stylegan-v``.
        """
        torch = _torch()
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(np.stack(clips))).to(self.device)
        n, t, h, w, _ = x.shape
        x = x.permute(0, 1, 4, 2, 3).reshape(n * t, 3, h, w).float() / 255.0  # (N*T, 3, H, W)
        if self.kind == "videogpt":
            res = 224
            scale = res / min(h, w)
            size = (res, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), res)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            h0 = (x.shape[2] - res) // 2
            w0 = (x.shape[3] - res) // 2
            x = x[:, :, h0:h0 + res, w0:w0 + res]
            x = (x - 0.5) * (2.0 * self.input_range)
        else:
            x = x * 2.0 - 1.0
        x = x.reshape(n, t, 3, x.shape[2], x.shape[3]).permute(0, 2, 1, 3, 4).contiguous()
        return x

    def __call__(self, videos) -> np.ndarray:
        """I3D features of a set of clips.

        Args:
            videos: ``uint8 (N, T, H, W, 3)`` or a list of ``uint8 (T, H, W, 3)`` clips (shapes may
                differ between clips; consecutive same-shape clips are batched). ``videogpt`` needs
                ``T >= 9``.

        Returns:
            ``float64 (N, 400)``.
        """
        torch = _torch()
        from m3ddm_ray.evaluation._i3d import min_frames

        clips = self._as_videos(videos)
        if self.kind == "videogpt":
            short = [i for i, c in enumerate(clips) if c.shape[0] < min_frames()]
            if short:
                raise InputError(
                    f"videos[{short[0]}] has {clips[short[0]].shape[0]} frames; the I3D of kind "
                    f"'videogpt' needs at least {min_frames()}"
                )
        feats: List[np.ndarray] = []
        i = 0
        with torch.no_grad():
            while i < len(clips):
                j = i + 1
                while j < len(clips) and j - i < self.batch_size and clips[j].shape == clips[i].shape:
                    j += 1
                x = self.preprocess(clips[i:j])
                if self.kind == "videogpt":
                    y = self.model(x)
                else:
                    y = self.model(x, rescale=False, resize=True, return_features=True)
                if y.ndim != 2 or y.shape[0] != j - i:
                    raise ModelLoadError(
                        f"I3D ({self.kind}) returned shape {tuple(y.shape)} for {j - i} videos; "
                        f"expected ({j - i}, {self.feature_dim})"
                    )
                feats.append(y.double().cpu().numpy())
                i = j
        return np.concatenate(feats, axis=0)


def frechet_distance(feats_a, feats_b, *, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FVD when fed I3D features).

    ``d = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` with the sample means and the
    unbiased sample covariances (``np.cov(..., rowvar=False)``, as VideoGPT and the StyleGAN-V
    helper in common_metrics_on_video_quality); ``(S_a S_b)^{1/2}`` by ``scipy.linalg.sqrtm``, real
    part. Guard: if the square root is not finite, ``eps * I`` is added to both covariances and it is
    recomputed. Round-off below zero is clamped to 0.

    Args:
        feats_a: ``(N, D)`` float features (e.g. of generated clips), ``N >= 2``.
        feats_b: ``(M, D)`` float features (e.g. of real clips), ``M >= 2``.
        eps: diagonal offset of the guard.

    Returns:
        ``float >= 0``; lower is better; ~0 for identical sets. Biased for small ``N, M`` (FVD papers
        use thousands of clips); compare numbers only at equal set sizes.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    for name, f in (("feats_a", a), ("feats_b", b)):
        if f.ndim != 2:
            raise InputError(f"{name} has shape {f.shape}; expected (num_samples, feature_dim)")
        if f.shape[0] < 2:
            raise InputError(f"{name} has {f.shape[0]} sample(s); a covariance needs at least 2")
        if not np.isfinite(f).all():
            raise InputError(f"{name} contains NaN or inf")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():
        off = eps * np.eye(s_a.shape[0])
        covmean = linalg.sqrtm((s_a + off) @ (s_b + off))
    covmean = np.real(covmean)
    d = float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))
    return max(d, 0.0)


# --------------------------------------------------------------------------------------------------
# Per clip / per dataset
# --------------------------------------------------------------------------------------------------

_IMPL_PSNR = "psnr: 10*log10(255^2/MSE) per frame on uint8 RGB (= skimage peak_signal_noise_ratio), frame mean"
_IMPL_SSIM = {
    "gaussian": ("ssim: m3ddm_ray vectorised = skimage structural_similarity(channel_axis=-1, data_range=255, "
                 "gaussian_weights=True, sigma=1.5, use_sample_covariance=False), frame mean"),
    "uniform": ("ssim: m3ddm_ray vectorised = skimage structural_similarity(channel_axis=-1, data_range=255) "
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
        p, g = _check_pair(pred, gt)
        m = _check_mask(mask, p.shape[1:3])
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
