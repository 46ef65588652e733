"""Feature caches of the window sampler: exact ones (on by default) and approximate ones (opt-in).

Exact (``SamplerSettings.exact_caches``, default on; same numbers as recomputing, up to float
rounding of a different batch size):

* **Global-frame tokens once per clip** (:class:`TokenCache`): the cross-attention tokens of a clip's
  global-frame latents do not depend on the window or the step; they are encoded once per clip
  (the cache is keyed by the identity of the latent tensor, which :class:`~m3ddm_ray.pipeline.ClipLatents`
  keeps for the whole clip; the official per-window re-encoding gets new tensors and so recomputes).
* **Zero-context tokens once per model**: the "no global context" branches attend to the tokens of
  all-zero latents, the same for every clip of a given latent size; kept per UNet object.
* **Cross-attention K/V across a window's steps** (:class:`CrossAttentionCache`): the context of a
  window is fixed over its steps, so ``to_k(context)`` / ``to_v(context)`` of every cross-attention
  layer are computed at the first step and reused (bit-identical: the same op on the same tensor).

Approximate (off by default; they change the output and are part of the config hash):

* **DeepCache** (Ma et al., CVPR 2024, "DeepCache: Accelerating Diffusion Models for Free"):
  :func:`unet_forward_deepcache`. Every ``interval``-th step runs the whole UNet and keeps the input
  of the last two layers of the last up block (the deep features); the steps in between run only
  the shallow branch — ``conv_in``, the first layer of the first down block, those two up layers and
  the output convolution — on the kept deep features (skip branch 0 of the paper).
* **T-GATE** (Zhang et al., 2024, "Cross-Attention Makes Inference Cumbersome in Text-to-Image
  Diffusion Models"): from step ``k`` on, every cross-attention layer (to the global-frame context)
  returns the output it computed at step ``k - 1`` instead of attending again. Each guidance branch
  keeps its own output (the zero-context branches and the global-context branch stay distinct).

Both approximate caches are written here from the papers' descriptions; no code was copied.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Iterator

import torch

#: Per-UNet cache of zero-context tokens, keyed by (shape of the global latents, device, dtype).
_ZERO_TOKENS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def context_tokens(unet, g: torch.Tensor) -> torch.Tensor:
    """Uncached ``[zero context, context]`` tokens ``(2, N, C)`` of global latents ``g (G, 4, h, w)``
    (one ``encode_global_frames`` call on both, as the default path does)."""
    return unet.encode_global_frames(torch.cat([torch.zeros_like(g), g]).to(unet.device), 2)


def zero_tokens(unet, g: torch.Tensor) -> torch.Tensor:
    """Tokens ``(1, N, C)`` of all-zero global latents shaped like ``g``; computed once per UNet."""
    per_model = _ZERO_TOKENS.setdefault(unet, {})
    key = (tuple(g.shape), str(unet.device), str(unet.dtype))
    if key not in per_model:
        per_model[key] = unet.encode_global_frames(torch.zeros_like(g).to(unet.device), 1)
    return per_model[key]


class TokenCache:
    """``[zero context, context]`` tokens ``(2, N, C)`` of a clip's global latents, cached.

    Args:
        enabled: False recomputes both every call (:func:`context_tokens`).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._key: torch.Tensor | None = None
        self._tokens: torch.Tensor | None = None
        self.encodes = 0  # calls of the global encoder on a clip's latents (tests)

    def tokens(self, unet, g: torch.Tensor) -> torch.Tensor:
        """Tokens for global latents ``g (G, 4, h, w)`` (equal latents -> the cached tokens)."""
        if not self.enabled:
            self.encodes += 1
            return context_tokens(unet, g)
        same = self._key is g or (self._key is not None and self._key.shape == g.shape
                                  and self._key.device == g.device and torch.equal(self._key, g))
        if not same:
            self.encodes += 1
            tg = unet.encode_global_frames(g.to(unet.device), 1)
            self._key, self._tokens = g, torch.cat([zero_tokens(unet, g), tg])
        return self._tokens


class TGate:
    """Shared switch of the T-GATE caches of one sampling run: ``reuse`` is set by the sampler."""

    def __init__(self, step: int):
        self.step = int(step)
        self.reuse = False


