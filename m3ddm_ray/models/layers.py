"""Building blocks of the M3DDM 3D UNet: embeddings, pseudo-3D convolution, ResNet block, attention.

Parameter names and shapes follow the official implementation
(``alimama-creative/M3DDM-Video-Outpainting``, ``src/model/{embeddings,layer,resnet,attention}.py``)
so that the released checkpoint loads unchanged; the code is written anew. Video tensors are
``(B, C, F, H, W)`` everywhere (batch, channels, frames, height, width).

GroupNorm placement matters for fidelity: ResNet blocks, the temporal half of the transformer and
the output norm normalise jointly over all frames of a clip (GroupNorm on the 5-D tensor); the
spatial half of the transformer normalises each frame on its own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(
    positions: torch.Tensor,
    dim: int,
    *,
    max_period: float = 1000.0,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
) -> torch.Tensor:
    """Sinusoidal embedding of timesteps, fps values or frame positions.

    Args:
        positions: ``(N,)`` values (any numeric dtype; converted to float32).
        dim: embedding width (even in every M3DDM config).
        max_period: lowest frequency is ``1 / max_period``. M3DDM uses 1000 for timesteps and
            frame positions and 30 for the fps condition (official ``Timesteps(max_period=...)``;
            note: not the 10000 of Stable Diffusion).
        flip_sin_to_cos: order ``[cos, sin]`` instead of ``[sin, cos]``.
        freq_shift: ``downscale_freq_shift`` of the official code (0 in the released config).

    Returns:
        ``(N, dim)`` float32.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    args = positions[:, None].float() * freqs[None, :]
    sin, cos = torch.sin(args), torch.cos(args)
    emb = torch.cat([cos, sin], dim=-1) if flip_sin_to_cos else torch.cat([sin, cos], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Two-layer MLP (Linear, SiLU, Linear) on a sinusoidal embedding: ``(N, in) -> (N, out)``."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class Pseudo3DConv(nn.Module):
    """Factorised 3-D convolution: a 2-D spatial conv per frame, then a 1-D temporal conv per pixel.

    ``(B, C_in, F, H, W) -> (B, C_out, F, H, W)``; zero padding keeps F, H, W. Parameters
    ``spatial_conv`` (Conv2d) and ``temporal_conv`` (Conv1d) as in the official ``Pseudo3DConv``
    (``src/model/layer.py``). Both are run as ``conv3d`` with a singleton kernel axis, which computes
    the same sums without moving the frames axis around.
    """

    def __init__(self, dim: int, dim_out: int, kernel_size: int = 3):
        super().__init__()
        self.spatial_conv = nn.Conv2d(dim, dim_out, kernel_size, padding=kernel_size // 2)
        self.temporal_conv = nn.Conv1d(dim_out, dim_out, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sw, tw = self.spatial_conv.weight, self.temporal_conv.weight
        k, kt = sw.shape[-1], tw.shape[-1]
        x = F.conv3d(x, sw.unsqueeze(2), self.spatial_conv.bias, padding=(0, k // 2, k // 2))
        return F.conv3d(x, tw[:, :, :, None, None], self.temporal_conv.bias, padding=(kt // 2, 0, 0))


class ResnetBlockP3D(nn.Module):
    """ResNet block with pseudo-3D convs, conditioned on the timestep and the fps embeddings.

    ``x (B, C_in, F, H, W), temb (B, T), femb (B, T) -> (B, C_out, F, H, W)``. GroupNorms are joint over
    all frames. Follows the official ``ResnetBlockP3D`` (``src/model/resnet.py``), output scale 1.
    """

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = Pseudo3DConv(in_channels, out_channels, 3)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.fps_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = Pseudo3DConv(out_channels, out_channels, 3)
        self.conv_shortcut = (
            nn.Conv3d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, femb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = h + self.fps_emb_proj(F.silu(femb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample3D(nn.Module):
    """Spatial 2x downsampling by a strided ``(1, 3, 3)`` Conv3d: ``(B, C, F, H, W) -> (B, C, F, ⌈H/2⌉, ⌈W/2⌉)``."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, padding, padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest 2x spatial upsampling (or to ``size``) then a ``(1, 3, 3)`` Conv3d, per frame."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.bfloat16:  # nearest upsampling kernels lack bf16 on some builds
            x = x.float()
        f = x.shape[2]
        if size is None:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        else:
            x = F.interpolate(x, size=(f, *size), mode="nearest")
        return self.conv(x.to(dtype))


class Attention(nn.Module):
    """Multi-head attention with ``to_q/to_k/to_v`` (no bias) and ``to_out.0`` (with bias).

    ``x (N, L, C)``, optional ``context (N, S, C_ctx)`` (self-attention when None) ``-> (N, L, C)``.
    Uses :func:`torch.nn.functional.scaled_dot_product_attention` with the default scale
    ``1/sqrt(head_dim)``, which computes the official naive softmax attention
    (``CrossAttention._attention``, ``src/model/attention.py``) up to float rounding.
    """

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim if context_dim is not None else query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        n, length, inner = t.shape
        return t.view(n, length, self.heads, inner // self.heads).transpose(1, 2)

    #: Optional cross-attention cache hook (:class:`m3ddm_ray.caching.CrossAttentionCache`); None = off.
    cache = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None and self.cache is not None:
            return self.cache(self, x, context)
        ctx = x if context is None else context
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(ctx)), self._split(self.to_v(ctx))
        return self.attend(q, k, v)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Heads ``(N, heads, L, d)`` / ``(N, heads, S, d)`` -> projected output ``(N, L, C)``."""
        out = F.scaled_dot_product_attention(q, k, v)
        n, _, length, _ = out.shape
        return self.to_out[0](out.transpose(1, 2).reshape(n, length, -1))


class GEGLU(nn.Module):
    """Gated GELU projection ``(…, dim_in) -> (…, dim_out)`` (one Linear to ``2 * dim_out``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, ``net = [GEGLU(dim, 4 dim), Dropout, Linear(4 dim, dim)]`` (dropout 0)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm transformer block: self-attention, attention to ``context``, GEGLU feed-forward.

    ``x (N, L, C)``. ``attn2`` attends to ``context`` when the block was built with a
    ``context_dim`` and a context is given; otherwise it is a second self-attention (the temporal
    blocks of M3DDM). A context may be given per query group: with ``groups > 1``, ``x`` is
    ``(N * groups, L, C)`` and ``context`` is ``(N, S, C_ctx)`` shared by the ``groups`` consecutive
    rows (the frames of one clip), which avoids materialising the context once per frame.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None):
        super().__init__()
        self.attn1 = Attention(dim, heads, head_dim)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, groups: int = 1) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        h = self.norm2(x)
        if context is None:
            x = self.attn2(h) + x
        else:
            # Cross-attention is row-wise: fold the frames of one clip into the query sequence so
            # every frame attends to the same (un-copied) global-frame tokens.
            n_f, length, c = h.shape
            h = h.reshape(n_f // groups, groups * length, c)
            x = self.attn2(h, context).reshape(n_f, length, c) + x
        return self.ff(self.norm3(x)) + x


class SpatialTemporalTransformer(nn.Module):
    """Spatial transformer (per frame, cross-attending to global tokens) then temporal transformer.

    ``x (B, C, F, H, W)``, ``context (B, N_tokens, C_ctx)`` -> ``(B, C, F, H, W)``.

    Spatial half: GroupNorm per frame (eps 1e-6), 1x1 ``proj_in``, one :class:`BasicTransformerBlock`
    over the ``H*W`` tokens of each frame with cross-attention to the global-frame tokens, ``proj_out``,
    residual. Temporal half: GroupNorm jointly over frames, 1x1x1 ``proj_in2``, add the frame-position
    embedding (sinusoid of the frame index, max period 1000, through ``temporal_position_embed_proj``),
    one block over the ``F`` frames of each pixel whose two attentions are both self-attention,
    ``proj_out2``, residual. Follows the official ``SpatialTemporalTransformer``
    (``src/model/attention.py``).
    """

    def __init__(self, channels: int, heads: int, groups: int, context_dim: int | None, pos_dim: int = 320):
        super().__init__()
        head_dim = channels // heads
        inner = heads * head_dim
        self.pos_dim = pos_dim
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, head_dim, context_dim)])
        self.proj_out = nn.Conv2d(inner, channels, 1)
        self.temporal_position_embed_proj = TimestepEmbedding(pos_dim, inner)
        self.norm2 = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in2 = nn.Conv3d(channels, inner, 1)
        self.transformer_blocks2 = nn.ModuleList([BasicTransformerBlock(inner, heads, head_dim, None)])
        self.proj_out2 = nn.Conv3d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        b, c, f, h, w = x.shape
        # spatial: frames are independent images
        res = x.transpose(1, 2).reshape(b * f, c, h, w)
        t = self.proj_in(self.norm(res))
        inner = t.shape[1]
        t = t.permute(0, 2, 3, 1).reshape(b * f, h * w, inner)
        for block in self.transformer_blocks:
            t = block(t, context, groups=f)
        t = self.proj_out(t.reshape(b * f, h, w, inner).permute(0, 3, 1, 2))
        x = (t + res).reshape(b, f, c, h, w).transpose(1, 2)
        # temporal: each pixel is a sequence of F frames
        res = x
        t = self.proj_in2(self.norm2(x))
        t = t.permute(0, 3, 4, 2, 1).reshape(b * h * w, f, inner)
        pos = torch.arange(f, device=x.device, dtype=x.dtype)
        pos = sinusoidal_embedding(pos, self.pos_dim, max_period=1000.0).to(x.dtype)
        t = t + self.temporal_position_embed_proj(pos)[None]
        for block in self.transformer_blocks2:
            t = block(t)
        t = t.reshape(b, h, w, f, inner).permute(0, 4, 3, 1, 2)
        return self.proj_out2(t) + res
