"""The settings of a run, torch-free: :class:`SamplerSettings` (the window sampler) and
:class:`OutpaintSettings` (one outpainting run), with their validation.

Kept apart from :mod:`m3ddm_ray.sampling` and :mod:`m3ddm_ray.pipeline` (which import torch) so that
the job's driver -- manifest rows, config hashes, resume, result tables -- never imports torch:
it is ~0.9 s of start-up and a few hundred MiB the driver does not need. Both modules re-export
these names.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError
from .rules import OUTPUT_SIZES, canvas_size_problem, inference_steps_problem
from .tiles import TilingSettings

__all__ = ["OFFICIAL_SEED", "NOT_HASHED", "AUTOCAST", "SDPA_BACKENDS", "SamplerSettings", "OutpaintSettings"]


#: Noise generator seed of the official inference (``--seed 6``).
OFFICIAL_SEED = 6


#: Settings that change only float rounding or speed, never the picture: left out of the config hash.
NOT_HASHED = ("max_batch", "exact_caches", "sdpa_backend", "channels_last", "compile_backend")
AUTOCAST = ("off", "fp16", "bf16")
SDPA_BACKENDS = ("auto", "math", "flash", "efficient", "cudnn")


@dataclass(frozen=True)
class SamplerSettings:
    """Knobs of the window sampler; the defaults are the official inference settings.

    Attributes:
        num_inference_steps: scheduler steps (the UNet runs this many times per window).
        guidance_scale: weight ``w`` of the masked-video condition (official 2.0).
        previous_guidance_scale: weight ``w_g`` of the global-frame context (official 4.0).
        seed: seed of the per-window diffusion noise (CPU generator, the same noise in every window,
            as the official code).
        official_batch4: run the official discarded fourth guidance branch (parity tests only).
        scheduler: scheduler name (:data:`m3ddm_ray.schedulers.SCHEDULERS`); ``"pndm-official"`` is
            the official PNDM sampler exactly.
        karras_sigmas: Karras sigma spacing (``dpmsolver++``, ``unipc``, ``euler`` only).
        timestep_spacing: ``"trailing"`` / ``"leading"`` / ``"linspace"`` for the solver schedulers
            (ignored by ``pndm-official``); see :mod:`m3ddm_ray.schedulers`.
        exact_caches: global-frame tokens once per clip, zero-context tokens once per model,
            cross-attention K/V once per window (:mod:`m3ddm_ray.caching`; exact).
        deepcache_interval: DeepCache: full UNet every N-th step, shallow branch in between
            (0 or 1 = off; approximate).
        tgate_step: T-GATE: reuse the cross-attention outputs from this step on (0 = off; approximate).
        max_batch: windows denoised together in one UNet batch (``windows x 3`` branches) when they are
            independent; 1 = one by one. Same results up to float rounding (not hashed).
        autocast: ``"off"`` (the model's dtype), ``"fp16"`` or ``"bf16"`` autocast around the UNet call;
            scheduler arithmetic stays float32.
        sdpa_backend: scaled-dot-product attention backend: ``"auto"`` (torch's choice), ``"math"``,
            ``"flash"``, ``"efficient"`` (memory-efficient), ``"cudnn"``.
        channels_last: channels-last (``channels_last_3d``) weights and UNet inputs.
        compile_backend: ``torch.compile`` backend for the UNet (e.g. ``"inductor"``); ``None`` = eager.
    """

    num_inference_steps: int = 50
    guidance_scale: float = 2.0
    previous_guidance_scale: float = 4.0
    seed: int = OFFICIAL_SEED
    official_batch4: bool = False
    scheduler: str = "pndm-official"
    karras_sigmas: bool = False
    timestep_spacing: str = "trailing"
    exact_caches: bool = True
    deepcache_interval: int = 0
    tgate_step: int = 0
    max_batch: int = 1
    autocast: str = "off"
    sdpa_backend: str = "auto"
    channels_last: bool = False
    compile_backend: str | None = None

    def __post_init__(self):
        from .schedulers import check_scheduler

        why = inference_steps_problem(self.num_inference_steps)
        if why:
            raise InputError(f"num_inference_steps={self.num_inference_steps} {why}")
        check_scheduler(self.scheduler, self.karras_sigmas, self.timestep_spacing)
        if self.deepcache_interval < 0:
            raise InputError(f"sampler.deepcache_interval={self.deepcache_interval}: use 0 (off) or N >= 2")
        if self.tgate_step < 0:
            raise InputError(f"sampler.tgate_step={self.tgate_step}: use 0 (off) or a step k >= 1")
        if self.max_batch < 1:
            raise InputError(f"sampler.max_batch={self.max_batch}: must be >= 1 (windows per UNet call)")
        if self.autocast not in AUTOCAST:
            raise InputError(f"sampler.autocast={self.autocast!r}; use one of {', '.join(AUTOCAST)}")
        if self.sdpa_backend not in SDPA_BACKENDS:
            raise InputError(f"sampler.sdpa_backend={self.sdpa_backend!r}; use one of {', '.join(SDPA_BACKENDS)}")
        if self.official_batch4 and self.max_batch > 1:
            raise InputError("official_batch4 (parity runs) needs max_batch=1")

    def hashed(self) -> dict:
        """The settings that change pixels, for the config hash: :data:`NOT_HASHED` left out, and the
        optional sampler keys below left out while at their default (an output at the defaults has
        one name, whether a config spells these keys out or not)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in NOT_HASHED}
        for k in ("scheduler", "karras_sigmas", "timestep_spacing", "deepcache_interval", "tgate_step", "autocast"):
            if d[k] == self.__dataclass_fields__[k].default:
                del d[k]
        return d


@dataclass(frozen=True)
class OutpaintSettings:
    """Settings of one outpainting run; defaults are the official inference's (released model).

    Attributes:
        sampler: steps, guidance weights, diffusion seed (:class:`SamplerSettings`).
        canvas_size: side ``S`` of the square working canvas in pixels (256 for the released model).
        strides: pass strides, e.g. ``(15, 5, 1)``; ``None`` = official rule (``[1]`` below 50 frames).
        num_global_frames: global frames spread over the whole video (16, as trained).
        paste_mode: ``"round"`` (known pixels exactly the canvas values) or ``"official"`` (the official
            truncating float round trip; parity tests).
        output_size: ``"canvas"`` (crop of the ``S``-canvas) or ``"source"`` (known region at the source
            resolution, generated border upscaled).
        posterior: ``"sample"`` (official: VAE posterior samples, seeded by ``posterior_seed``) or
            ``"mode"`` (posterior mean; deterministic and seed-free).
        posterior_seed: seed of the clip's posterior noise, keyed per frame (``None``: the sampler seed).
        vae_batch_size: images per VAE encode/decode call (memory knob; does not change results
            beyond float rounding).
        tiling: the tiled mode (:class:`m3ddm_ray.tiles.TilingSettings`, :mod:`m3ddm_ray.tiled`): the
            border generated at ``tiling.working_size`` pixels by fused canvas-size tiles; off by default.
    """

    sampler: SamplerSettings = SamplerSettings()
    canvas_size: int = 256
    strides: tuple[int, ...] | None = None
    num_global_frames: int = 16
    paste_mode: str = "round"
    output_size: str = "canvas"
    posterior: str = "sample"
    posterior_seed: int | None = None
    vae_batch_size: int = 16
    tiling: TilingSettings = TilingSettings()

    def __post_init__(self):
        if not isinstance(self.tiling, TilingSettings):
            raise InputError(f"tiling={self.tiling!r} must be a TilingSettings (working_size, overlap, "
                             f"layout_strength)")
        if self.tiling.enabled and self.tiling.working_size < self.canvas_size:
            raise InputError(f"tiling.working_size={self.tiling.working_size} is smaller than canvas_size="
                             f"{self.canvas_size}; use null (tiling off) or a size >= {self.canvas_size}")
        if self.paste_mode not in ("round", "official"):
            raise InputError(f"paste_mode={self.paste_mode!r}; use 'round' or 'official'")
        if self.output_size not in OUTPUT_SIZES:
            raise InputError(f"output_size={self.output_size!r}; use 'canvas' or 'source'")
        if self.posterior not in ("sample", "mode"):
            raise InputError(f"posterior={self.posterior!r}; use 'sample' or 'mode'")
        if canvas_size_problem(self.canvas_size):
            raise InputError(f"canvas_size={self.canvas_size} {canvas_size_problem(self.canvas_size)}")
        if self.num_global_frames < 1:
            raise InputError(f"num_global_frames={self.num_global_frames} must be >= 1 (16 as trained)")

    def to_dict(self) -> dict:
        """Flat dict of every setting (for result rows and config hashes); the tiling keys
        (``tiling_working_size``, ``tiling_overlap``, ``tiling_layout_strength``) only when tiling is on,
        so an output made without tiling keeps its name."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("sampler", "tiling")}
        d.update({k: getattr(self.sampler, k) for k in self.sampler.__dataclass_fields__})
        if self.tiling.enabled:
            d.update({f"tiling_{k}": getattr(self.tiling, k) for k in self.tiling.__dataclass_fields__})
        d["strides"] = list(self.strides) if self.strides else None
        return d
