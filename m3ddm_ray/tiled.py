"""The tiled run of one clip of any task (outpaint, inpaint, extend): the generated region produced
at the working resolution by overlapping canvas-size tiles fused at every denoising step, over a
layout from the whole-canvas pass of the same task (MultiDiffusion, arXiv 2302.08113, §3; Follow-Your-Canvas, arXiv 2409.01055, §3: spatial
windows with a layout that keeps them one scene). Settings: :class:`m3ddm_ray.tiles.TilingSettings`
(``tiling.working_size``, ``tiling.overlap``, ``tiling.layout_strength``); the setting, its cost and
how to choose it: ``docs/tiling.md``.

(About 690 lines on purpose: the working clip, the units, the tiled outpainter's coarse / segment /
unit steps and the one-process run are one contract -- the job's stages call the same steps -- and
are tested as one, bit for bit against each other.)

:class:`TiledOutpainter` has the coarse / segment interface of
:class:`m3ddm_ray.pipeline.Outpainter`, so that an outpainting's run is cut where the whole-canvas
run is cut:

1. **Coarse** (:meth:`TiledOutpainter.run_coarse`): the layout's coarse (keyframe) pass at the
   canvas size ``S``; the keyframes' layout decoded, known pixels pasted back
   (:func:`m3ddm_ray.geometry.paste_back`); their **working canvases** (:func:`working_canvases`:
   the task's own canvases at the working size ``S_w`` -- an outpainting's canvas planned again
   with the same ratio rule -- the source frames placed on them, the layout upsampled to ``S_w``
   (bicubic) as the start image of the generated region); the tiled coarse pass on them.
2. **Segments** (:meth:`TiledOutpainter.run_segment`, one per
   :meth:`m3ddm_ray.plan.WindowPlan.segments`): the segment's layout windows at ``S``, the working
   canvases of its frame span, its tiled windows at ``S_w``. A tiled window's frame latent
   ``(1, 4, F, S_w/f, S_w/f)`` is denoised by :func:`m3ddm_ray.sampling_tiles.sample_tiled_windows`
   over the tiles of :func:`m3ddm_ray.tiles.plan_tiles` (the tiles wholly inside the known region
   are left out), fused with the ``"linear"`` (feathered) weights, starting from the layout noised
   to ``tiling.layout_strength`` (:func:`m3ddm_ray.tiles.layout_skip`). Guide frames are the stored
   working-resolution latents, cut per tile; the global frames stay the ``S``-pixel whole frames,
   every tile's context.
3. **Finalize**: the known pixels pasted back at ``S_w`` and, with ``output_size="source"``, the
   source frames at their own resolution (:func:`m3ddm_ray.pipeline.finalize_frames` with the
   segment's working clip).

:func:`run_tiled_task` runs the three in one process (:class:`TiledOutpaintPipeline`, the
interface of :class:`m3ddm_ray.pipeline.OutpaintPipeline`, which refuses settings with tiling on,
plus :meth:`TiledOutpaintPipeline.run_task`); the batch job's coarse and fine stages run 1 and 2
on actors. Step 2 runs per (segment, unit): a unit (:func:`m3ddm_ray.tiles.work_units`) is a set of
tile groups whose latent box no other unit's meets; only its box is encoded, denoised and decoded,
and :func:`assemble_units` puts a segment's units together (in one process :meth:`TiledOutpainter.run_units`,
in the job the finalize stage). The VAE is not local (GroupNorm, mid-block attention), so a box
encoded alone is not the crop of the whole frame's encode: the units define the output, the same
in both places. The three tasks take the same path: a row's working canvases are its task's
own (:func:`working_canvases`: an inpainting's per-row holes read from its mask source, an
extension's new rows), and the tiles are chosen once per clip by the task's
:meth:`~m3ddm_ray.task.Task.working_mask` (``tests/test_tiled_tasks.py``).

The layout of a keyframe (a frame of a coarse window) is its coarse latent decoded, the layout
of any other frame the output of the last window of its segment that contains it: each segment
then needs only the coarse stage's results, and a clip's output does not depend on where or in
which order its segments run (``tests/test_tiled.py``). With ``working_size`` equal to the canvas
size there is one tile and no layout pass: the run is the whole-canvas run, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from . import geometry
from .errors import InputError
from .pipeline import (ClipState, Holds, OutpaintPipeline, Outpainter, PreparedClip, finalize_clip,
                       generated_array, prepare_task, run_task)
from .plan import Segment
from .task import Outpaint, Task
from .tiles import FusionWeights, Tile, fusion_weights, layout_skip, plan_tiles, unit_weights, work_units

__all__ = ["FUSION", "SourceReader", "working_canvases", "working_clip", "clip_tiles", "clip_units", "unit_pixels",
           "assemble_units", "TiledState", "TiledOutpainter", "merge_segment", "run_tiled_task", "run_tiled_clip",
           "TiledOutpaintPipeline"]

#: Fusion weights of the tiled run (:func:`m3ddm_ray.tiles.fusion_weights`): feathered, so a tile's
#: edge cells count least where a neighbour overlaps them.
FUSION = "linear"


def working_canvases(clip: PreparedClip, rows: Sequence[int], frames: np.ndarray, masks: np.ndarray | None,
                     working_size: int, layout: np.ndarray | None) -> PreparedClip:
    """Working rows ``rows`` of ``clip`` prepared again by its task on an ``S_w × S_w`` canvas, with
    the layout as their start image.

    The task's own canvases at canvas size ``S_w`` (:meth:`m3ddm_ray.task.Task.plan`, ``canvases``,
    ``new_canvases``), then, with a layout, each row's :meth:`m3ddm_ray.task.Task.working_rows` with
    its layout canvas upsampled to ``S_w`` (bicubic):

    * outpaint: the canvas planned with the same ratio rule (:func:`m3ddm_ray.geometry.plan_canvas`),
      the border generated (one mask for every row);
    * inpaint: the frame on the ``1:1`` plan of ``S_w``; generated: each row's holes -- its fitted,
      dilated source mask resized conservatively into the frame's rectangle and grown to whole
      latent cells of the working canvas (:func:`m3ddm_ray.masks.frames.canvas_masks`);
    * extend: the known rows wholly known, the new rows' frame rectangle wholly generated;

    the ``1:1`` padding (inpaint, extend) is known at ``S_w`` and holds the layout's pixels (it is
    cropped away at the end). The start image is the layout where a row is generated and the known
    pixels elsewhere; ``mask`` is the whole clip's :meth:`m3ddm_ray.task.Task.working_mask` (what
    :func:`clip_tiles` selects tiles by: the same tiles for every segment), or without a layout the
    task's own :meth:`~m3ddm_ray.task.Task.mask` at ``S_w``. The global frames stay the clip's
    ``S``-pixel whole frames: every tile gets them as its context.

    Args:
        clip: the clip at the canvas size ``S`` (any task, any holds: its task, geometry, strides,
            ``total_frames`` and ``source_union`` are read).
        rows: working rows, ascending (a segment's span, keyframes, or every row).
        frames: uint8 ``(K, H, W, 3)`` the source frames of the known rows among ``rows`` (those
            below :meth:`~m3ddm_ray.task.Task.known_rows`), in row order.
        masks: uint8 ``(K, H, W)`` 0/1 their fitted source masks in row order
            (:meth:`~m3ddm_ray.task.Task.span_masks`), or None for a task without source masks.
        working_size: ``S_w`` in pixels (a multiple of 8).
        layout: uint8 ``(len(rows), S, S, 3)`` composited canvases of ``rows`` from the whole-canvas
            pass, or None (the task's own canvases at ``S_w``, its start images the TELEA fill).

    Returns:
        A :class:`~m3ddm_ray.pipeline.PreparedClip` holding ``rows`` (:attr:`Holds.CLIP` when they are
        every row, else :attr:`Holds.KEYFRAMES` with ``frame_ids`` = ``rows``), ``geom`` planned at
        ``S_w``, ``masked`` / ``inpainted`` ``(N, S_w, S_w, 3)``, ``mask`` ``(S_w, S_w)``,
        ``frame_masks`` ``(N, S_w, S_w)`` for a task with per-row masks, and the clip's global frames.

    Raises:
        InputError: frames or masks that do not fit the rows, or a layout of the wrong shape.
    """
    task, total, s = clip.task, clip.num_frames, clip.geom.canvas_size
    rows = [int(r) for r in rows]
    t = task.known_rows(total)
    k = sum(r < t for r in rows)
    h, w = clip.geom.source_hw
    frames = np.asarray(frames)
    if frames.shape != (k, h, w, 3) or (masks is not None and np.shape(masks) != (k, h, w)):
        raise InputError(f"working canvases of {len(rows)} rows ({k} known): source frames {frames.shape} and "
                         f"masks {None if masks is None else np.shape(masks)}; expected ({k}, {h}, {w}[, 3])")
    if layout is not None and layout.shape != (len(rows), s, s, 3):
        raise InputError(f"layout of shape {layout.shape}; expected ({len(rows)}, {s}, {s}, 3)")
    geom = task.plan(h, w, working_size)
    sw = working_size
    parts = [task.canvases(frames, masks, geom)] if k else []
    if k < len(rows):  # an extension's new rows: their start image is the layout (without one, row T - 1's canvas)
        last = parts[0][1][-1] if k and rows[k - 1] == t - 1 else np.zeros((sw, sw, 3), np.uint8)
        parts.append(task.new_canvases(len(rows) - k, last, geom))
    masked, inpainted = (np.concatenate([p[i] for p in parts]) for i in (0, 1))
    fm = None if task.one_mask else np.concatenate([p[2] for p in parts])
    if layout is None:
        mask = task.mask(geom, clip.source_union)
    else:
        up = np.stack([cv2.resize(np.ascontiguousarray(c), (sw, sw), interpolation=cv2.INTER_CUBIC) for c in layout])
        masked, inpainted, gen = task.working_rows(masked, fm, up, geom)
        fm = fm if gen is None else gen
        mask = task.working_mask(geom, clip.source_union)
    every = rows == list(range(total))
    return PreparedClip(task, clip.fps, geom, masked, inpainted, mask, clip.global_frames, clip.strides, total,
                        Holds.CLIP if every else Holds.KEYFRAMES, frame_ids=None if every else tuple(rows),
                        frame_masks=fm, source_union=clip.source_union)


def working_clip(clip: PreparedClip, frames: np.ndarray, working_size: int,
                 layout: np.ndarray | None) -> PreparedClip:
    """:func:`working_canvases` of every row of ``clip``: the whole clip prepared again by its task
    at ``S_w``.

    Args:
        clip: the prepared whole clip at the canvas size ``S`` (any task).
        frames: uint8 ``(T, H, W, 3)`` its source frames in time order.
        working_size: ``S_w`` in pixels.
        layout: uint8 ``(N, S, S, 3)`` composited canvases of every row (``N`` = ``clip.num_frames``),
            or None.

    Raises:
        InputError: as :func:`working_canvases`.
    """
    task, n = clip.task, clip.num_frames
    t = task.known_rows(n)
    ids = [task.row_of(r, t) for r in range(t)]  # the source frame of each known row (its own inverse)
    masks = task.span_masks(0, t, tuple(clip.geom.source_hw))
    frames = np.asarray(frames)
    if len(frames) != t:
        raise InputError(f"working clip: {len(frames)} source frames for a clip of {t} source frames")
    return working_canvases(clip, range(n), frames[ids], None if masks is None else masks[ids], working_size, layout)


def clip_tiles(clip: PreparedClip, overlap: int, canvas_size: int, factor: int) -> tuple[tuple[Tile, ...], FusionWeights]:
    """The tiles of a working clip's frame and their fusion weights (:data:`FUSION`).

    Args:
        clip: a working clip (:func:`working_clip`) or a canvas-size clip, of any task.
        overlap: ``tiling.overlap`` in pixels.
        canvas_size: the model's canvas size ``S`` (the tile side).
        factor: the VAE's spatial downsampling.

    Returns:
        ``(tiles, weights)``: :func:`m3ddm_ray.tiles.plan_tiles` over the ``S_w × S_w`` frame with the
        clip's mask as ``generated`` -- a tile is left out when no row of the clip generates a pixel
        in it (outpainting: when it lies wholly inside the known box; inpainting: where no frame has
        a hole) -- and their :func:`m3ddm_ray.tiles.fusion_weights`.
    """
    sw = clip.geom.canvas_size
    # a one-mask task's segment shell carries no mask: it is its task's mask of the geometry
    mask = clip.mask if clip.mask.shape == (sw, sw) else clip.task.mask(clip.geom, None)
    tiles = plan_tiles((sw, sw), (0, 0, 0, 0), canvas_size, overlap, factor, generated=mask)
    return tiles, fusion_weights(tiles, (sw, sw), factor, FUSION)


def clip_units(clip: PreparedClip, tiling, canvas_size: int, factor: int) -> tuple:
    """The units of work of a clip's working frame (:func:`m3ddm_ray.tiles.work_units` of the tiles
    :func:`clip_tiles` gives its working clip, chosen by the task's
    :meth:`~m3ddm_ray.task.Task.working_mask`), from the clip at the canvas size alone (no pixels: a
    segment shell will do), so the coarse stage can split a segment into its units.

    Args:
        clip: a clip of any task at the canvas size ``S`` (any holds).
        tiling: :class:`m3ddm_ray.tiles.TilingSettings` (on).
        canvas_size: the model's canvas size ``S`` (the tile side).
        factor: the VAE's spatial downsampling.

    Returns:
        ``((tile positions, latent box (y0, y1, x0, x1)), ...)`` of the working frame ``S_w × S_w``:
        one unit when ``working_size`` equals ``canvas_size``.
    """
    sw = int(tiling.working_size)
    geom = clip.task.plan(*clip.geom.source_hw, sw)
    tiles = plan_tiles((sw, sw), (0, 0, 0, 0), canvas_size, tiling.overlap, factor,
                       generated=clip.task.working_mask(geom, clip.source_union))
    return work_units(tiles, factor)


def unit_pixels(work: PreparedClip, state: "TiledState", frames: Sequence[int]) -> tuple:
    """``(box, pixels)`` of a unit's run (:meth:`TiledOutpainter.run_segment`): ``box`` the pixel box
    ``(y0, y1, x0, x1)`` of the working frame it generated (:attr:`TiledState.box`; None: the whole
    frame) and ``pixels`` uint8 ``(N, y1 - y0, x1 - x0, 3)``, its crop of the generated canvases of
    ``frames`` of the unit's working clip ``work``. Raises RuntimeError if a frame is missing."""
    gen = generated_array(work, state, frames)
    if state.box is None:
        return None, gen
    y0, y1, x0, x1 = state.box
    return state.box, np.ascontiguousarray(gen[:, y0:y1, x0:x1])


def assemble_units(base: np.ndarray, parts: Sequence[tuple]) -> np.ndarray:
    """A segment's generated canvases from its units' pixels (:func:`unit_pixels`).

    Args:
        base: uint8 ``(N, S_w, S_w, 3)``: the working clip's known canvases of the frames (what a
            pixel in no unit's box keeps: every generated pixel lies in a tile, so those are known
            pixels, which finalize pastes back anyway).
        parts: ``(box, pixels)`` per unit; boxes pairwise disjoint (:func:`m3ddm_ray.tiles.work_units`),
            ``box`` None for a unit that is the whole frame (then ``pixels`` is ``(N, S_w, S_w, 3)``).

    Returns:
        uint8 ``(N, S_w, S_w, 3)``: ``base`` with each unit's pixels in its box (a new array).

    Raises:
        InputError: a part whose pixels do not have its box's shape.
    """
    out = np.array(base, dtype=np.uint8, copy=True)
    for box, px in parts:
        y0, y1, x0, x1 = box if box is not None else (0, out.shape[1], 0, out.shape[2])
        if px.shape != (out.shape[0], y1 - y0, x1 - x0, 3):
            raise InputError(f"unit pixels of shape {px.shape} do not fit the box {box} of "
                             f"{out.shape[0]} frames")
        out[:, y0:y1, x0:x1] = px
    return out


def _source_masks(task: Task, frames: Sequence[int], hw: tuple[int, int]) -> np.ndarray | None:
    """uint8 ``(N, H, W)`` fitted source masks of source frames ``frames`` (ascending), one range read
    of the task's mask source per consecutive run; None for a task without source masks."""
    from .storage import consecutive_runs

    out = []
    for k, count in consecutive_runs(frames):
        m = task.span_masks(frames[k], frames[k] + count, hw)
        if m is None:
            return None
        out.append(m)
    return np.concatenate(out) if out else None


#: ``read(frames) -> uint8 (N, H, W, 3)``: source frames ``frames`` (ascending, time order) -- what
#: the tiled outpainter places on the working canvases (an outpainting's rows are its frames).
SourceReader = Callable[[Sequence[int]], np.ndarray]

#: Rows placed on working canvases per call of :func:`working_canvases` (bounds the source frames held).
_WORK_CHUNK = 16


@dataclass
class TiledState(ClipState):
    """What the tiled run hands from its coarse stage to its segments (numpy, Ray-serialisable).

    The inherited fields are the tiled diffusion's: ``stored`` float32 ``(4, S_w/f, S_w/f)`` latents
    at the working size, ``generated`` uint8 ``(S_w, S_w, 3)`` output canvases, ``global_latents``
    ``(G, 4, S/f, S/f)`` (the global frames stay ``S``-pixel whole frames), ``unet_seconds`` of
    both passes.

    Attributes:
        layout_stored: frame -> float32 ``(4, S/f, S/f)`` stored latent of the layout pass at the
            canvas size (the guides of its later windows).
        layout_frames: keyframe -> uint8 ``(S, S, 3)`` layout canvas of a coarse-window frame: the
            decoded coarse latent with the known pixels pasted back (the start image of that frame
            on every working canvas).
        work: the working clip of the segment last run (:meth:`TiledOutpainter.output_clip` takes
            it), else None.
        box: after a unit's run (:meth:`TiledOutpainter.run_segment`), the pixel box ``(y0, y1, x0,
            x1)`` of the working frame whose pixels ``generated`` holds (0 outside it) and whose latent
            cells ``stored`` holds; None: the whole frame.
    """

    layout_stored: dict[int, np.ndarray] = field(default_factory=dict)
    layout_frames: dict[int, np.ndarray] = field(default_factory=dict)
    work: PreparedClip | None = None
    box: tuple[int, int, int, int] | None = None

    def for_segment(self, segment: Segment) -> "TiledState":
        """What ``segment`` needs: the global latents, both passes' stored latents of its
        ``coarse_guides`` and the layout canvases of the keyframes in its frame span."""
        lo, hi = segment.frame_range
        return TiledState(global_latents=self.global_latents,
                          stored={f: self.stored[f] for f in segment.coarse_guides},
                          windows_done=list(self.windows_done),
                          layout_stored={f: self.layout_stored[f] for f in segment.coarse_guides},
                          layout_frames={f: v for f, v in self.layout_frames.items() if lo <= f < hi})


class TiledOutpainter(Outpainter):
    """The tiled run with the coarse / segment interface of :class:`~m3ddm_ray.pipeline.Outpainter`,
    so that one process (:func:`run_tiled_clip`) and the batch job's stages run it the same way.

    * :meth:`run_coarse` (the clip at the canvas size ``S``): the layout's coarse pass at ``S``,
      its keyframes decoded and pasted (:attr:`TiledState.layout_frames`), the keyframes' working
      canvases (:func:`working_canvases` at ``S_w``) and the tiled coarse pass on them.
    * :meth:`run_segment` (one segment, :meth:`~m3ddm_ray.plan.WindowPlan.segments`): the segment's
      layout windows at ``S``, the working canvases of its frame span (the layout of a coarse-window
      frame is its :attr:`TiledState.layout_frames` canvas, of any other frame the output of the
      last window of this segment containing it), and its tiled windows at ``S_w``, each window's
      frame latent denoised as fused tiles (:meth:`sample_group`,
      :func:`m3ddm_ray.sampling_tiles.sample_tiled_windows`), starting from the layout noised to
      ``tiling.layout_strength`` (:func:`m3ddm_ray.tiles.layout_skip`).

    A segment reads only the coarse state (:meth:`TiledState.for_segment`) and its own windows, so
    its output does not depend on where, in which order or beside which other segments it runs.
    With ``working_size`` equal to the canvas size there is no layout pass: the tiled windows (one
    tile) run on the clip itself, which is the whole-canvas run bit for bit.

    Args:
        unet, vae, settings, scheduler_config: as :class:`~m3ddm_ray.pipeline.Outpainter`;
            ``settings.tiling`` must be on.
        source: :data:`SourceReader` of the clip's source frames (needed unless ``working_size``
            equals the canvas size).

    Attributes:
        layout: the plain :class:`~m3ddm_ray.pipeline.Outpainter` of the layout pass (the same
            models, scheduler and token cache).
        skip: schedule steps the tiled windows leave out (0 without a layout pass).
        tiles_used: tiles of the last window group run (for reports).

    Raises:
        InputError: tiling off, or tiling settings that do not fit the model
            (:meth:`m3ddm_ray.tiles.TilingSettings.check_for`).
    """

    def __init__(self, unet, vae, settings, scheduler_config=None, source: SourceReader | None = None):
        super().__init__(unet, vae, settings, scheduler_config)
        if not settings.tiling.enabled:
            raise InputError("the tiled outpainter needs tiling.working_size (the tiled mode is off)")
        self.tiling = settings.tiling.check_for(settings.canvas_size, self.latent_factor)
        self.layered = self.tiling.working_size != settings.canvas_size
        n = settings.sampler.num_inference_steps
        self.skip = layout_skip(n, self.tiling.layout_strength) if self.layered else 0
        self.layout = Outpainter(unet, vae, settings, scheduler_config)
        self.layout.scheduler, self.layout.tokens = self.scheduler, self.tokens
        self.source = source
        self._plans: dict = {}
        self.tiles_used: tuple[Tile, ...] = ()
        self._unit: tuple | None = None  # (tile positions, pixel box or None) while a unit's windows run

    def units(self, clip: PreparedClip) -> tuple:
        """:func:`clip_units` of the canvas-size outpainting ``clip`` with this run's settings."""
        return clip_units(clip, self.tiling, self.settings.canvas_size, self.latent_factor)

    def _plan(self, clip: PreparedClip) -> tuple[tuple[Tile, ...], FusionWeights]:
        f = self.latent_factor
        mask = clip.mask if clip.mask.shape == (clip.geom.canvas_size,) * 2 else None
        key = (clip.geom, None if mask is None else mask.tobytes(), self.tiling.overlap, self.settings.canvas_size, f)
        if key not in self._plans:
            self._plans[key] = clip_tiles(clip, self.tiling.overlap, self.settings.canvas_size, f)
        return self._plans[key]

    def sample_group(self, clip: PreparedClip, inputs, on_step=None):
        """Denoise one group of windows of the working ``clip`` as fused tiles, window after window
        (during a unit's run only the unit's tiles, :func:`m3ddm_ray.tiles.unit_weights`)."""
        from .sampling_tiles import sample_tiled_windows

        f = self.latent_factor
        tiles, weights = self._plan(clip)
        if self._unit is not None:
            tiles, weights = unit_weights(tiles, weights, self._unit[0], f)
        self.tiles_used = tiles
        return sample_tiled_windows(self.unet, self.scheduler, inputs, tiles, weights, f, self.settings.sampler,
                                    skip=self.skip, on_step=on_step)

    def latents_for(self, clip: PreparedClip, state: ClipState):
        """As :meth:`Outpainter.latents_for`; during a unit's run only the unit's box is encoded
        (:class:`m3ddm_ray.latents.ClipLatents` ``box``)."""
        latents = super().latents_for(clip, state)
        if self._unit is not None:
            latents.box = self._unit[1]
        return latents

    def _decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        """Decode latents ``(N, 4, h, w)`` to uint8 ``(h·f, w·f, 3)`` canvases; during a unit's run only
        its box's latent cells, placed into zeros of the whole canvas."""
        box = None if self._unit is None else self._unit[1]
        if box is None:
            return super()._decode(latents)
        f = self.latent_factor
        y0, y1, x0, x1 = box
        side = latents.shape[-1] * f
        out = []
        for img in super()._decode(latents[..., y0 // f:y1 // f, x0 // f:x1 // f]):
            full = np.zeros((side, side, 3), np.uint8)
            full[y0:y1, x0:x1] = img
            out.append(full)
        return out

    def _run_unit(self, work: PreparedClip, windows, state: "TiledState", unit: int, **kw) -> None:
        """The tiled windows of one unit (:func:`m3ddm_ray.tiles.work_units` of ``work``'s tiles) on
        ``work``: its box encoded, its tiles denoised, its box decoded; sets ``state.box``."""
        f = self.latent_factor
        units = work_units(self._plan(work)[0], f)
        if not 0 <= int(unit) < len(units):
            raise InputError(f"tile unit {unit!r}: the working frame has {len(units)} units (0 .. {len(units) - 1})")
        positions, (y0, y1, x0, x1) = units[int(unit)]
        sw = work.geom.canvas_size
        box = None if (y0 * f, y1 * f, x0 * f, x1 * f) == (0, sw, 0, sw) else (y0 * f, y1 * f, x0 * f, x1 * f)
        self._unit = (positions, box)
        try:
            self.run_windows(work, windows, state, **kw)
        finally:
            self._unit = None
        state.box = box

    def _read(self, rows: Sequence[int]) -> np.ndarray:
        if self.source is None:
            raise InputError("the tiled outpainter needs the source frames (source=...) to place them on the "
                             "working canvases; TiledOutpaintPipeline and the batch job give them")
        return self.source(rows)

    def _working(self, clip: PreparedClip, rows: Sequence[int], layout: np.ndarray, **where) -> PreparedClip:
        """The working canvases of ``rows`` (:func:`working_canvases`, ``_WORK_CHUNK`` rows of source
        frames and masks at a time), holding what ``where`` says (``holds``, ``first_frame``,
        ``segment``, ``frame_ids``)."""
        task = clip.task
        t = task.known_rows(clip.num_frames)
        hw = tuple(clip.geom.source_hw)
        parts = []
        for i in range(0, len(rows), _WORK_CHUNK):
            chunk = [int(r) for r in rows[i:i + _WORK_CHUNK]]
            ids = [task.row_of(r, t) for r in chunk if r < t]  # the known rows' source frames (its own inverse)
            asc = sorted(ids)
            at = {f: k for k, f in enumerate(asc)}
            order = [at[f] for f in ids]
            frames = self._read(asc)[order] if asc else np.zeros((0,) + hw + (3,), np.uint8)
            masks = _source_masks(task, asc, hw)
            parts.append(working_canvases(clip, chunk, frames, None if masks is None else masks[order],
                                          self.tiling.working_size, layout[i:i + _WORK_CHUNK]))
        fm = None if task.one_mask else np.concatenate([p.frame_masks for p in parts])
        return replace(parts[0], masked=np.concatenate([p.masked for p in parts]),
                       inpainted=np.concatenate([p.inpainted for p in parts]), frame_masks=fm, **where)

    def run_coarse(self, clip: PreparedClip, **kw) -> TiledState:
        """Coarse stage of the tiled run (the class docstring): ``clip`` at the canvas size, holding
        the coarse windows' canvases (whole clip, keyframes, or their scratch file)."""
        state = TiledState()
        coarse = clip.plan.coarse
        if not self.layered:
            return self.run_windows(clip, coarse, state, **kw)
        lay = ClipState()
        self.layout.latents_for(clip, lay)  # the global latents, then in C order: the VAE's output may be
        # channels-last, which a pickled copy (a job row) is not, and the UNet rounds the two layouts
        # differently; every pass of every segment reads the same C-order array
        lay.global_latents = np.ascontiguousarray(lay.global_latents)
        self.layout.run_windows(clip, coarse, lay, **kw)
        state.global_latents, state.layout_stored, state.unet_seconds = lay.global_latents, lay.stored, lay.unet_seconds
        if coarse:
            kf = sorted({f for w in coarse for f in w.frame_ids})
            decoded = np.stack(self._decode(torch.from_numpy(np.stack([lay.stored[f] for f in kf]))))
            pasted = geometry.paste_back(decoded, clip.known_canvases(kf), clip.masks_of(kf),
                                         mode=self.settings.paste_mode)
            state.layout_frames = dict(zip(kf, pasted))
            work = self._working(clip, kf, pasted, holds=Holds.KEYFRAMES, frame_ids=tuple(kf))
            self.run_windows(work, coarse, state, **kw)
        return state

    def run_segment(self, clip: PreparedClip, segment: Segment, state: TiledState, unit: int = 0,
                    **kw) -> TiledState:
        """Fine work of one (segment, unit) (the class docstring), guided by ``state``
        (:meth:`TiledState.for_segment` of the coarse stage's). ``clip`` is the clip at the canvas
        size holding the segment's canvases (its :meth:`~m3ddm_ray.prepare.PreparedClip.segment_slice`,
        filled shell, or the whole clip). ``unit``: which of :meth:`units` (the tile groups whose
        boxes are disjoint, :func:`m3ddm_ray.tiles.work_units`): the segment's layout windows, then
        the tiled windows of that unit only -- its box of every canvas encoded, its tiles denoised on
        the frame latent, its box decoded. Afterwards ``state.generated`` holds the working-size
        output canvases of ``segment.output_frames`` (the unit's box; 0 outside it, ``state.box``),
        and ``state.work`` the segment's working clip. :func:`assemble_units` puts the units of a
        segment together.

        Raises:
            InputError: ``unit`` out of range.
        """
        windows = [clip.plan.windows[i] for i in segment.windows]
        part = clip if clip.segment == segment.index else clip.segment_slice(segment)
        if not self.layered:
            self._run_unit(part, windows, state, unit, **kw)
            state.work = part
            return state
        lay = ClipState(global_latents=state.global_latents,
                        stored={f: state.layout_stored[f] for f in segment.coarse_guides})
        last: dict[int, torch.Tensor] = {}

        def keep(window, x):  # the last window of this segment containing a frame gives its layout
            for k, f in enumerate(window.frame_ids):
                last[f] = x[:, k]

        self.layout.run_windows(part, windows, lay, on_window=keep, **kw)
        lo, hi = segment.frame_range
        rows = list(range(lo, hi))
        made = [f for f in rows if f not in state.layout_frames]
        raw = {f: lay.generated[f] for f in made if f in lay.generated}
        todo = [f for f in made if f not in raw and f in last]
        if todo:
            raw.update(zip(todo, self._decode(torch.stack([last[f] for f in todo]))))
        loose = [f for f in made if f not in raw]  # in the span, in none of its windows: never read
        if loose:
            raw.update(zip(loose, part.canvases(part.rows(loose))[1]))
        got = [f for f in made if f not in loose]
        layout = dict(state.layout_frames)
        if got:
            pasted = geometry.paste_back(np.stack([raw[f] for f in got]), part.known_canvases(got),
                                         part.masks_of(got), mode=self.settings.paste_mode)
            layout.update(zip(got, pasted))
        layout.update((f, raw[f]) for f in loose)
        work = self._working(part, rows, np.stack([layout[f] for f in rows]), holds=Holds.SPAN, first_frame=lo,
                             segment=segment.index, frame_ids=None)
        self._run_unit(work, windows, state, unit, **kw)
        state.unet_seconds += lay.unet_seconds
        state.work = work
        return state

    def run_fine(self, clip: PreparedClip, state: TiledState, unit: int = 0, **kw) -> TiledState:
        """The (segment, ``unit``) of a segment's clip (:meth:`run_segment`); for a whole clip every
        segment with all its units (:meth:`run_units`), each from its own
        :meth:`TiledState.for_segment` (as the batch job runs them), merged into ``state``;
        ``state.work`` is then the working clip of the last segment."""
        segs = clip.plan.segments()
        if clip.segment is not None:
            return self.run_segment(clip, segs[clip.segment], state, unit, **kw)
        for seg in segs:
            sub = self.run_units(clip, seg, state.for_segment(seg), **kw)
            merge_segment(state, sub)
            state.work = sub.work
        return state

    def run_units(self, clip: PreparedClip, segment: Segment, state: TiledState, **kw) -> TiledState:
        """Every unit of ``segment`` (:meth:`units`), each from its own copy of ``state`` (the
        segment's :meth:`TiledState.for_segment`) as the batch job runs them, put together: returns a
        state whose ``generated`` holds the segment's output canvases (:func:`assemble_units` on the
        working clip's known canvases), ``stored`` every unit's latent box, ``work`` the segment's
        working clip and ``unet_seconds`` the units' sum."""
        rows = list(segment.output_frames)
        parts, out = [], None
        for u in range(len(self.units(clip))):
            sub = self.run_segment(clip, segment, replace(state, stored=dict(state.stored), generated={},
                                                          windows_done=list(state.windows_done)), u, **kw)
            parts.append(unit_pixels(sub.work, sub, rows))
            if out is None:
                out = replace(sub, generated={}, stored=dict(sub.stored), box=None)
            else:
                out.unet_seconds += sub.unet_seconds
                out.work = sub.work
                f = self.latent_factor
                y0, y1, x0, x1 = (v // f for v in sub.box)
                for fr, z in sub.stored.items():
                    if fr in out.stored and fr not in state.stored:
                        out.stored[fr] = out.stored[fr].copy()
                        out.stored[fr][:, y0:y1, x0:x1] = z[:, y0:y1, x0:x1]
        out.generated = dict(zip(rows, assemble_units(out.work.known_canvases(rows), parts)))
        return out

    def output_clip(self, clip: PreparedClip, state: TiledState) -> PreparedClip:
        """The clip whose geometry ``state.generated`` has: the working clip of the last segment run
        (taken out of ``state``, so that it is not carried twice), or ``clip`` when none ran."""
        work, state.work = state.work, None
        return clip if work is None else work


def merge_segment(state: ClipState, sub: ClipState) -> ClipState:
    """Add a segment's results to the clip's ``state``: its generated canvases, the stored latents of
    frames ``state`` has none of, its UNet seconds. Returns ``state``."""
    state.generated.update(sub.generated)
    state.stored.update({f: v for f, v in sub.stored.items() if f not in state.stored})
    state.unet_seconds += sub.unet_seconds
    return state


def run_tiled_task(outpainter: Outpainter, frames: np.ndarray, fps: float, task: Task,
                   progress: bool = False) -> tuple[np.ndarray, PreparedClip, ClipState]:
    """Run ``task`` (outpaint, inpaint or extend, :mod:`m3ddm_ray.task`) of ``frames`` in the tiled mode.

    :meth:`TiledOutpainter.run_coarse`, then every segment (all its units) from its own
    :meth:`TiledState.for_segment` and its output frames finalized from its working clip -- the
    batch job's stages in one process (a short clip has one segment), the same for the three tasks;
    the pieces in the task's order (:meth:`~m3ddm_ray.task.Task.piece_position`: a backward
    extension's last segment first).

    Args:
        outpainter: holds the models, the scheduler and the settings (``settings.tiling.enabled``).
        frames: uint8 ``(T, H, W, 3)`` RGB source frames.
        fps: source frame rate (> 0).
        task: the :class:`~m3ddm_ray.task.Task`.
        progress: a tqdm bar of the UNet steps.

    Returns:
        ``(output, working clip, tiled state)``: the output as the task's finalize gives it from the
        ``S_w`` canvases (:meth:`m3ddm_ray.task.Task.finalize`): an outpainting uint8
        ``(T, H', W', 3)`` (the crop of the ``S_w`` composite, or with ``output_size="source"`` the
        source frames at their resolution in the upscaled working composite), an inpainting
        ``(T, H, W, 3)`` (the source pixels exactly outside the mask), an extension
        ``(T + n, H, W, 3)`` (the known frames exactly the source). The working clip is the
        segment's with one segment; with several it holds every row's known canvas and mask at
        ``S_w`` (``masked``, ``frame_masks``; ``inpainted`` left empty). The state holds every frame's generated
        canvas and the tiled stored latents.

    Raises:
        InputError: tiling off, or tiling settings that do not fit the model
            (:meth:`m3ddm_ray.tiles.TilingSettings.check_for`), or bad frames / fps / ratio.
    """
    from .pipeline import finalize_frames

    s = outpainter.settings
    if not s.tiling.enabled:
        raise InputError("the tiled run needs tiling.working_size (the tiled mode is off)")
    clip = prepare_task(frames, fps, task, s)
    if clip.passthrough:
        return finalize_clip(clip, None, s, frames), clip, ClipState()
    tiled = TiledOutpainter(outpainter.unet, outpainter.vae, s, source=lambda rows: frames[np.asarray(rows)])
    tiled.scheduler = tiled.layout.scheduler = outpainter.scheduler
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit="step", desc=f"{task.name} {clip.ratio} tiled at {s.tiling.working_size} px")
    kw = {} if bar is None else {"on_step": lambda i, n: bar.update(1)}
    state = tiled.run_coarse(clip, **kw)
    outs, works = {}, []
    segs = clip.plan.segments()
    for seg in segs:
        sub = tiled.run_units(clip, seg, state.for_segment(seg), **kw)
        work = tiled.output_clip(clip, sub)
        rows = list(seg.output_frames)
        a, b = clip.task.source_range(rows[0], rows[-1] + 1, clip.num_frames)
        source = frames[a:b] if clip.task.needs_source(s) and b > a else None
        outs[task.piece_position(seg.index, len(segs))] = finalize_frames(work, generated_array(work, sub, rows), s,
                                                                          source, rows).frames
        works.append((rows, work))
        merge_segment(state, sub)
    if bar is not None:
        bar.close()
    if len(works) == 1:
        work = works[0][1]
    else:
        first = works[0][1]
        masked = np.zeros((clip.num_frames,) + first.masked.shape[1:], np.uint8)
        fm = None if task.one_mask else np.zeros((clip.num_frames,) + first.masked.shape[1:3], np.uint8)
        for rows, w in works:
            masked[rows] = w.known_canvases(rows)
            if fm is not None:
                fm[rows] = w.masks_of(rows)
        work = replace(first, masked=masked, inpainted=masked[:0], frame_masks=fm, holds=Holds.CLIP, first_frame=0,
                       segment=None)
    return np.concatenate([outs[k] for k in sorted(outs)]), work, state


def run_tiled_clip(outpainter: Outpainter, frames: np.ndarray, fps: float, ratio,
                   progress: bool = False) -> tuple[np.ndarray, PreparedClip, ClipState]:
    """:func:`run_tiled_task` of an outpainting of ``frames`` (uint8 ``(T, H, W, 3)``) to ``ratio``
    (``"9:16"`` or :class:`m3ddm_ray.geometry.Ratio`); returns ``(output uint8 (T, H', W', 3),
    working clip, tiled state)``. Raises InputError as :func:`run_tiled_task`."""
    return run_tiled_task(outpainter, frames, fps, Outpaint(geometry.parse_ratio(ratio)), progress)


class TiledOutpaintPipeline(OutpaintPipeline):
    """:class:`~m3ddm_ray.pipeline.OutpaintPipeline` whose clips run in the tiled mode when
    ``settings.tiling.working_size`` is set (:func:`run_tiled_clip`), and exactly as the plain
    pipeline when it is None.

    Example::

        s = OutpaintSettings(output_size="source", tiling=TilingSettings(working_size=512))
        pipe = TiledOutpaintPipeline.from_pretrained(settings=s)
        outs = pipe(frames, fps=25.0, ratios="9:16")     # {"9:16": (T, H', W', 3) uint8}
        clean = pipe.run_task(frames, 25.0, Inpaint(MaskArray(masks), dilate=4))  # (T, H, W, 3) uint8
    """

    def with_settings(self, **changes) -> "TiledOutpaintPipeline":
        """A tiled pipeline sharing the loaded models with some settings changed."""
        new = object.__new__(TiledOutpaintPipeline)
        new.settings = replace(self.settings, **changes)
        new.outpainter = Outpainter(self.outpainter.unet, self.outpainter.vae, new.settings)
        return new

    def run_clip(self, frames: np.ndarray, fps: float, ratio, progress: bool = False):
        """As :meth:`OutpaintPipeline.run_clip`; tiled when ``settings.tiling`` is on (then the
        returned clip and state are the working clip's, :func:`run_tiled_clip`)."""
        if not self.settings.tiling.enabled:
            return super().run_clip(frames, fps, ratio, progress)
        return run_tiled_clip(self.outpainter, frames, fps, ratio, progress)

    def run_task(self, frames: np.ndarray, fps: float, task: Task, progress: bool = False) -> np.ndarray:
        """Any task (:mod:`m3ddm_ray.task`: outpaint, inpaint, extend) of ``frames`` (uint8
        ``(T, H, W, 3)``): tiled when ``settings.tiling`` is on (:func:`run_tiled_task`), else the
        whole-canvas run (:func:`m3ddm_ray.pipeline.run_task`). Returns the task's output frames
        (uint8 ``(N, H', W', 3)``). Raises InputError for bad frames, fps, settings or task inputs."""
        if not self.settings.tiling.enabled:
            return run_task(self.outpainter, frames, fps, task)
        return run_tiled_task(self.outpainter, frames, fps, task, progress)[0]
