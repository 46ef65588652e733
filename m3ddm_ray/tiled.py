"""The tiled run of one outpainting clip in one process: the border generated at the working
resolution by overlapping canvas-size tiles fused at every denoising step, over a layout from the
whole-canvas pass (MultiDiffusion, arXiv 2302.08113, §3; Follow-Your-Canvas, arXiv 2409.01055,
§3: spatial windows with a layout that keeps them one scene). Settings: :class:`m3ddm_ray.tiles.TilingSettings`
(``tiling.working_size``, ``tiling.overlap``, ``tiling.layout_strength``); the setting, its cost and
how to choose it: ``docs/tiling.md``.

:class:`TiledOutpaintPipeline` is :class:`m3ddm_ray.pipeline.OutpaintPipeline` with this run
(the plain pipeline refuses settings with tiling on). Steps (:func:`run_tiled_clip`):

1. **Layout**: the whole-canvas run (coarse + fine passes at the canvas size ``S``), its known
   pixels pasted back (:func:`m3ddm_ray.geometry.paste_back`).
2. **Working clip** (:func:`working_clip`): the canvas planned again at the working size ``S_w``
   (:func:`m3ddm_ray.geometry.plan_canvas`, the same ratio rule), the source frames placed on it
   (the masked canvases, the known region at ``S_w``) and the layout upsampled to ``S_w`` (bicubic)
   as the start image of the generated region. The global frames stay the ``S``-pixel whole frames:
   every tile gets them as its context.
3. **Tiled diffusion**: the same window plan (coarse keyframes, then the fine windows with their
   guide frames, :class:`m3ddm_ray.pipeline.Outpainter`) on the working clip; each window's frame
   latent ``(1, 4, F, S_w/f, S_w/f)`` is denoised by :func:`m3ddm_ray.sampling_tiles.sample_tiled_windows`
   over the tiles of :func:`m3ddm_ray.tiles.plan_tiles` (the tiles wholly inside the known region
   are left out), fused with the ``"linear"`` (feathered) weights, starting from the layout noised
   to ``tiling.layout_strength`` (:func:`m3ddm_ray.tiles.layout_skip`). Guide frames are the stored
   working-resolution latents, cut per tile.
4. **Finalize**: the known pixels pasted back at ``S_w`` and, with ``output_size="source"``, the
   source frames at their own resolution (:func:`m3ddm_ray.pipeline.finalize_clip` with the
   working clip's geometry).

With ``working_size`` equal to the canvas size there is one tile and no layout pass: the run is
the whole-canvas run, bit for bit (``tests/test_tiled.py``).
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from . import geometry
from .errors import InputError
from .pipeline import ClipState, OutpaintPipeline, Outpainter, PreparedClip, finalize_clip, generated_array, prepare_clip
from .tiles import FusionWeights, Tile, fusion_weights, layout_skip, plan_tiles

__all__ = ["FUSION", "working_clip", "clip_tiles", "TiledOutpainter", "run_tiled_clip", "TiledOutpaintPipeline"]

#: Fusion weights of the tiled run (:func:`m3ddm_ray.tiles.fusion_weights`): feathered, so a tile's
#: edge cells count least where a neighbour overlaps them.
FUSION = "linear"


def working_clip(clip: PreparedClip, frames: np.ndarray, working_size: int,
                 layout: np.ndarray | None) -> PreparedClip:
    """``clip`` planned again on an ``S_w × S_w`` canvas, with the layout as its start image.

    Args:
        clip: the prepared clip at the canvas size (whole clip, outpainting: no per-frame masks).
        frames: uint8 ``(T, H, W, 3)`` source frames.
        working_size: ``S_w`` in pixels.
        layout: uint8 ``(T, S, S, 3)`` composited canvases of the whole-canvas run, or None (the
            working canvases filled as :func:`m3ddm_ray.geometry.make_canvases` fills them).

    Returns:
        A :class:`~m3ddm_ray.pipeline.PreparedClip` with ``geom`` planned at ``S_w``, ``masked``
        ``(T, S_w, S_w, 3)`` (the source at ``S_w``, zeros elsewhere), ``inpainted`` = the masked
        canvases' known pixels and the bicubic upsampled layout elsewhere, ``mask`` ``(S_w, S_w)``,
        and the clip's ``S``-pixel global frames.

    Raises:
        InputError: a clip with per-frame masks (inpainting, extension), a segment slice, or a
            layout of the wrong shape.
    """
    if clip.frame_masks is not None or clip.segment is not None or clip.frame_ids is not None:
        raise InputError("the tiled mode runs whole outpainting clips in one process (not inpainting / "
                         "extension clips or segment slices); set tiling.working_size: null for those")
    geom = geometry.plan_canvas(*clip.geom.source_hw, clip.geom.ratios, working_size)
    masked, inpainted = geometry.make_canvases(frames, geom)
    mask = geometry.pixel_mask(geom)
    if layout is not None:
        s = clip.geom.canvas_size
        if layout.shape != (len(frames), s, s, 3):
            raise InputError(f"layout of shape {layout.shape}; expected ({len(frames)}, {s}, {s}, 3)")
        gen = mask[None, :, :, None].astype(bool)
        for i in range(len(frames)):
            up = cv2.resize(np.ascontiguousarray(layout[i]), (working_size, working_size),
                            interpolation=cv2.INTER_CUBIC)
            inpainted[i] = np.where(gen[0], up, masked[i])
    return replace(clip, geom=geom, masked=masked, inpainted=inpainted, mask=mask)


def clip_tiles(clip: PreparedClip, overlap: int, canvas_size: int, factor: int) -> tuple[tuple[Tile, ...], FusionWeights]:
    """The tiles of a working clip's frame and their fusion weights (:data:`FUSION`).

    Args:
        clip: a working clip (:func:`working_clip`) or a canvas-size clip.
        overlap: ``tiling.overlap`` in pixels.
        canvas_size: the model's canvas size ``S`` (the tile side).
        factor: the VAE's spatial downsampling.

    Returns:
        ``(tiles, weights)``: :func:`m3ddm_ray.tiles.plan_tiles` over the ``S_w × S_w`` frame (tiles
        wholly inside the known box left out) and their :func:`m3ddm_ray.tiles.fusion_weights`.
    """
    sw = clip.geom.canvas_size
    tiles = plan_tiles((sw, sw), clip.geom.known_box, canvas_size, overlap, factor)
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
        key = (clip.geom, self.settings.tiling.overlap, self.settings.canvas_size, f)
        if key not in self._plans:
            self._plans[key] = clip_tiles(clip, self.settings.tiling.overlap, self.settings.canvas_size, f)
        tiles, weights = self._plans[key]
        self.tiles_used = tiles
        return sample_tiled_windows(self.unet, self.scheduler, inputs, tiles, weights, f, self.settings.sampler,
                                    skip=self.skip, on_step=on_step)


def run_tiled_clip(outpainter: Outpainter, frames: np.ndarray, fps: float, ratio,
                   progress: bool = False) -> tuple[np.ndarray, PreparedClip, ClipState]:
    """Outpaint ``frames`` to one ratio in the tiled mode (the module docstring's four steps).

    Args:
        outpainter: holds the models and the settings (``settings.tiling.enabled``).
        frames: uint8 ``(T, H, W, 3)`` RGB source frames.
        fps: source frame rate (> 0).
        ratio: target ratio.
        progress: tqdm bars of the two runs.

    Returns:
        ``(output uint8 (T, H', W', 3), working clip, tiled diffusion state)``: with
        ``output_size="canvas"`` the crop of the ``S_w`` composite, with ``"source"`` the source
        frames at their resolution in the upscaled working composite.

    Raises:
        InputError: tiling off, or tiling settings that do not fit the model
            (:meth:`m3ddm_ray.tiles.TilingSettings.check_for`), or bad frames / fps / ratio.
    """
    from .pipeline import step_bar

    s = outpainter.settings
    if not s.tiling.enabled:
        raise InputError("run_tiled_clip needs tiling.working_size (the tiled mode is off)")
    f = outpainter.latent_factor
    tiling = s.tiling.check_for(s.canvas_size, f)
    clip = prepare_clip(frames, fps, ratio, s)
    if clip.passthrough:
        return finalize_clip(clip, None, s, frames), clip, ClipState()
    skip, layout = 0, None
    if tiling.working_size != s.canvas_size:
        state = _run(outpainter, clip, step_bar(clip, s, progress))
        layout = geometry.paste_back(generated_array(clip, state), clip.masked, clip.mask, mode=s.paste_mode)
        skip = layout_skip(s.sampler.num_inference_steps, tiling.layout_strength)
    work = clip if layout is None else working_clip(clip, frames, tiling.working_size, layout)
    tiled = TiledOutpainter(outpainter.unet, outpainter.vae, s, skip=skip)
    tiled.scheduler = outpainter.scheduler
    state = _run(tiled, work, step_bar(work, s, progress))
    return finalize_clip(work, generated_array(work, state), s, frames), work, state


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
