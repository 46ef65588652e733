"""Schedulers by name: which diffusers scheduler denoises a window, at which timesteps, from where.

Names (``sampler.scheduler`` in the job config):

* ``pndm-official`` (default): the official path, exactly — ``PNDMScheduler`` (PLMS, SD 1.5 config,
  ``"leading"`` spacing with ``steps_offset=1``), initial latents noised to ``timesteps[1]`` and the
  UNet run at ``timesteps[1:]`` (961, 961, 941, …, 1 for 50 steps: the official quirk, golden parity).
* ``dpmsolver++``: ``DPMSolverMultistepScheduler``, DPM-Solver++ 2M (``algorithm_type="dpmsolver++"``,
  ``solver_order=2``, lower order at the last steps), Karras sigmas optional.
* ``unipc``: ``UniPCMultistepScheduler`` (order 2, ``bh2``, x0 prediction), Karras sigmas optional.
* ``ddim``: ``DDIMScheduler`` (η = 0, deterministic).
* ``euler``: ``EulerDiscreteScheduler`` (no churn, deterministic), Karras sigmas optional.

Every scheduler is built from the same SD 1.5 noise schedule (``scaled_linear``, β 0.00085…0.012,
1000 training steps, ε prediction) that the model was trained with.

Choice of start for the solvers (documented decision): the UNet runs at **every** timestep of
``set_timesteps(n)`` — ``n`` UNet calls, as for PNDM — and the initial latents are the inpainted
canvas latents noised to the **first** timestep with the scheduler's own ``add_noise`` (VP form
``√ᾱ·z + √(1−ᾱ)·ε`` for DDIM / DPM-Solver++ / UniPC; ``z + σ·ε`` for Euler, whose model input is
then scaled by ``1/√(σ²+1)`` in ``scale_model_input``). The spacing defaults to ``"trailing"`` so the
first timestep is 999, the noisiest one trained (the official ``timesteps[1]`` start belongs to the
PNDM path only); ``"leading"`` (981 first, SD 1.5's default) and ``"linspace"`` are options. With
Karras sigmas the spacing is set by the Karras rule instead.

Scheduler arithmetic is float32 whatever the UNet dtype (the sampler keeps latents and ε in float32).
"""

from __future__ import annotations

from typing import Mapping

from .errors import InputError

#: Scheduler names, in documentation order; the first is the default.
SCHEDULERS = ("pndm-official", "dpmsolver++", "unipc", "ddim", "euler")
#: Schedulers that accept ``karras_sigmas=True``.
KARRAS_CAPABLE = ("dpmsolver++", "unipc", "euler")
#: ``timestep_spacing`` values (diffusers'), for the solver schedulers.
SPACINGS = ("trailing", "leading", "linspace")


def check_scheduler(name: str, karras_sigmas: bool = False, timestep_spacing: str = "trailing") -> None:
    """Validate a scheduler choice.

    Raises:
        InputError: unknown ``name`` / ``timestep_spacing``, or Karras sigmas asked of a scheduler
            without them (naming the ones that have them).
    """
    if name not in SCHEDULERS:
        raise InputError(f"sampler.scheduler={name!r} is not known; use one of {', '.join(SCHEDULERS)}")
    if timestep_spacing not in SPACINGS:
        raise InputError(f"sampler.timestep_spacing={timestep_spacing!r}; use one of {', '.join(SPACINGS)}")
    if karras_sigmas and name not in KARRAS_CAPABLE:
        raise InputError(f"sampler.karras_sigmas=true needs one of {', '.join(KARRAS_CAPABLE)}; "
                         f"scheduler {name!r} has no Karras sigmas")


