"""Checkpoint files of the metric networks: strict state-dict reads, file tags, seeded random init."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, TypeVar, Union

import torch

from m3ddm_ray.errors import ModelLoadError

__all__ = ["PathLike", "file_tag", "load_state_dict", "strict_load", "seeded"]

PathLike = Union[str, os.PathLike]
T = TypeVar("T")


def file_tag(path: Path) -> str:
    """``"<path> sha256:<first 12 hex digits>"`` of a weights file (named in ``metric_impl`` strings)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{path} sha256:{h.hexdigest()[:12]}"


def load_state_dict(path: Path, what: str) -> Dict[str, Any]:
    """The state dict in ``path`` (``torch.load(weights_only=True)``; a ``state_dict`` entry and a
    DataParallel ``module.`` prefix are unwrapped).

    Raises:
        ModelLoadError: an unreadable file or one that holds no state dict, naming ``what`` and ``path``.
    """
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


def strict_load(module: torch.nn.Module, sd: Mapping[str, Any], path: Path, what: str) -> None:
    """``module.load_state_dict(sd, strict=True)``.

    Raises:
        ModelLoadError: missing, unexpected or mis-shaped keys, naming ``what`` and ``path``.
    """
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{what}: {path} does not match the expected parameters: {e}") from e


def seeded(seed: int, build: Callable[[], T]) -> T:
    """``build()`` under torch seed ``seed``, leaving the global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()
