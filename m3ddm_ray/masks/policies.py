"""Training mask policies: which pixels of a 16-frame clip the model must generate. Pure numpy.

Every policy draws, from a ``numpy.random.Generator``, one :class:`MaskDraw`: a ``uint8 (F, S, S)``
pixel mask (1 = generate, 0 = known, the convention of :func:`m3ddm_ray.geometry.pixel_mask`) and a
small dict of what was drawn (for logs and for the statistical tests). A frame whose mask is all 0 is
a *raw* frame: at inference such a position is a guide frame (its stored latent is the condition,
mask 0; :func:`m3ddm_ray.sampling.build_condition`).

Policies (names as in configs):

``m3ddm_plus``
    M3DDM+ (Murakawa & Tamaki, IWAIT 2026, arXiv 2601.11048, "uniform mask direction and width across
    all frames"): **one** mask for every masked frame of the clip. Mask ratio ``r ~ U(0.15, 0.75)``
    (fraction of the side that is generated); direction ``single`` (one of left/right/top/bottom
    takes the whole band ``r*S``), ``bi`` (left+right or top+bottom, ``r*S/2`` each) or ``four``
    (all four sides, ``r*S/2`` on each side of both axes) with p 0.3 / 0.55 / 0.15; frame case
    ``all`` (every frame masked), ``first_last`` (frames 0 and F-1 raw) or ``random`` (a uniform
    number ``k in 1..F-1`` of frames, chosen uniformly, raw) with weights 0.3 / 0.35 / 0.35.
``m3ddm``
    The original M3DDM training masks (Fan et al., ACM MM 2023, arXiv 2309.02119, §3.2) as M3DDM+
    describes them: "random mask directions and widths across frames" — the same direction and
    frame-case probabilities, but each masked frame draws its **own** direction, side and ratio.
    (The paper's exact per-case numbers could not be checked offline here; we use M3DDM+'s, which
    states that it only changes the across-frame sharing.)
``free_form``
    Per-frame free-form masks for inpainting: each frame gets its own random brush strokes
    (DeepFill v2 style, Yu et al., ICCV 2019, "free-form masks"): ``1..4`` strokes of ``2..6``
    segments, each a thick polyline of width ``S/16..S/6``; the mask ratio is not controlled, only
    observed.
``prediction``
    Video prediction: the first ``k ~ U{1..F-1}`` frames are raw, the remaining (future) frames are
    fully masked (every pixel 1).

A weighted mix is one config entry: ``{"mix": [{"name": "m3ddm_plus", "weight": 0.8}, {"name":
"prediction", "weight": 0.2}]}`` (:func:`make_policy`).

Global frames: :func:`mask_global_frames` masks a global frame only when it falls inside the clip
(M3DDM+'s rule), with the mask of that clip frame (or of the nearest clip frame when the clip is
strided and the global frame lies between two clip frames); global frames outside the clip stay raw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError

SIDES = ("left", "right", "top", "bottom")
DIRECTIONS = ("single", "bi", "four")
FRAME_CASES = ("all", "first_last", "random")

#: M3DDM+ defaults (arXiv 2601.11048); also used by the ``m3ddm`` policy.
M3DDM_PLUS_RATIO = (0.15, 0.75)
M3DDM_PLUS_DIRECTION_P = {"single": 0.3, "bi": 0.55, "four": 0.15}
M3DDM_PLUS_FRAME_CASE_P = {"all": 0.3, "first_last": 0.35, "random": 0.35}


@dataclass
class MaskDraw:
    """One draw of a policy.

    Attributes:
        mask: ``uint8 (F, S, S)``, 1 = generate, 0 = known; a frame that is all 0 is raw.
        info: what was drawn, e.g. ``{"policy": "m3ddm_plus", "direction": "bi", "ratio": 0.4,
            "frame_case": "first_last"}`` (per-frame lists for ``m3ddm``).
    """

    mask: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def raw_frames(self) -> np.ndarray:
        """``bool (F,)``: frames with nothing to generate (guide frames at inference)."""
        return ~self.mask.reshape(self.mask.shape[0], -1).any(axis=1)


def _check_probs(name: str, probs: Mapping[str, float], keys: Sequence[str]) -> dict[str, float]:
    unknown = sorted(set(probs) - set(keys))
    if unknown:
        raise InputError(f"{name}: unknown keys {unknown}; use {list(keys)}")
    p = {k: float(probs.get(k, 0.0)) for k in keys}
    if any(v < 0 or not np.isfinite(v) for v in p.values()) or sum(p.values()) <= 0:
        raise InputError(f"{name}={dict(probs)}: weights must be finite, >= 0 and not all 0")
    total = sum(p.values())
    return {k: v / total for k, v in p.items()}


def _check_ratio_range(ratio: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in ratio)
    except (TypeError, ValueError):
        raise InputError(f"ratio={ratio!r}: give [low, high], e.g. [0.15, 0.75]") from None
    if not 0.0 < lo <= hi < 1.0:
        raise InputError(f"ratio=[{lo}, {hi}]: need 0 < low <= high < 1 (fraction of the side generated)")
    return lo, hi


def _choice(rng: np.random.Generator, probs: Mapping[str, float]) -> str:
    keys = list(probs)
    return keys[int(rng.choice(len(keys), p=np.array([probs[k] for k in keys])))]


def border_mask(size: int, direction: str, ratio: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A ``uint8 (S, S)`` border mask of one direction case; returns ``(mask, sides)``.

    ``single``: one side drawn uniformly, band ``round(r*S)``; ``bi``: an axis drawn uniformly, the
    band ``round(r*S)`` split ``floor/ceil`` over its two sides; ``four``: both axes, each split the
    same way. At least one column stays known.
    """
    s = int(size)
    band = min(max(int(round(ratio * s)), 1), s - 1)
    m = np.zeros((s, s), np.uint8)
    if direction == "single":
        side = SIDES[int(rng.integers(4))]
        sl = {"left": np.s_[:, :band], "right": np.s_[:, s - band:], "top": np.s_[:band, :],
              "bottom": np.s_[s - band:, :]}[side]
        m[sl] = 1
        return m, side
    a, b = band // 2, band - band // 2
    if direction == "bi":
        axis = "horizontal" if rng.integers(2) == 0 else "vertical"
        if axis == "horizontal":
            m[:, :a], m[:, s - b:] = 1, 1
            return m, "left+right"
        m[:a, :], m[s - b:, :] = 1, 1
        return m, "top+bottom"
    if direction == "four":
        m[:, :a], m[:, s - b:], m[:a, :], m[s - b:, :] = 1, 1, 1, 1
        return m, "all"
    raise InputError(f"direction={direction!r}; use one of {DIRECTIONS}")


