"""The tiled run of one clip of any task (outpaint, inpaint, extend) in one process: the generated
region produced at the working resolution by overlapping canvas-size tiles fused at every denoising
step, over a layout from the whole-canvas run of the same task (MultiDiffusion, arXiv 2302.08113, §3;
Follow-Your-Canvas, arXiv 2409.01055, §3: spatial windows with a layout that keeps them one scene).
Settings: :class:`m3ddm_ray.tiles.TilingSettings` (``tiling.working_size``, ``tiling.overlap``,
``tiling.layout_strength``); the setting, its cost and how to choose it: ``docs/tiling.md``.

:class:`TiledOutpaintPipeline` is :class:`m3ddm_ray.pipeline.OutpaintPipeline` with this run
(the plain pipeline refuses settings with tiling on), plus :meth:`TiledOutpaintPipeline.run_task`
for any task. Steps (:func:`run_tiled_task`; :func:`run_tiled_clip` for an outpainting):

1. **Layout**: the whole-canvas run of the task (coarse + fine passes at the canvas size ``S``), its
   known pixels pasted back with every row's mask (:func:`m3ddm_ray.geometry.paste_back`).
2. **Working clip** (:func:`working_clip`): the task's own preparation at canvas size ``S_w``
   (:meth:`m3ddm_ray.task.Task.plan`, ``canvases``, ``mask`` at ``S_w``: an outpainting's canvas
   planned with the same ratio rule; an inpainting's frame on the ``1:1`` plan with its masks
   mapped onto it; an extension's new rows wholly generated), and the layout upsampled to ``S_w``
   (bicubic) as the start image where each row's mask is 1. The global frames stay the ``S``-pixel
   whole frames: every tile gets them as its context.
3. **Tiled diffusion**: the same window plan (coarse keyframes, then the fine windows with their
   guide frames, :class:`m3ddm_ray.pipeline.Outpainter`) on the working clip; each window's frame
   latent ``(1, 4, F, S_w/f, S_w/f)`` is denoised by :func:`m3ddm_ray.sampling_tiles.sample_tiled_windows`
   over the tiles of :func:`clip_tiles` (a tile is left out when no row of the clip generates a
   pixel in it), fused with the ``"linear"`` (feathered) weights, starting from the layout noised
   to ``tiling.layout_strength`` (:func:`m3ddm_ray.tiles.layout_skip`). Each tile gets its crop of
   every position's latent mask (per-row masks for inpainting and extension) and of the guide
   frames' stored working-resolution latents.
4. **Finalize**: the task's finalize (:meth:`m3ddm_ray.task.Task.finalize`) with the working clip's
   geometry: known pixels pasted back at ``S_w``, and the source pixels at their own resolution
   (outpainting with ``output_size="source"``, inpainting, extension).

With ``working_size`` equal to the canvas size there is one tile and no layout pass: the run is
the whole-canvas run of the task, bit for bit (``tests/test_tiled.py``, ``tests/test_tiled_tasks.py``).
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from . import geometry
from .errors import InputError
from .pipeline import (ClipState, Holds, OutpaintPipeline, OutpaintSettings, Outpainter, PreparedClip, finalize_clip,
                       generated_array, prepare_task, run_task)
from .task import Outpaint, Task
from .tiles import FusionWeights, Tile, fusion_weights, layout_skip, plan_tiles

__all__ = ["FUSION", "working_clip", "clip_tiles", "TiledOutpainter", "run_tiled_task", "run_tiled_clip",
           "TiledOutpaintPipeline"]

#: Fusion weights of the tiled run (:func:`m3ddm_ray.tiles.fusion_weights`): feathered, so a tile's
#: edge cells count least where a neighbour overlaps them.
FUSION = "linear"


def working_clip(clip: PreparedClip, frames: np.ndarray, working_size: int,
                 layout: np.ndarray | None) -> PreparedClip:
    """``clip`` prepared again by its task on an ``S_w × S_w`` canvas, with the layout as its start image.

    The task's own preparation at canvas size ``S_w`` (:func:`m3ddm_ray.prepare.prepare_task`:
    :meth:`m3ddm_ray.task.Task.plan`, ``canvases``, ``new_canvases`` at ``S_w``), then, with a
    layout, each row's :meth:`m3ddm_ray.task.Task.working_rows` with its layout canvas upsampled
    to ``S_w`` (bicubic):

    * outpaint: the canvas planned with the same ratio rule (:func:`m3ddm_ray.geometry.plan_canvas`),
      the border generated (one mask for every row);
    * inpaint: the frame on the ``1:1`` plan of ``S_w``; generated: each row's holes -- its fitted,
      dilated source mask resized conservatively into the frame's rectangle and grown to whole
      latent cells of the working canvas (:func:`m3ddm_ray.masks.frames.canvas_masks`);
    * extend: the known rows wholly known, the new rows' frame rectangle wholly generated;

    the ``1:1`` padding (inpaint, extend) is known at ``S_w`` and holds the layout's pixels (it is
    cropped away at the end). The start image is the layout where a row is generated and the known
    pixels elsewhere; ``mask`` is the union of the rows' masks (what :func:`clip_tiles` selects
    tiles by). The global frames stay the clip's ``S``-pixel whole frames: every tile gets them as
    its context.

    Args:
        clip: the prepared whole clip at the canvas size ``S`` (any task; not a segment slice).
        frames: uint8 ``(T, H, W, 3)`` source frames in time order.
        working_size: ``S_w`` in pixels (a multiple of 8).
        layout: uint8 ``(N, S, S, 3)`` composited canvases of every working row (``N`` =
            ``clip.num_frames``) from the whole-canvas run, or None (the task's own preparation at
            ``S_w``, its start images the TELEA fill).

    Returns:
        A :class:`~m3ddm_ray.pipeline.PreparedClip` with ``geom`` planned at ``S_w``, ``masked`` /
        ``inpainted`` ``(N, S_w, S_w, 3)``, ``mask`` ``(S_w, S_w)``, ``frame_masks``
        ``(N, S_w, S_w)`` for a task with per-row masks, and the clip's global frames.

    Raises:
        InputError: a segment slice or keyframes clip, frames or masks that do not fit the task,
            or a layout of the wrong shape.
    """
    if clip.holds is not Holds.CLIP or clip.segment is not None:
        raise InputError("the tiled mode runs whole clips in one process (not segment slices or keyframe "
                         "clips); set tiling.working_size: null for those")
    s, n = clip.geom.canvas_size, clip.num_frames
    if layout is not None and layout.shape != (n, s, s, 3):
        raise InputError(f"layout of shape {layout.shape}; expected ({n}, {s}, {s}, 3)")
    # one global frame is made at S_w and dropped: the tiles keep the clip's S-pixel global frames
    at_sw = OutpaintSettings(canvas_size=working_size, strides=clip.strides, num_global_frames=1)
    work = replace(prepare_task(frames, clip.fps, clip.task, at_sw), global_frames=clip.global_frames)
    if layout is None:
        return work
    union = None
    for i in range(n):  # row by row: one upsampled layout canvas at a time
        up = cv2.resize(np.ascontiguousarray(layout[i]), (working_size, working_size), interpolation=cv2.INTER_CUBIC)
        m, start, masks = clip.task.working_rows(work.masked[i:i + 1], work.window_masks([i]), up[None], work.geom)
        work.masked[i], work.inpainted[i] = m[0], start[0]
        if masks is not None:
            work.frame_masks[i] = masks[0]
            union = masks[0].copy() if union is None else np.maximum(union, masks[0])
    return work if union is None else replace(work, mask=union)


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


class TiledOutpainter(Outpainter):
    """An :class:`~m3ddm_ray.pipeline.Outpainter` whose windows are denoised as fused tiles
    (:func:`m3ddm_ray.sampling_tiles.sample_tiled_windows`) of a working clip.

    Args:
        unet, vae, settings, scheduler_config: as :class:`~m3ddm_ray.pipeline.Outpainter`.
        skip: schedule steps left out (the layout start; 0 = from the noisiest timestep).

    Attributes:
        tiles_used: tiles of the last clip run (for reports).
    """

    def __init__(self, unet, vae, settings, scheduler_config=None, skip: int = 0):
        super().__init__(unet, vae, settings, scheduler_config)
        self.skip = int(skip)
        self._plans: dict = {}
        self.tiles_used: tuple[Tile, ...] = ()

    def sample_group(self, clip: PreparedClip, inputs, on_step=None):
        """Denoise one group of windows of the working ``clip`` as fused tiles, window after window."""
        from .sampling_tiles import sample_tiled_windows

        f = self.latent_factor
        key = (clip.geom, clip.mask.tobytes(), self.settings.tiling.overlap, self.settings.canvas_size, f)
        if key not in self._plans:
            self._plans[key] = clip_tiles(clip, self.settings.tiling.overlap, self.settings.canvas_size, f)
        tiles, weights = self._plans[key]
        self.tiles_used = tiles
        return sample_tiled_windows(self.unet, self.scheduler, inputs, tiles, weights, f, self.settings.sampler,
                                    skip=self.skip, on_step=on_step)


def run_tiled_task(outpainter: Outpainter, frames: np.ndarray, fps: float, task: Task,
                   progress: bool = False) -> tuple[np.ndarray, PreparedClip, ClipState]:
    """Run ``task`` (outpaint, inpaint or extend, :mod:`m3ddm_ray.task`) of ``frames`` in the tiled
    mode (the module docstring's four steps); the layout is the whole-canvas run of the same task.

    Args:
        outpainter: holds the models and the settings (``settings.tiling.enabled``).
        frames: uint8 ``(T, H, W, 3)`` RGB source frames.
        fps: source frame rate (> 0).
        task: the :class:`~m3ddm_ray.task.Task`.
        progress: tqdm bars of the two runs.

    Returns:
        ``(output, working clip, tiled diffusion state)``: the output as the task's finalize gives it
        from the ``S_w`` canvases (:meth:`m3ddm_ray.task.Task.finalize`): an outpainting uint8
        ``(T, H', W', 3)`` (the crop of the ``S_w`` composite, or with ``output_size="source"`` the
        source frames at their resolution in the upscaled working composite), an inpainting
        ``(T, H, W, 3)`` (the source pixels exactly outside the mask), an extension
        ``(T + n, H, W, 3)`` (the known frames exactly the source).

    Raises:
        InputError: tiling off, or tiling settings that do not fit the model
            (:meth:`m3ddm_ray.tiles.TilingSettings.check_for`), or bad frames / fps / task inputs.
    """
    from .pipeline import step_bar

    s = outpainter.settings
    if not s.tiling.enabled:
        raise InputError("the tiled run needs tiling.working_size (the tiled mode is off)")
    f = outpainter.latent_factor
    tiling = s.tiling.check_for(s.canvas_size, f)
    clip = prepare_task(frames, fps, task, s)
    if clip.passthrough:
        return finalize_clip(clip, None, s, frames), clip, ClipState()
    a, b = task.source_range(0, clip.num_frames, clip.num_frames)
    skip, layout = 0, None
    if tiling.working_size != s.canvas_size:
        state = _run(outpainter, clip, step_bar(clip, s, progress))
        layout = geometry.paste_back(generated_array(clip, state), clip.masked,
                                     clip.masks_of(range(clip.num_frames)), mode=s.paste_mode)
        skip = layout_skip(s.sampler.num_inference_steps, tiling.layout_strength)
    work = clip if layout is None else working_clip(clip, frames, tiling.working_size, layout)
    tiled = TiledOutpainter(outpainter.unet, outpainter.vae, s, skip=skip)
    tiled.scheduler = outpainter.scheduler
    state = _run(tiled, work, step_bar(work, s, progress))
    return finalize_clip(work, generated_array(work, state), s, np.asarray(frames)[a:b]), work, state


def run_tiled_clip(outpainter: Outpainter, frames: np.ndarray, fps: float, ratio,
                   progress: bool = False) -> tuple[np.ndarray, PreparedClip, ClipState]:
    """:func:`run_tiled_task` of an outpainting of ``frames`` (uint8 ``(T, H, W, 3)``) to ``ratio``
    (``"9:16"`` or :class:`m3ddm_ray.geometry.Ratio`); returns ``(output uint8 (T, H', W', 3),
    working clip, tiled diffusion state)``. Raises InputError as :func:`run_tiled_task`."""
    return run_tiled_task(outpainter, frames, fps, Outpaint(geometry.parse_ratio(ratio)), progress)


def _run(outpainter: Outpainter, clip: PreparedClip, bar) -> ClipState:
    kw = {} if bar is None else {"on_step": lambda i, n: bar.update(1)}
    state = outpainter.run_coarse(clip, **kw)
    outpainter.run_fine(clip, state, **kw)
    if bar is not None:
        bar.close()
    return state


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
