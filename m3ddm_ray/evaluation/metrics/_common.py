"""Shared helpers of the metric modules: the input checks (the package-wide frame and mask validators
of :mod:`m3ddm_ray.quality`), frame chunking, weight-file tags and lazy torch loading helpers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Tuple, Union

import numpy as np

from m3ddm_ray.errors import InputError, ModelLoadError
from m3ddm_ray.quality import check_frames, check_mask

PathLike = Union[str, os.PathLike]

_FRAME_CHUNK = 8  # frames per vectorised BMSE / PSNR step (bounds float64 temporaries)


def check_clip(x, name: str) -> np.ndarray:
    """``x`` checked as uint8 ``(T, H, W, 3)`` frames (:func:`m3ddm_ray.quality.check_frames`)."""
    return check_frames(x, name)


def check_pair(pred, gt) -> Tuple[np.ndarray, np.ndarray]:
    """``(pred, gt)`` checked as clips of one shape; InputError naming both shapes otherwise."""
    p = check_clip(pred, "pred")
    g = check_clip(gt, "gt")
    if p.shape != g.shape:
        raise InputError(f"pred has shape {p.shape} but gt has shape {g.shape}; they must match")
    return p, g


def check_frame_mask(mask, hw: Tuple[int, int]) -> np.ndarray:
    """``mask`` checked as one ``(H, W)`` = ``hw`` mask (:func:`m3ddm_ray.quality.check_mask`)."""
    return check_mask(mask, hw, "mask")


def check_min_side(arr: np.ndarray, need: int, what: str) -> None:
    """InputError unless the frames of ``arr`` ``(T, H, W, ...)`` are at least ``need`` pixels on each side."""
    h, w = arr.shape[1:3]
    if min(h, w) < need:
        raise InputError(f"frames are {h} x {w}; {what} needs H and W >= {need}")


def frame_chunks(t: int, size: int = _FRAME_CHUNK) -> Iterable[slice]:
    """Slices of ``size`` frames covering ``range(t)``."""
    for t0 in range(0, t, size):
        yield slice(t0, min(t0 + size, t))


def file_tag(path: Path) -> str:
    """``"<path> sha256:<first 12 hex digits>"`` of a weights file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{path} sha256:{h.hexdigest()[:12]}"


# -- torch (imported lazily: PSNR / SSIM / BMSE need no torch) ------------------------------------


def import_torch():
    """The ``torch`` module, imported on first use (PSNR / SSIM / BMSE do not need it)."""
    import torch

    return torch


def load_state_dict(path: Path, what: str) -> Dict[str, Any]:
    """The state dict in ``path`` (``torch.load(weights_only=True)``; a ``state_dict`` entry and a
    DataParallel ``module.`` prefix are unwrapped). Raises ModelLoadError naming ``what`` and ``path``."""
    torch = import_torch()
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


def strict_load(module, sd: Mapping[str, Any], path: Path, what: str) -> None:
    """``module.load_state_dict(sd, strict=True)``; a mismatch is a ModelLoadError naming ``what`` and ``path``."""
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{what}: {path} does not match the expected parameters: {e}") from e


def seeded(seed: int, build):
    """``build()`` under torch seed ``seed``, leaving the global random state as it was."""
    torch = import_torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()