def _raw_frames(case: str, f: int, rng: np.random.Generator) -> np.ndarray:
    raw = np.zeros(f, bool)
    if case == "first_last":
        raw[[0, f - 1]] = True
    elif case == "random" and f > 1:
        k = int(rng.integers(1, f))  # 1..F-1 raw frames
        raw[rng.choice(f, size=k, replace=False)] = True
    return raw


class MaskPolicy:
    """Base class: ``policy(rng, num_frames, size) -> MaskDraw``."""

    name = "base"

    def __call__(self, rng: np.random.Generator, num_frames: int, size: int) -> MaskDraw:
        if num_frames < 1 or size < 2:
            raise InputError(f"num_frames={num_frames}, size={size}: need >= 1 frame and a side >= 2 pixels")
        return self.draw(rng, int(num_frames), int(size))

    def draw(self, rng: np.random.Generator, f: int, s: int) -> MaskDraw:  # pragma: no cover
        raise NotImplementedError


class M3DDMPlusPolicy(MaskPolicy):
    """M3DDM+ masks: one direction/ratio for the whole clip (see the module docstring for numbers)."""

    name = "m3ddm_plus"

    def __init__(self, ratio=M3DDM_PLUS_RATIO, direction_p=None, frame_case_p=None):
        self.ratio = _check_ratio_range(ratio)
        self.direction_p = _check_probs("direction_p", direction_p or M3DDM_PLUS_DIRECTION_P, DIRECTIONS)
        self.frame_case_p = _check_probs("frame_case_p", frame_case_p or M3DDM_PLUS_FRAME_CASE_P, FRAME_CASES)

    def draw(self, rng, f, s):
        ratio = float(rng.uniform(*self.ratio))
        direction = _choice(rng, self.direction_p)
        frame, sides = border_mask(s, direction, ratio, rng)
        case = _choice(rng, self.frame_case_p)
        mask = np.repeat(frame[None], f, axis=0)
        mask[_raw_frames(case, f, rng)] = 0
        return MaskDraw(mask, {"policy": self.name, "ratio": ratio, "direction": direction, "sides": sides,
                               "frame_case": case})


class M3DDMPolicy(M3DDMPlusPolicy):
    """Original M3DDM masks: the same cases, but each masked frame draws its own direction and ratio."""

    name = "m3ddm"

    def draw(self, rng, f, s):
        case = _choice(rng, self.frame_case_p)
        raw = _raw_frames(case, f, rng)
        mask = np.zeros((f, s, s), np.uint8)
        ratios, directions = [], []
        for i in range(f):
            ratio = float(rng.uniform(*self.ratio))
            direction = _choice(rng, self.direction_p)
            m, _ = border_mask(s, direction, ratio, rng)
            if not raw[i]:
                mask[i] = m
                ratios.append(ratio)
                directions.append(direction)
        return MaskDraw(mask, {"policy": self.name, "ratio": ratios, "direction": directions, "frame_case": case})


