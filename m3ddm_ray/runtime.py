"""How the UNet call runs on the device: autocast, attention backend, memory format, torch.compile.

Settings (:class:`~m3ddm_ray.sampling.SamplerSettings`), each defaulting to the official behaviour:

* ``autocast``: ``"fp16"`` / ``"bf16"`` runs the UNet call under ``torch.autocast`` on the model's
  device (bf16 works on the CPU too); the sampler keeps latents, ε, guidance and the scheduler
  step in float32 outside the autocast region.
* ``sdpa_backend``: restricts :func:`torch.nn.functional.scaled_dot_product_attention` to one
  backend with :func:`torch.nn.attention.sdpa_kernel` (``"flash"``: FlashAttention,
  ``"efficient"``: memory-efficient, ``"cudnn"``, ``"math"``); ``"auto"`` lets torch choose.
* ``channels_last``: 5-D weights in ``torch.channels_last_3d`` and 4-D ones in ``channels_last``
  (once per model), the UNet input made ``channels_last_3d``.
* ``compile_backend``: the UNet wrapped once per model by ``torch.compile(backend=...)``.
  Batched windows have static shapes per pass (``max_batch`` windows, the tail batch smaller), so a
  compiled graph is reused across a pass.
"""

from __future__ import annotations

import contextlib
import weakref

import torch

_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_CHANNELS_LAST: "weakref.WeakSet" = weakref.WeakSet()
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def unet_call_context(settings, device: torch.device) -> contextlib.ExitStack:
    """Context manager around one UNet call: autocast and the SDPA backend of ``settings``.

    Raises:
        InputError: ``autocast="fp16"`` asked on the CPU (use ``bf16``).
    """
    from .errors import InputError

    stack = contextlib.ExitStack()
    if settings.autocast != "off":
        if settings.autocast == "fp16" and device.type == "cpu":
            raise InputError("sampler.autocast=fp16 is for CUDA; on the CPU use bf16 (or off)")
        stack.enter_context(torch.autocast(device_type=device.type, dtype=_DTYPES[settings.autocast]))
    if settings.sdpa_backend != "auto":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
                   "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
        stack.enter_context(sdpa_kernel([backend[settings.sdpa_backend]]))
    return stack


def to_channels_last(unet) -> None:
    """Convert the UNet's 5-D parameters to ``channels_last_3d`` and 4-D ones to ``channels_last``
    in place (idempotent; values unchanged)."""
    for p in unet.parameters():
        if p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        elif p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)


def prepare_input(sample: torch.Tensor, settings) -> torch.Tensor:
    """The UNet input ``(B, 9, F, h, w)`` in the memory format of ``settings``."""
    return sample.contiguous(memory_format=torch.channels_last_3d) if settings.channels_last else sample


def unet_callable(unet, settings):
    """The UNet, or its ``torch.compile`` wrapper (built once per model and backend)."""
    if settings.channels_last and unet not in _CHANNELS_LAST:
        to_channels_last(unet)
        _CHANNELS_LAST.add(unet)
    if not settings.compile_backend:
        return unet
    per_model = _COMPILED.setdefault(unet, {})
    if settings.compile_backend not in per_model:
        per_model[settings.compile_backend] = torch.compile(unet, backend=settings.compile_backend)
    return per_model[settings.compile_backend]
