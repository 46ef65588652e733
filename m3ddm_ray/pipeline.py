"""Single-process runs of one video, any task: frames in memory -> output frames. No Ray.

The work for one (video, task) pair is split the way the Ray job runs it, so that the stages of
:mod:`m3ddm_ray.distributed` are thin adapters over these functions:

1. :func:`~m3ddm_ray.prepare.prepare` (CPU, :mod:`m3ddm_ray.prepare`, re-exported here): canvases,
   masks, global frames, window plan -> :class:`PreparedClip`.
2. :meth:`Outpainter.run_coarse` (GPU): encode the global frames, run the stride-15 keyframe pass
   -> :class:`ClipState` (global latents + stored keyframe latents).
3. :meth:`Outpainter.run_fine` (GPU): run the stride-5 / stride-1 passes with the stored latents as
   guide frames and decode the output frames -> generated canvases ``(T, S, S, 3)``.
4. :func:`finalize_clip` (CPU): the task's paste-back and crop / composition
   (:meth:`m3ddm_ray.task.Task.finalize`) -> the output frames.

:class:`OutpaintPipeline` chains the four for outpainting (interactive use, ``outpaint-video``);
:func:`run_task` for any task (:func:`run_inpaint`, :func:`run_extend`: the ``inpaint`` /
``extend`` commands).

Where the official script re-encodes each window's frames and the global frames with fresh VAE
posterior noise, production encodes each frame once per clip (:class:`~m3ddm_ray.latents.ClipLatents`).
The official per-window behaviour is available through the same seam
(:class:`~m3ddm_ray.latents.PerWindowLatents`) for parity tests with injected noise; both live in
:mod:`m3ddm_ray.latents` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from . import geometry
from .errors import InputError
from .plan import Segment, Window
from .prepare import (Holds, PreparedClip, canvas_frames, make_global_frames, prepare,  # noqa: F401 - re-exported
                      prepare_clip, prepare_clips, prepare_task, span_canvases)
from .latents import ClipLatents, KeyedPosteriorNoise, PerWindowLatents, images_to_tensor  # noqa: F401 - re-exported
from .sampling import SamplerSettings, WindowInputs, decode_latents, make_scheduler, sample_windows, vae_factor  # noqa: F401
from .settings import OutpaintSettings  # noqa: F401 - re-exported (the settings live torch-free)


# --------------------------------------------------------------------------- 2-3. diffusion (GPU)
@dataclass
class ClipState:
    """What the coarse stage hands to the fine stage (numpy, Ray-serialisable).

    Attributes:
        global_latents: float32 ``(G, 4, h, w)`` latents of the global frames.
        stored: frame index -> float32 ``(4, h, w)`` final latent (guide frames for later windows).
        generated: frame index -> uint8 ``(S, S, 3)`` decoded output canvas of that frame.
        windows_done: indices of the windows already run.
        unet_seconds: wall time spent in the diffusion loops.
    """

    global_latents: np.ndarray | None = None
    stored: dict[int, np.ndarray] = field(default_factory=dict)
    generated: dict[int, np.ndarray] = field(default_factory=dict)
    windows_done: list[int] = field(default_factory=list)
    unet_seconds: float = 0.0

    def for_segment(self, segment: Segment) -> "ClipState":
        """What one segment needs of this coarse-stage state (:func:`segment_state`)."""
        return ClipState(global_latents=self.global_latents,
                         stored={f: self.stored[f] for f in segment.coarse_guides},
                         windows_done=list(self.windows_done))


def batch_windows(windows: Iterable[Window], max_batch: int) -> list[list[Window]]:
    """Split ``windows`` (in execution order) into consecutive groups that can be denoised as one UNet
    batch: the same pass, at most ``max_batch`` windows, and no window reading a stored latent of
    another window of its group (``Window.depends_on``). Running the groups in order gives the same
    stored latents as running the windows one by one (the first writer of a frame still wins).

    E.g. the official ``[15, 5, 1]`` plan: the stride-5 and stride-1 windows of a pass only read
    keyframes of earlier passes, so they batch freely; the ``[1]`` plan chains every window to the
    previous one (they overlap by a frame), so its groups have one window.
    """
    groups: list[list[Window]] = []
    for w in windows:
        g = groups[-1] if groups else None
        if (g is not None and len(g) < max_batch and g[0].pass_index == w.pass_index
                and not set(w.depends_on) & {x.index for x in g}):
            g.append(w)
        else:
            groups.append([w])
    return groups


class Outpainter:
    """Holds the UNet, the VAE and a scheduler; runs windows of prepared clips (one process, one device).

    A Ray actor keeps one ``Outpainter`` for its lifetime (the model stays loaded).
    """

    def __init__(self, unet, vae, settings: OutpaintSettings = OutpaintSettings(), scheduler_config=None):
        from .caching import TokenCache

        self.unet, self.vae, self.settings = unet, vae, settings
        self.scheduler = make_scheduler(scheduler_config, settings.sampler)
        self.tokens = TokenCache(settings.sampler.exact_caches)  # global-frame tokens once per clip

    @property
    def latent_factor(self) -> int:
        """Canvas side / latent side of this VAE (:func:`~m3ddm_ray.sampling.vae_factor`: 8 for SD's)."""
        return vae_factor(self.vae)

    def latents_for(self, clip: PreparedClip, state: ClipState) -> ClipLatents:
        """Production latent source for ``clip`` (posterior noise keyed per frame)."""
        s = self.settings
        noise = None if s.posterior == "mode" else KeyedPosteriorNoise(
            s.posterior_seed if s.posterior_seed is not None else s.sampler.seed)
        g = None if state.global_latents is None else torch.from_numpy(state.global_latents)
        latents = ClipLatents(self.vae, clip, noise, s.vae_batch_size, g)
        if g is None:
            state.global_latents = latents.global_latents().numpy()
        return latents

    def run_windows(
        self,
        clip: PreparedClip,
        windows: Iterable[Window],
        state: ClipState,
        latents=None,
        on_step: Callable[[int, int], None] | None = None,
        on_window: Callable[[Window, torch.Tensor], None] | None = None,
    ) -> ClipState:
        """Denoise ``windows`` (in order) and update ``state`` in place; returns it.

        After each window its final latents are stored for frames that have none yet (guide frames
        of later windows, golden README §5.7) and the positions whose image is an output frame
        (``plan.output_sources()``: the last window containing the frame, §5.9) are decoded.

        ``on_window(window, latents)`` is called after each window with its final latents
        ``(4, F, h, w)`` float32 (progress reporting, parity tests).

        Raises:
            RuntimeError: a window needs a guide latent that ``state`` does not have (stages run
                out of order).
        """
        import time

        plan = clip.plan
        owners = plan.output_sources()
        latents = latents if latents is not None else self.latents_for(clip, state)
        f_lat = self.latent_factor
        h = clip.geom.latent_side(f_lat)
        lmask = torch.from_numpy(geometry.latent_mask(clip.mask, f_lat).astype(np.float32))
        for group in batch_windows(windows, self.settings.sampler.max_batch):
            inputs = []
            for window in group:
                z_init, z_cond, z_uncond = latents.window_latents(window)
                tokens = self.tokens.tokens(self.unet, latents.global_latents(window))
                guides = {}
                for k in window.guide_positions:
                    frame = window.frame_ids[k]
                    if frame not in state.stored:
                        raise RuntimeError(f"window {window.index} needs the stored latent of frame {frame}; "
                                           f"run the earlier windows (coarse stage) first")
                    guides[k] = torch.from_numpy(state.stored[frame])
                f = len(window.frame_ids)
                per = clip.window_masks(window.frame_ids)
                if per is None:  # one mask for every row: broadcast
                    wmask = lmask.view(1, 1, 1, h, h).expand(1, 1, f, h, h)
                else:  # one latent mask per position
                    per = geometry.latent_mask(per, f_lat).astype(np.float32)
                    wmask = torch.from_numpy(per).view(1, 1, f, h, h)
                inputs.append(WindowInputs(z_init, z_cond, z_uncond, wmask, guides, tokens, window.fps))
            t0 = time.perf_counter()
            xs = self.sample_group(clip, inputs, on_step)
            state.unet_seconds += time.perf_counter() - t0
            for window, x in zip(group, xs.float().cpu()):  # x: (4, F, h, w)
                for k, frame in enumerate(window.frame_ids):
                    if frame not in state.stored:
                        state.stored[frame] = x[:, k].numpy().copy()
                outs = [(frame, k) for frame, (wi, k) in enumerate(owners) if wi == window.index]
                if outs:
                    lat = torch.stack([x[:, k] for _, k in outs])
                    for (frame, _), img in zip(outs, self._decode(lat)):
                        state.generated[frame] = img
                state.windows_done.append(window.index)
                if on_window is not None:
                    on_window(window, x)
        return state

    def output_clip(self, clip: PreparedClip, state: ClipState) -> PreparedClip:
        """The clip whose geometry ``state.generated`` has after :meth:`run_fine` (the one finalize
        pastes onto): ``clip`` itself (the tiled run's is its working clip,
        :meth:`m3ddm_ray.tiled.TiledOutpainter.output_clip`)."""
        return clip

    def sample_group(self, clip: PreparedClip, inputs: list[WindowInputs], on_step=None) -> torch.Tensor:
        """Denoise one group of windows of ``clip``: :func:`~m3ddm_ray.sampling.sample_windows`
        (the seam :class:`m3ddm_ray.tiled.TiledOutpainter` fills with the fused tiles)."""
        return sample_windows(self.unet, self.scheduler, inputs, self.settings.sampler, on_step=on_step)

    def _decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        bs = self.settings.vae_batch_size
        out = [decode_latents(self.vae, latents[i:i + bs]) for i in range(0, len(latents), bs)]
        return list(torch.cat(out).numpy())

    def run_coarse(self, clip: PreparedClip, **kw) -> ClipState:
        """Coarse stage: global-frame latents + the keyframe pass (``plan.coarse``, stride 15)."""
        state = ClipState()
        return self.run_windows(clip, clip.plan.coarse, state, **kw)

    def run_fine(self, clip: PreparedClip, state: ClipState, **kw) -> ClipState:
        """Fine stage: the remaining passes (``plan.fine``) guided by the coarse stage's latents; for
        a :meth:`PreparedClip.segment_slice`, only that segment's windows (:meth:`run_segment`)."""
        if clip.segment is not None:
            return self.run_segment(clip, clip.plan.segments()[clip.segment], state, **kw)
        return self.run_windows(clip, clip.plan.fine, state, **kw)

    def run_segment(self, clip: PreparedClip, segment: Segment, state: ClipState, **kw) -> ClipState:
        """Fine work of one segment (:meth:`WindowPlan.segments`): its windows, in order, guided by
        the coarse latents in ``state`` (:func:`segment_state`); ``clip`` may be the segment's
        :meth:`PreparedClip.segment_slice`. Afterwards ``state.generated`` holds exactly the output
        canvases of ``segment.output_frames``, equal to the whole-clip run's (posterior noise is
        keyed per frame, windows of a segment read only coarse latents and their own)."""
        windows = [clip.plan.windows[i] for i in segment.windows]
        return self.run_windows(clip, windows, state, **kw)


def segment_state(state: ClipState, segment: Segment) -> ClipState:
    """What one segment needs of the coarse stage's ``state``: the global-frame latents and the
    stored latents of ``segment.coarse_guides`` (a few frames, not the whole clip's);
    :meth:`ClipState.for_segment` of the state's class (the tiled run's state keeps more)."""
    return state.for_segment(segment)


# --------------------------------------------------------------------------- 4. finalize (CPU)
def generated_array(clip: PreparedClip, state: ClipState, frames: Sequence[int] | None = None) -> np.ndarray:
    """Stack ``state.generated`` to uint8 ``(N, S, S, 3)`` for ``frames`` (default: all ``T``);
    raises RuntimeError if a frame is missing."""
    frames = list(range(clip.num_frames)) if frames is None else list(frames)
    missing = [f for f in frames if f not in state.generated]
    if missing:
        raise RuntimeError(f"no generated image for frames {missing[:5]}...; the fine stage did not finish")
    return np.stack([state.generated[f] for f in frames])


def finalize_clip(clip: PreparedClip, generated: np.ndarray | None, settings: OutpaintSettings = OutpaintSettings(),
                  source_frames: np.ndarray | None = None) -> np.ndarray:
    """The output frames of the whole clip (:meth:`Task.finalize <m3ddm_ray.task.Task.finalize>`).

    Args:
        generated: uint8 ``(T, S, S, 3)`` decoded canvases (ignored for a passthrough clip).
        source_frames: uint8 ``(T', H, W, 3)`` the source frames the task reads
            (:meth:`~m3ddm_ray.task.Task.source_range`), or None when it reads none.

    Returns:
        uint8 ``(T, H', W', 3)``: an outpainting's crop to its ratio (or source-size composition; a
        passthrough's source frames cropped to even sides); an inpainting's or extension's frames
        at the source size.
    """
    return finalize_frames(clip, generated, settings, source_frames)[0]


def finalize_frames(clip: PreparedClip, generated: np.ndarray | None, settings: OutpaintSettings = OutpaintSettings(),
                    source_frames: np.ndarray | None = None, frames: Sequence[int] | None = None):
    """:func:`finalize_clip` for rows ``frames`` (default: all ``T``; a segment's ``output_frames``
    with a :meth:`PreparedClip.segment_slice`): the :class:`~m3ddm_ray.task.Output` of the task --
    ``(output frames, frames the quality numbers read, their generated region)``.

    Args:
        generated: uint8 ``(N, S, S, 3)``, the decoded canvases of ``frames``.
        source_frames: uint8 ``(K, H, W, 3)`` the source frames of ``frames`` the task reads.
    """
    rows = list(range(clip.num_frames)) if frames is None else [int(f) for f in frames]
    return clip.task.finalize(clip, generated, source_frames, rows, settings)


def generate(outpainter: "Outpainter", clip: PreparedClip,
             on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """All windows of ``clip`` (coarse then fine) -> uint8 ``(T, S, S, 3)`` decoded canvases of every row."""
    kw = {} if on_step is None else {"on_step": on_step}
    state = outpainter.run_coarse(clip, **kw)
    outpainter.run_fine(clip, state, **kw)
    return generated_array(clip, state)


def run_task(outpainter: "Outpainter", frames: np.ndarray, fps: float, task,
             on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Prepare, generate and finalize ``task`` (:mod:`m3ddm_ray.task`) of ``frames`` (uint8
    ``(T, H, W, 3)``) held in memory; returns the task's output frames (uint8 ``(N, H', W', 3)``)."""
    clip = prepare_task(frames, fps, task, outpainter.settings)
    if clip.passthrough:
        return finalize_clip(clip, None, outpainter.settings, frames)
    gen = generate(outpainter, clip, on_step)
    a, b = task.source_range(0, clip.num_frames, clip.num_frames)
    return finalize_clip(clip, gen, outpainter.settings, np.asarray(frames)[a:b])


def run_inpaint(outpainter: "Outpainter", frames: np.ndarray, masks: np.ndarray, fps: float, dilate: int = 0,
                name: str = "masks", on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Inpaint ``frames`` (uint8 ``(T, H, W, 3)``) where ``masks`` (uint8 ``(T', H', W')`` 0/1, 1 =
    remove, ``T'`` = 1 or T) says, grown by ``dilate`` pixels; returns uint8 ``(T, H, W, 3)``, the
    source pixels exactly outside the (dilated) mask. Raises InputError naming ``name`` for bad masks."""
    from .task import Inpaint, MaskArray

    return run_task(outpainter, frames, fps, Inpaint(MaskArray(masks, name), dilate, name), on_step)


def run_extend(outpainter: "Outpainter", frames: np.ndarray, fps: float, n: int, direction: str = "forward",
               on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Extend ``frames`` (uint8 ``(T, H, W, 3)``) by ``n`` frames ``forward`` / ``backward``;
    returns uint8 ``(T + n, H, W, 3)``, the known frames exactly the source."""
    from .task import Extend

    return run_task(outpainter, frames, fps, Extend(n, direction), on_step)


# --------------------------------------------------------------------------- the whole thing
class OutpaintPipeline:
    """Outpaint one video held in memory to one or more ratios, in this process.

    Example::

        pipe = OutpaintPipeline.from_pretrained()                   # released weights (hub / folders)
        outs = pipe(frames, fps=25.0, ratios="9:16,1:1")            # {"9:16": (T,H',W',3) uint8, ...}
    """

    def __init__(self, unet, vae, settings: OutpaintSettings = OutpaintSettings(), scheduler_config=None):
        self.settings = settings
        self.outpainter = Outpainter(unet, vae, settings, scheduler_config)

    @classmethod
    def from_pretrained(cls, unet: str | None = None, vae: str | None = None, *, dtype="auto", device="auto",
                        settings: OutpaintSettings = OutpaintSettings(), storage_options=None):
        """Load the UNet and VAE (folders, fsspec URLs or hub ids; defaults: the released weights)."""
        from .models.loading import DEFAULT_UNET, DEFAULT_VAE, load_unet, load_vae

        u = load_unet(unet or DEFAULT_UNET, dtype, device, storage_options=storage_options)
        v = load_vae(vae or DEFAULT_VAE, dtype, device, storage_options=storage_options)
        return cls(u, v, settings)

    def with_settings(self, **changes) -> "OutpaintPipeline":
        """A pipeline sharing the loaded models with some settings changed."""
        new = object.__new__(OutpaintPipeline)
        new.settings = replace(self.settings, **changes)
        new.outpainter = Outpainter(self.outpainter.unet, self.outpainter.vae, new.settings)
        return new

    def run_clip(self, frames: np.ndarray, fps: float, ratio, progress: bool = False) -> tuple[np.ndarray, PreparedClip, ClipState]:
        """Outpaint ``frames`` to one ratio; returns ``(output frames, prepared clip, diffusion state)``."""
        if self.settings.tiling.enabled and type(self) is OutpaintPipeline:
            raise InputError("tiling.working_size is set: run it with m3ddm_ray.tiled.TiledOutpaintPipeline "
                             "(the same interface), or set tiling.working_size=None")
        clip = prepare_clip(frames, fps, ratio, self.settings)
        state = ClipState()
        if not clip.passthrough:
            bar = step_bar(clip, self.settings, progress)
            kw = {} if bar is None else {"on_step": lambda i, n: bar.update(1)}
            state = self.outpainter.run_coarse(clip, **kw)
            self.outpainter.run_fine(clip, state, **kw)
            if bar is not None:
                bar.close()
        gen = None if clip.passthrough else generated_array(clip, state)
        source = frames if clip.passthrough or clip.task.needs_source(self.settings) else None
        return finalize_clip(clip, gen, self.settings, source), clip, state

    def __call__(self, frames: np.ndarray, fps: float, ratios="9:16", progress: bool = False) -> dict[str, np.ndarray]:
        """Outpaint to each ratio of ``ratios`` (``"9:16,1:1"`` or a list); returns ``{ratio: frames}``.

        Each value is uint8 ``(T, H', W', 3)``, exactly as many frames as the input.
        """
        return {str(r): self.run_clip(frames, fps, r, progress)[0] for r in geometry.parse_ratios(ratios)}


def step_bar(clip: PreparedClip, settings: OutpaintSettings, enabled: bool):
    """A tqdm bar over all UNet steps of ``clip`` (windows × steps), or None when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    n_windows = len(clip.plan.windows)
    return tqdm(total=n_windows * settings.sampler.num_inference_steps, unit="step",
                desc=f"outpaint {clip.ratio} ({n_windows} windows)")