class FreeFormPolicy(MaskPolicy):
    """Per-frame free-form brush-stroke masks (inpainting); see the module docstring."""

    name = "free_form"

    def __init__(self, strokes=(1, 4), segments=(2, 6), width=(1 / 16, 1 / 6)):
        self.strokes, self.segments = tuple(int(x) for x in strokes), tuple(int(x) for x in segments)
        self.width = tuple(float(x) for x in width)
        if not (1 <= self.strokes[0] <= self.strokes[1] and 1 <= self.segments[0] <= self.segments[1]
                and 0 < self.width[0] <= self.width[1] < 1):
            raise InputError(f"free_form: strokes={strokes}, segments={segments}, width={width} must be "
                             f"increasing ranges (counts >= 1, widths as fractions of the side in (0, 1))")

    def draw(self, rng, f, s):
        import cv2

        mask = np.zeros((f, s, s), np.uint8)
        for i in range(f):
            for _ in range(int(rng.integers(self.strokes[0], self.strokes[1] + 1))):
                pts = [rng.integers(0, s, size=2)]
                for _ in range(int(rng.integers(self.segments[0], self.segments[1] + 1))):
                    step = rng.normal(0, s / 4, size=2)
                    pts.append(np.clip(pts[-1] + step, 0, s - 1).astype(int))
                w = max(1, int(round(rng.uniform(*self.width) * s)))
                cv2.polylines(mask[i], [np.array(pts, np.int32).reshape(-1, 1, 2)], False, 1, thickness=w)
        return MaskDraw(mask, {"policy": self.name, "ratio": float(mask.mean())})


class PredictionPolicy(MaskPolicy):
    """Future frames fully masked: frames ``0..k-1`` raw, ``k..F-1`` all 1, ``k ~ U{1..F-1}``."""

    name = "prediction"

    def draw(self, rng, f, s):
        k = int(rng.integers(1, f)) if f > 1 else 0
        mask = np.zeros((f, s, s), np.uint8)
        mask[k:] = 1
        return MaskDraw(mask, {"policy": self.name, "known_frames": k})


class MixturePolicy(MaskPolicy):
    """Draw a policy by weight, then its mask; ``info["policy"]`` names the one drawn."""

    name = "mix"

    def __init__(self, policies: Sequence[MaskPolicy], weights: Sequence[float]):
        if not policies or len(policies) != len(weights):
            raise InputError("mix: give one weight per policy, at least one policy")
        w = np.asarray(weights, float)
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise InputError(f"mix weights {list(weights)}: must be finite, >= 0 and not all 0")
        self.policies, self.weights = list(policies), w / w.sum()

    def draw(self, rng, f, s):
        return self.policies[int(rng.choice(len(self.policies), p=self.weights))].draw(rng, f, s)


POLICIES = {p.name: p for p in (M3DDMPlusPolicy, M3DDMPolicy, FreeFormPolicy, PredictionPolicy)}


def make_policy(spec: str | Mapping[str, Any] | MaskPolicy = "m3ddm_plus") -> MaskPolicy:
    """Build a policy from a config entry.

    ``"m3ddm_plus"``; ``{"name": "m3ddm_plus", "ratio": [0.2, 0.6]}`` (other keys are the policy's
    arguments); or ``{"mix": [{"name": ..., "weight": w, ...}, ...]}``.

    Raises:
        InputError: unknown policy name or bad arguments (the message lists the valid names).
    """
    if isinstance(spec, MaskPolicy):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise InputError(f"mask policy {spec!r}: give a name, a mapping with 'name', or {{'mix': [...]}}")
    if "mix" in spec:
        entries = spec["mix"]
        if not isinstance(entries, Sequence) or not entries:
            raise InputError("mask policy mix: give a non-empty list of {name, weight, ...}")
        pols, weights = [], []
        for e in entries:
            e = dict(e)
            weights.append(float(e.pop("weight", 1.0)))
            pols.append(make_policy(e))
        return MixturePolicy(pols, weights)
    args = dict(spec)
    name = args.pop("name", None)
    if name not in POLICIES:
        raise InputError(f"mask policy {name!r}: use one of {sorted(POLICIES)} or a 'mix'")
    try:
        return POLICIES[name](**args)
    except TypeError as exc:
        raise InputError(f"mask policy {name!r}: bad arguments {args} ({exc})") from None


def mask_global_frames(global_ids: Sequence[int], clip_ids: Sequence[int], clip_mask: np.ndarray) -> np.ndarray:
    """Masks of the global frames: ``uint8 (G, S, S)``.

    A global frame whose index lies inside the clip's span ``[clip_ids[0], clip_ids[-1]]`` takes the
    mask of that clip frame (of the nearest clip frame when it falls between two strided clip frames);
    one outside the span is raw (all 0). Source: M3DDM+ ("global frames masked only where they fall
    inside the clip").

    Args:
        global_ids: ``(G,)`` video frame indices of the global frames.
        clip_ids: ``(F,)`` increasing video frame indices of the clip frames.
        clip_mask: ``uint8 (F, S, S)``.
    """
    clip_ids = np.asarray(clip_ids)
    out = np.zeros((len(global_ids),) + clip_mask.shape[1:], np.uint8)
    lo, hi = clip_ids.min(), clip_ids.max()
    for j, g in enumerate(global_ids):
        if lo <= g <= hi:
            out[j] = clip_mask[int(np.argmin(np.abs(clip_ids - g)))]
    return out