class CrossAttentionCache:
    """Hook on one cross-attention :class:`~m3ddm_ray.models.layers.Attention` (its ``cache`` slot).

    Called as ``cache(attn, x, context)`` instead of the attention's own forward when a context is
    given; ``x (N, L, C)``, ``context (N', S, C_ctx)`` -> ``(N, L, C)``.

    Args:
        reuse_kv: keep ``K``/``V`` of the last context tensor and reuse them while the same tensor
            object comes back (exact).
        tgate: when given and ``tgate.reuse`` is set, return the output of the last computed call.
    """

    def __init__(self, reuse_kv: bool, tgate: TGate | None = None):
        self.reuse_kv, self.tgate = reuse_kv, tgate
        self._kv: tuple | None = None
        self._out: torch.Tensor | None = None
        self.kv_computed = 0  # how often K/V were computed (tests)

    def __call__(self, attn, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.tgate is not None and self.tgate.reuse and self._out is not None and self._out.shape == x.shape:
            return self._out
        q = attn._split(attn.to_q(x))
        if self.reuse_kv and self._kv is not None and self._kv[0] is context:
            k, v = self._kv[1], self._kv[2]
        else:
            k, v = attn._split(attn.to_k(context)), attn._split(attn.to_v(context))
            self.kv_computed += 1
            if self.reuse_kv:
                self._kv = (context, k, v)
        out = attn.attend(q, k, v)
        if self.tgate is not None:
            self._out = out
        return out


def cross_attentions(unet) -> list:
    """The cross-attention modules (``attn2`` of the spatial transformer blocks) of ``unet``."""
    from .models.layers import SpatialTemporalTransformer

    return [blk.attn2 for m in unet.modules() if isinstance(m, SpatialTemporalTransformer)
            for blk in m.transformer_blocks]


@contextlib.contextmanager
def attention_caches(unet, reuse_kv: bool, tgate: TGate | None = None) -> Iterator[list]:
    """Install :class:`CrossAttentionCache` hooks on every cross-attention of ``unet`` for one sampling
    run (one window or one batch of windows); removed on exit. Nothing is installed when neither
    cache is asked for. Yields the hooks."""
    if not reuse_kv and tgate is None:
        yield []
        return
    mods = cross_attentions(unet)
    hooks = [CrossAttentionCache(reuse_kv, tgate) for _ in mods]
    for m, h in zip(mods, hooks):
        m.cache = h
    try:
        yield hooks
    finally:
        for m in mods:
            m.cache = None


# --------------------------------------------------------------------------- DeepCache
def _up_split(unet) -> int:
    """Index of the first layer of the last up block that the shallow branch recomputes: the layers
    fed by the skips of ``conv_in`` and of the first down block's first layer (the last two)."""
    return max(0, len(unet.up_blocks[-1].resnets) - 2)


def _run_up_layers(block, x, skips, temb, femb, context, start: int, stop: int | None = None):
    """Layers ``start..stop-1`` of an up block (as ``UpBlock.forward``, without its upsampler)."""
    for i in range(start, len(block.resnets) if stop is None else stop):
        x = block.resnets[i](torch.cat([x, skips.pop()], dim=1), temb, femb)
        if block.attentions is not None:
            x = block.attentions[i](x, context)
    return x


def unet_forward_deepcache(unet, sample: torch.Tensor, timestep, fps, global_tokens: torch.Tensor,
                           store: dict, refresh: bool) -> torch.Tensor:
    """The UNet's ε ``(B, 4, F, h, w)`` with DeepCache reuse of the deep features.

    Args:
        unet: :class:`~m3ddm_ray.models.unet.UNet3DConditionModel` (at least two down blocks).
        sample, timestep, fps, global_tokens: as :meth:`UNet3DConditionModel.forward`.
        store: the run's cache (an empty dict at the first step; keep it for the whole window).
        refresh: run the whole UNet and refill ``store`` (always done when ``store`` is empty).

    A refresh step computes exactly what ``unet.forward`` computes (tested); the other steps are the
    DeepCache approximation described in the module docstring.
    """
    if len(unet.down_blocks) < 2 or unet.up_blocks[-1].upsamplers is not None:
        raise ValueError("DeepCache needs a UNet with at least two resolution levels")
    b = sample.shape[0]
    context = global_tokens.to(unet.dtype)
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    temb = unet._embed(timestep, b, 1000.0, unet.time_embedding, sample.device)
    femb = unet._embed(fps, b, 30.0, unet.fps_embedding, sample.device)
    x = unet.conv_in(sample.to(unet.dtype))
    last, j = unet.up_blocks[-1], _up_split(unet)
    if not refresh and store.get("deep") is not None and store["deep"].shape[0] == b:
        d0 = unet.down_blocks[0]
        skips = [x, d0.resnets[0](x, temb, femb)]
        if d0.attentions is not None:
            skips[1] = d0.attentions[0](skips[1], context)
        x = _run_up_layers(last, store["deep"], skips, temb, femb, context, j)
    else:
        skips = [x]
        for block in unet.down_blocks:
            x, states = block(x, temb, femb, context)
            skips.extend(states)
        x = unet.mid_block(x, temb, femb, context)
        for block in unet.up_blocks[:-1]:
            take = len(block.resnets)
            block_skips, skips = skips[-take:], skips[:-take]
            size = tuple(skips[-1].shape[-2:]) if (skips and block.upsamplers is not None) else None
            x = block(x, block_skips, temb, femb, context, size)
        x = _run_up_layers(last, x, skips, temb, femb, context, 0, j)
        store["deep"] = x
        x = _run_up_layers(last, x, skips, temb, femb, context, j)
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
