"""Evaluation protocols: how a ground-truth clip becomes the input of a method, and how the method's
output is put back into the ground truth's frame before scoring.

Outpainting (docs/evaluation.md, "Outpainting protocols"): :class:`BenchmarkProtocol` (M3DDM, ACM MM
2023, Sec. 4: ``size x size`` frames, horizontal mask ratios 0.25 / 0.66, half on each side) and
:class:`M3DDMPlusProtocol` (M3DDM+, IWAIT 2026, our reading of ``src/evaluate.py`` of
github.com/tamaki-lab/M3DDM-Plus) turn a clip into one :class:`MaskCase` per mask ratio: the ground
truth at the protocol resolution, the known strip the method sees, the target ratio whose canvas puts
the strip exactly at the known region (:attr:`MaskCase.exact`), and the ``(H, W)`` mask, 1 = generated.
:meth:`MaskCase.compose` puts the output back into the ground truth's frame before scoring.

Inpainting (:func:`inpaint_case`): a ground-truth clip gets a synthetic object-shaped mask
(:func:`m3ddm_ray.masks.synthetic.synthetic_masks`, ``stationary`` or ``moving``, area fraction
``area``, seeded per clip); scores are over the whole frame plus :func:`temporal_consistency` in the hole.

Prediction (:func:`prediction_case`), as ExtDM (Zhang et al., CVPR 2024): condition on the first ``c``
frames, predict the next ``p``, report every metric per predicted frame index ``1..p``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .. import geometry
from ..errors import InputError
from ..masks.synthetic import MOTIONS, synthetic_masks
from ..quality import check_frames

__all__ = ["PROTOCOLS", "MaskCase", "BenchmarkProtocol", "M3DDMPlusProtocol", "benchmark_known_span",
           "m3ddm_plus_target_hw", "m3ddm_plus_known_span", "make_protocol", "resize_frames", "InpaintCase",
           "PredictionCase", "inpaint_case", "prediction_case", "temporal_consistency"]

PROTOCOLS = ("benchmark", "m3ddm-plus")

_INTERP = {"area": "INTER_AREA", "linear": "INTER_LINEAR", "cubic": "INTER_CUBIC", "lanczos": "INTER_LANCZOS4",
           "nearest": "INTER_NEAREST"}


def resize_frames(frames: np.ndarray, hw: tuple[int, int], interpolation: str = "area") -> np.ndarray:
    """OpenCV resize of every frame of ``uint8 (T, H, W, 3)`` to ``hw``; unchanged frames are copied."""
    import cv2

    if interpolation not in _INTERP:
        raise InputError(f"interpolation {interpolation!r}: use one of {', '.join(_INTERP)}")
    frames = np.asarray(frames)
    h, w = int(hw[0]), int(hw[1])
    if frames.shape[1:3] == (h, w):
        return np.ascontiguousarray(frames).copy()
    flag = getattr(cv2, _INTERP[interpolation])
    out = np.empty((frames.shape[0], h, w, frames.shape[3]), dtype=frames.dtype)
    for i, f in enumerate(frames):
        out[i] = cv2.resize(f, (w, h), interpolation=flag)
    return out


def _check_ratio(name: str, r: float) -> float:
    r = float(r)
    if not math.isfinite(r) or not 0.0 < r < 1.0:
        raise InputError(f"{name}={r!r} must be a fraction strictly between 0 and 1 (e.g. 0.25 or 0.66)")
    return r


def benchmark_known_span(length: int, mask_ratio: float) -> tuple[int, int]:
    """Half-open ``(start, stop)`` of the kept (known) span of a side of ``length`` pixels when the
    fraction ``mask_ratio`` of it is generated, half on each side (protocol 1 rounding rule).

    ``benchmark_known_span(256, 0.66) == (84, 171)`` (87 columns), ``(256, 0.25) -> (32, 224)``.
    """
    r = _check_ratio("mask_ratio", mask_ratio)
    kept = int(math.floor(length * (1.0 - r) + 0.5))
    kept = min(max(kept, 1), length - 1)
    start = (length - kept) // 2
    return start, start + kept


def m3ddm_plus_target_hw(output_size: int, ratio: geometry.RatioLike) -> tuple[int, int]:
    """``(h, w)`` of the M3DDM+ evaluation frames: long side ``output_size``, short side rounded to the
    ratio, both floored to multiples of 8 (``(256, "16:9") -> (144, 256)``)."""
    r = geometry.parse_ratio(ratio)
    s = int(output_size)
    if s < 8:
        raise InputError(f"output_size={output_size!r} must be >= 8")
    if r.value >= 1:
        w, h = s, int(round(s / r.value))
    else:
        h, w = s, int(round(s * r.value))
    h, w = h - h % 8, w - w % 8
    if h < 8 or w < 8:
        raise InputError(f"ratio {r} is too extreme for output_size {s}: the frame would be {h}x{w}")
    return h, w


def m3ddm_plus_known_span(length: int, crop_ratio: float) -> tuple[int, int]:
    """Half-open kept span of a side of ``length`` pixels: ``cut = floor(length * crop_ratio / 2)``
    removed on each side (M3DDM+ evaluation)."""
    r = _check_ratio("crop_ratio", crop_ratio)
    cut = int(length * r / 2)
    if length - 2 * cut < 1:
        raise InputError(f"crop_ratio {r} leaves nothing of {length} pixels")
    return cut, length - cut


@dataclass(frozen=True)
class MaskCase:
    """One mask ratio of a protocol at one canvas size: everything needed to run and score a clip.

    Attributes:
        protocol: protocol name.
        label: the ratio as shown in tables (``"0.25"``).
        mask_ratio: fraction of the width (or height) that is generated.
        frame_hw: ``(H, W)`` of the ground-truth frames.
        known_box: ``(y0, y1, x0, x1)`` half-open known region in ground-truth frames.
        ratio: target ratio given to the pipeline (the ground-truth frame's reduced ``W:H``).
        canvas_size: ``S`` of the pipeline canvas.
        geom: ``geometry.plan_canvas`` of the strip for ``ratio`` on the ``S`` canvas.
        out_box: ``geometry.crop_box(geom, ratio)``: the canvas crop the pipeline outputs.
    """

    protocol: str
    label: str
    mask_ratio: float
    frame_hw: tuple[int, int]
    known_box: tuple[int, int, int, int]
    ratio: geometry.Ratio
    canvas_size: int
    geom: geometry.CanvasGeometry = field(repr=False)
    out_box: tuple[int, int, int, int] = field(repr=False)

    @classmethod
    def build(cls, protocol: str, label: str, mask_ratio: float, frame_hw: tuple[int, int],
              known_box: tuple[int, int, int, int], canvas_size: int) -> "MaskCase":
        h, w = frame_hw
        g = math.gcd(w, h)
        ratio = geometry.Ratio(w // g, h // g)
        y0, y1, x0, x1 = known_box
        geom = geometry.plan_canvas(y1 - y0, x1 - x0, ratio, canvas_size)
        return cls(protocol, label, float(mask_ratio), (int(h), int(w)), tuple(int(v) for v in known_box), ratio,
                   int(canvas_size), geom, geometry.crop_box(geom, ratio))

    @property
    def strip_hw(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.known_box
        return (y1 - y0, x1 - x0)

    @property
    def known_in_output(self) -> tuple[int, int, int, int]:
        """Where the pipeline's known rectangle is inside its (canvas-crop) output."""
        ky0, ky1, kx0, kx1 = self.geom.known_box
        oy0, _, ox0, _ = self.out_box
        return (ky0 - oy0, ky1 - oy0, kx0 - ox0, kx1 - ox0)

    @property
    def output_hw(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.out_box
        return (y1 - y0, x1 - x0)

    @property
    def exact(self) -> bool:
        """True when the pipeline pastes the strip unscaled and its output is the ground-truth frame
        with the known rectangle exactly at :attr:`known_box` (no resize anywhere)."""
        return (self.geom.resized_hw == self.strip_hw and self.output_hw == self.frame_hw
                and self.known_in_output == self.known_box)

    def mask(self) -> np.ndarray:
        """``uint8 (H, W)`` of the ground-truth frame: 1 = generated, 0 = known."""
        m = np.ones(self.frame_hw, dtype=np.uint8)
        y0, y1, x0, x1 = self.known_box
        m[y0:y1, x0:x1] = 0
        return m

    def strip(self, gt: np.ndarray) -> np.ndarray:
        """The input clip of the method: the known region of the ground truth ``(T, h, w, 3)``."""
        gt = self._check_gt(gt)
        y0, y1, x0, x1 = self.known_box
        return np.ascontiguousarray(gt[:, y0:y1, x0:x1])

    def compose(self, output: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, float]:
        """The frames that are scored, and how far the method's known region was from the truth.

        ``output`` (the method's ``(T, h, w, 3)`` canvas crop) is resized to the ground-truth size
        (``INTER_CUBIC``) when needed, then the known region is replaced by ``gt``.

        Returns:
            ``(frames uint8 (T, H, W, 3), known_error)``: ``known_error`` is the largest absolute
            difference (levels) between the output and the ground truth inside the known region
            *before* the replacement: 0 when the pipeline put the input back unchanged.
        """
        gt = self._check_gt(gt)
        out = check_frames(output, "output")
        if out.shape[0] != gt.shape[0]:
            raise InputError(f"output has {out.shape[0]} frames but the ground truth {gt.shape[0]}; they must match")
        out = resize_frames(out, self.frame_hw, "cubic") if out.shape[1:3] != self.frame_hw else out.copy()
        y0, y1, x0, x1 = self.known_box
        diff = np.abs(out[:, y0:y1, x0:x1].astype(np.int16) - gt[:, y0:y1, x0:x1].astype(np.int16))
        err = float(diff.max()) if diff.size else 0.0
        out[:, y0:y1, x0:x1] = gt[:, y0:y1, x0:x1]
        return out, err

    def _check_gt(self, gt: np.ndarray) -> np.ndarray:
        gt = check_frames(gt, "ground truth")
        if tuple(gt.shape[1:3]) != tuple(self.frame_hw):
            raise InputError(f"ground truth must be uint8 (T, {self.frame_hw[0]}, {self.frame_hw[1]}, 3); "
                             f"got {gt.dtype} {gt.shape}")
        return gt

    def describe(self) -> dict:
        """JSON-friendly description (for result rows and the report)."""
        return {"protocol": self.protocol, "label": self.label, "mask_ratio": self.mask_ratio,
                "frame_hw": list(self.frame_hw), "known_box": list(self.known_box), "ratio": str(self.ratio),
                "canvas_size": self.canvas_size, "canvas_known_box": list(self.geom.known_box),
                "out_box": list(self.out_box), "exact": self.exact}


def _label(r: float) -> str:
    return f"{r:g}"


@dataclass(frozen=True)
class BenchmarkProtocol:
    """Protocol 1 (see the module docstring): ``size x size`` frames, mask ratios half on each side."""

    size: int = 256
    mask_ratios: tuple[float, ...] = (0.25, 0.66)
    direction: str = "horizontal"
    interpolation: str = "area"
    name: str = field(default="benchmark", init=False)

    def __post_init__(self):
        if int(self.size) < 8:
            raise InputError(f"benchmark size={self.size!r} must be >= 8 (256 in the papers)")
        if self.direction not in ("horizontal", "vertical"):
            raise InputError(f"direction {self.direction!r}: use 'horizontal' or 'vertical'")
        if not self.mask_ratios:
            raise InputError("no mask ratio given (the papers use 0.25 and 0.66)")
        for r in self.mask_ratios:
            _check_ratio("mask_ratio", r)
        if self.interpolation not in _INTERP:
            raise InputError(f"interpolation {self.interpolation!r}: use one of {', '.join(_INTERP)}")

    @property
    def frame_hw(self) -> tuple[int, int]:
        return (int(self.size), int(self.size))

    def ground_truth(self, frames: np.ndarray) -> np.ndarray:
        """Frames resized to ``size x size``."""
        return resize_frames(frames, self.frame_hw, self.interpolation)

    def known_box(self, mask_ratio: float) -> tuple[int, int, int, int]:
        s = int(self.size)
        a, b = benchmark_known_span(s, mask_ratio)
        return (0, s, a, b) if self.direction == "horizontal" else (a, b, 0, s)

    def cases(self, canvas_size: int) -> list[MaskCase]:
        return [MaskCase.build(self.name, _label(r), r, self.frame_hw, self.known_box(r), canvas_size)
                for r in self.mask_ratios]


@dataclass(frozen=True)
class M3DDMPlusProtocol:
    """Protocol 2 (see the module docstring): long side ``output_size`` at ``target_ratio``, crop
    ``crop_ratio`` along ``crop_axis``, outpaint back, score the full frame."""

    output_size: int = 256
    target_ratio: str = "16:9"
    crop_ratios: tuple[float, ...] = (0.25,)
    crop_axis: str = "horizontal"
    interpolation: str = "linear"
    name: str = field(default="m3ddm-plus", init=False)

    def __post_init__(self):
        m3ddm_plus_target_hw(self.output_size, self.target_ratio)
        if self.crop_axis not in ("horizontal", "vertical"):
            raise InputError(f"crop_axis {self.crop_axis!r}: use 'horizontal' or 'vertical'")
        if not self.crop_ratios:
            raise InputError("no crop ratio given (M3DDM+ evaluates 0.25 by default)")
        for r in self.crop_ratios:
            _check_ratio("crop_ratio", r)
        if self.interpolation not in _INTERP:
            raise InputError(f"interpolation {self.interpolation!r}: use one of {', '.join(_INTERP)}")

    @property
    def mask_ratios(self) -> tuple[float, ...]:
        return tuple(self.crop_ratios)

    @property
    def frame_hw(self) -> tuple[int, int]:
        return m3ddm_plus_target_hw(self.output_size, self.target_ratio)

    def ground_truth(self, frames: np.ndarray) -> np.ndarray:
        """Scale to cover the target size (rounded), then centre-crop to it."""
        frames = np.asarray(frames)
        th, tw = self.frame_hw
        h, w = frames.shape[1:3]
        scale = max(tw / w, th / h)
        rh, rw = max(th, int(round(h * scale))), max(tw, int(round(w * scale)))
        resized = resize_frames(frames, (rh, rw), self.interpolation)
        top, left = (rh - th) // 2, (rw - tw) // 2
        return np.ascontiguousarray(resized[:, top:top + th, left:left + tw])

    def known_box(self, crop_ratio: float) -> tuple[int, int, int, int]:
        h, w = self.frame_hw
        if self.crop_axis == "horizontal":
            a, b = m3ddm_plus_known_span(w, crop_ratio)
            return (0, h, a, b)
        a, b = m3ddm_plus_known_span(h, crop_ratio)
        return (a, b, 0, w)

    def cases(self, canvas_size: int) -> list[MaskCase]:
        return [MaskCase.build(self.name, _label(r), r, self.frame_hw, self.known_box(r), canvas_size)
                for r in self.crop_ratios]


def make_protocol(name: str, options: Mapping | None = None):
    """A protocol from its name and options (the ``eval.benchmark`` / ``eval.m3ddm_plus`` config keys)."""
    o = dict(options or {})
    seq = lambda v: tuple(float(x) for x in (v if isinstance(v, Sequence) and not isinstance(v, str)  # noqa: E731
                                            else str(v).split(",")))
    if name == "benchmark":
        if "mask_ratios" in o:
            o["mask_ratios"] = seq(o["mask_ratios"])
        return BenchmarkProtocol(**o)
    if name == "m3ddm-plus":
        if "crop_ratios" in o:
            o["crop_ratios"] = seq(o["crop_ratios"])
        if "target_ratio" in o:
            o["target_ratio"] = str(o["target_ratio"])
        return M3DDMPlusProtocol(**o)
    raise InputError(f"unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)}")


@dataclass(frozen=True)
class InpaintCase:
    """One inpainting case: ``frames`` uint8 ``(T, H, W, 3)`` ground truth, ``masks`` uint8
    ``(T, H, W)`` 0/1 (1 = removed), ``motion`` and ``area`` of the mask."""

    frames: np.ndarray
    masks: np.ndarray
    motion: str
    area: float


@dataclass(frozen=True)
class PredictionCase:
    """One prediction case: ``context`` uint8 ``(c, H, W, 3)`` given frames, ``target`` uint8
    ``(p, H, W, 3)`` the ground truth of the frames to predict."""

    context: np.ndarray
    target: np.ndarray


def inpaint_case(frames: np.ndarray, motion: str = "moving", area: float = 0.1, seed: int = 0) -> InpaintCase:
    """The inpainting case of a ground-truth clip (module docstring).

    Raises:
        InputError: bad frames, motion or area.
    """
    frames = check_frames(frames, "frames")
    if motion not in MOTIONS:
        raise InputError(f"motion={motion!r}; use one of {MOTIONS}")
    m = synthetic_masks(frames.shape[0], frames.shape[1:3], motion, area, seed)
    return InpaintCase(frames, m, motion, float(area))


def prediction_case(frames: np.ndarray, context: int, predict: int) -> PredictionCase:
    """Frames ``[0, c)`` as context, ``[c, c + p)`` as target.

    Raises:
        InputError: ``c`` or ``p`` < 1, or a clip shorter than ``c + p`` frames.
    """
    frames = check_frames(frames, "frames")
    for name, v in (("context", context), ("predict", predict)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name}={v!r} must be an integer >= 1 (frames)")
    if frames.shape[0] < context + predict:
        raise InputError(f"the clip has {frames.shape[0]} frames; context={context} + predict={predict} needs "
                         f"{context + predict}; use shorter splits or longer clips")
    return PredictionCase(frames[:context], frames[context:context + predict])


def temporal_consistency(pred: np.ndarray, gt: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """Per frame pair ``(t, t + 1)``: mean absolute difference, in levels (0..255), between the
    method's frame-to-frame change and the ground truth's, over the pixels masked in either frame
    (all pixels with ``masks=None``). 0 = the output changes over time exactly as the truth does;
    flicker inside the hole raises it. float64 ``(T - 1,)``; NaN for a pair with no masked pixel.

    Raises:
        InputError: shapes that differ, fewer than 2 frames.
    """
    pred, gt = check_frames(pred, "pred"), check_frames(gt, "gt")
    if pred.shape != gt.shape or pred.shape[0] < 2:
        raise InputError(f"pred {pred.shape} and gt {gt.shape} must have one shape with T >= 2")
    dp = np.diff(pred.astype(np.int16), axis=0)
    dg = np.diff(gt.astype(np.int16), axis=0)
    err = np.abs(dp - dg).mean(axis=3)  # (T-1, H, W)
    if masks is None:
        return err.reshape(err.shape[0], -1).mean(axis=1).astype(np.float64)
    m = np.asarray(masks).astype(bool)
    if m.shape != pred.shape[:3]:
        raise InputError(f"masks {m.shape} must be (T, H, W) = {pred.shape[:3]}")
    region = m[:-1] | m[1:]
    out = np.full(err.shape[0], np.nan)
    for t in range(err.shape[0]):
        if region[t].any():
            out[t] = float(err[t][region[t]].mean())
    return out
