"""FVD: per-video I3D features (two published checkpoints) and the Fréchet distance (``scipy.linalg.sqrtm``).

The I3D network and its checkpoints are :mod:`m3ddm_ray.models.metric_nets.i3d` (own module: why, see its top).
"""

from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np
from einops import rearrange
from scipy import linalg

from m3ddm_ray.errors import InputError, ModelLoadError
from m3ddm_ray.quality import check_frames

__all__ = ["FVDFeatureExtractor", "frechet_distance"]


class FVDFeatureExtractor:
    """Per-video I3D features for the Fréchet video distance; two published checkpoints.

    ``kind="videogpt"`` -- ``i3d_pretrained_400.pt`` of VideoGPT / TATS, a plain state dict of
    pytorch-i3d's ``InceptionI3d(400)``, loaded strictly into our re-implementation with the same
    parameter names (:func:`m3ddm_ray.models.metric_nets.i3d.load_i3d`). Preprocessing as VideoGPT's ``fvd.preprocess``
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

    def __init__(self, kind: str, weights=None, device: str = "cpu", *,
                 random_init: bool = False, seed: int = 0, batch_size: int = 4, input_range: float = 1.0):
        import torch
        from m3ddm_ray.models.metric_nets.i3d import I3D_KINDS, load_i3d

        if kind not in I3D_KINDS:
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
        model, weights_tag = load_i3d(kind, weights, random_init=random_init, seed=seed)
        self.model = model.to(self.device)
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
        return [check_frames(v, f"videos[{i}]") for i, v in enumerate(items)]

    def preprocess(self, clips: Sequence[np.ndarray]):
        """Stack same-shape ``uint8 (T, H, W, 3)`` clips into the network input on :attr:`device`.

        Returns:
            ``float32 (N, 3, T, 224, 224)`` for ``videogpt`` (range ``[-input_range, input_range]``),
            ``float32 (N, 3, T, H, W)`` in ``[-1, 1]`` for ``stylegan-v``.
        """
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(np.stack(clips))).to(self.device)
        n, t, h, w, _ = x.shape
        x = rearrange(x, "n t h w c -> (n t) c h w").float() / 255.0
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
        x = rearrange(x, "(n t) c h w -> n c t h w", n=n).contiguous()
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
        import torch
        from m3ddm_ray.models.metric_nets.i3d import min_frames

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