def build_scheduler(name: str = "pndm-official", config: Mapping | None = None, *, karras_sigmas: bool = False,
                    timestep_spacing: str = "trailing"):
    """A fresh diffusers scheduler ``name`` on the SD 1.5 noise schedule ``config``
    (default: the shipped ``assets/scheduler_config.json``).

    Raises:
        InputError: see :func:`check_scheduler`.
    """
    import diffusers

    from .models.loading import default_scheduler_config

    check_scheduler(name, karras_sigmas, timestep_spacing)
    base = dict(config or default_scheduler_config())
    if name == "pndm-official":
        return diffusers.PNDMScheduler.from_config(base)
    base.pop("_class_name", None)
    base.update(timestep_spacing=timestep_spacing, prediction_type="epsilon")
    if name == "dpmsolver++":
        return diffusers.DPMSolverMultistepScheduler.from_config(
            base, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=karras_sigmas,
            lower_order_final=True)
    if name == "unipc":
        return diffusers.UniPCMultistepScheduler.from_config(
            base, solver_order=2, solver_type="bh2", predict_x0=True, use_karras_sigmas=karras_sigmas)
    if name == "ddim":
        return diffusers.DDIMScheduler.from_config(base, set_alpha_to_one=False)
    return diffusers.EulerDiscreteScheduler.from_config(base, use_karras_sigmas=karras_sigmas)


def is_official(scheduler) -> bool:
    """True for the PNDM scheduler of the official path."""
    return type(scheduler).__name__ == "PNDMScheduler"


def start_timesteps(scheduler, num_inference_steps: int):
    """``set_timesteps(n)`` and return the timesteps the UNet runs at (1-D tensor).

    PNDM (official): ``timesteps[1:]`` (``n`` values: PLMS repeats its second timestep). Solvers: all
    ``n`` timesteps, with the scheduler's step counter reset to the first (``set_begin_index(0)``).
    The initial latents are noised to the first returned timestep (see the module docstring).
    """
    scheduler.set_timesteps(num_inference_steps)
    if is_official(scheduler):
        return scheduler.timesteps[1:]  # official: start at timesteps[1] (961 of 981, 961, 961, ...)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    return scheduler.timesteps


def restart_timesteps(scheduler, num_inference_steps: int, skip: int):
    """``set_timesteps(n)`` and return the timesteps the UNet runs at when the first ``skip`` steps of
    the schedule are left out (an img2img start: the initial latents are a clean latent noised to
    the first returned timestep). ``skip = 0`` is :func:`start_timesteps` exactly.

    * Solvers: ``timesteps[skip:]`` with the step counter set to ``skip`` (``set_begin_index``), so
      multistep solvers (DPM-Solver++, UniPC) start at their first order there (DDIM reads the
      timestep only).
    * PNDM (PLMS): the distinct timesteps ``u = [981, 961, …, 1]`` (50 steps) from ``u[skip]`` on, the
      second one repeated, ``[u[skip], u[skip+1], u[skip+1], u[skip+2], …]`` (``n - skip + 1`` calls):
      PLMS's second call redoes the first step with the averaged ε (a Heun step, diffusers'
      ``step_plms`` counter 1) and needs its timestep twice, as ``set_timesteps`` lays the full
      schedule out.

    Args:
        scheduler: from :func:`build_scheduler`.
        num_inference_steps: ``n``.
        skip: steps left out, ``0 <= skip < n``.

    Returns:
        1-D tensor of timesteps.

    Raises:
        InputError: ``skip`` outside ``0 .. n - 1``.
    """
    import torch

    if not 0 <= int(skip) < int(num_inference_steps):
        raise InputError(f"skip={skip} steps of a {num_inference_steps}-step schedule: use 0 .. "
                         f"{num_inference_steps - 1} (a layout strength in (0, 1])")
    ts = start_timesteps(scheduler, num_inference_steps)
    if skip == 0:
        return ts
    if is_official(scheduler):
        u = torch.unique_consecutive(scheduler.timesteps)
        rest = u[skip:]
        return rest if len(rest) < 2 else torch.cat([rest[:2], rest[1:]])
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(int(skip))
    return ts[skip:]
