"""The M3DDM 3D UNet (Fan et al., ACM MM 2023, §3): a masked video diffusion UNet.

Input ``sample (B, 9, F, h, w)``: channels ``[noisy latents (4), masked-video latents (4), mask (1)]``
at latent resolution (1/8 of the canvas); output the noise prediction ε ``(B, 4, F, h, w)``.
Conditioning: the diffusion timestep and the clip's fps (sinusoidal embeddings, max period 1000 and
30), and cross-attention to tokens of the 16 *global frames* (VAE latents of frames spread over the
whole video, encoded by :class:`GlobalFrameEncoder`).

The class name, config keys and parameter names are those of the official
``UNet3DConditionModel`` (``src/model/unet_3d_condition_video.py``), so the released
``config.json`` + ``diffusion_pytorch_model.{bin,safetensors}`` load unchanged (see
:mod:`m3ddm_ray.models.loading`). Only the block types of the released model are supported:
``CrossAttnDownBlock3D``, ``DownBlockP3D``, ``UpBlockP3D``, ``CrossAttnUpBlock3D``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .global_encoder import GlobalFrameEncoder
from .layers import (
    Downsample3D,
    Pseudo3DConv,
    ResnetBlockP3D,
    SpatialTemporalTransformer,
    TimestepEmbedding,
    Upsample3D,
    sinusoidal_embedding,
)

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock3D", "DownBlockP3D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock3D", "UpBlockP3D")


class DownBlock(nn.Module):
    """``layers`` ResNet blocks (each followed by a transformer if ``with_attention``), then an
    optional 2x downsampler. Returns the output and every intermediate state for the skips."""

    def __init__(self, cin, cout, temb, layers, groups, eps, heads, ctx_dim, with_attention, downsample, pad):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlockP3D(cin if i == 0 else cout, cout, temb, groups, eps) for i in range(layers)]
        )
        self.attentions = (
            nn.ModuleList([SpatialTemporalTransformer(cout, heads, groups, ctx_dim) for _ in range(layers)])
            if with_attention
            else None
        )
        self.downsamplers = nn.ModuleList([Downsample3D(cout, pad)]) if downsample else None

    def forward(self, x, temb, femb, context):
        states = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb, femb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            states.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            states.append(x)
        return x, states


class UpBlock(nn.Module):
    """``layers`` ResNet blocks on ``cat([x, skip])`` (each followed by a transformer if
    ``with_attention``), then an optional 2x upsampler."""

    def __init__(self, cin, cout, prev, temb, layers, groups, eps, heads, ctx_dim, with_attention, upsample):
        super().__init__()
        self.resnets = nn.ModuleList()
        for i in range(layers):
            skip = cin if i == layers - 1 else cout
            rin = prev if i == 0 else cout
            self.resnets.append(ResnetBlockP3D(rin + skip, cout, temb, groups, eps))
        self.attentions = (
            nn.ModuleList([SpatialTemporalTransformer(cout, heads, groups, ctx_dim) for _ in range(layers)])
            if with_attention
            else None
        )
        self.upsamplers = nn.ModuleList([Upsample3D(cout)]) if upsample else None

    def forward(self, x, skips, temb, femb, context, upsample_size=None):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb, femb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class MidBlock(nn.Module):
    """ResNet, transformer, ResNet at the lowest resolution."""

    def __init__(self, ch, temb, groups, eps, heads, ctx_dim):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlockP3D(ch, ch, temb, groups, eps) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialTemporalTransformer(ch, heads, groups, ctx_dim)])

    def forward(self, x, temb, femb, context):
        x = self.resnets[0](x, temb, femb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb, femb)


@dataclass
class UNetOutput:
    """``sample``: noise prediction ε, ``(B, out_channels, F, h, w)``."""

    sample: torch.Tensor


class UNet3DConditionModel(ModelMixin, ConfigMixin):
    """M3DDM masked 3D UNet with global-frame cross-attention (loads the released checkpoints).

    Config keys are the released ``config.json``'s. ``attention_head_dim`` is, as in the official code,
    the number of attention heads (8); each head has ``channels / 8`` dimensions.

    Call :meth:`forward` with either the global-frame latents (``encoder_hidden_states``) or tokens
    already computed by :meth:`encode_global_frames` (``global_tokens``) — the sampler computes the
    tokens once per window instead of once per step, since they do not depend on the timestep.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 9,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: Sequence[str] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlockP3D",
        ),
        up_block_types: Sequence[str] = ("UpBlockP3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int | None = 320,
        attention_head_dim: int = 8,
    ):
        super().__init__()
        for name in down_block_types:
            if name not in DOWN_BLOCK_TYPES:
                raise ValueError(f"unsupported down block type {name!r}; M3DDM uses {DOWN_BLOCK_TYPES}")
        for name in up_block_types:
            if name not in UP_BLOCK_TYPES:
                raise ValueError(f"unsupported up block type {name!r}; M3DDM uses {UP_BLOCK_TYPES}")
        if act_fn != "silu" or mid_block_scale_factor != 1:
            raise ValueError("only act_fn='silu' and mid_block_scale_factor=1 are supported (as released)")
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ValueError("down_block_types, up_block_types and block_out_channels must have the same length")

        ch0 = block_out_channels[0]
        temb = ch0 * 4
        groups, eps, heads = norm_num_groups, norm_eps, attention_head_dim
        self.conv_in = nn.Conv3d(in_channels, ch0, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.time_embedding = TimestepEmbedding(ch0, temb)
        self.fps_embedding = TimestepEmbedding(ch0, temb)

        n = len(block_out_channels)
        self.down_blocks = nn.ModuleList()
        cout = ch0
        for i, kind in enumerate(down_block_types):
            cin, cout = cout, block_out_channels[i]
            self.down_blocks.append(
                DownBlock(cin, cout, temb, layers_per_block, groups, eps, heads, cross_attention_dim,
                          kind == "CrossAttnDownBlock3D", i < n - 1, downsample_padding)
            )
        self.mid_block = MidBlock(block_out_channels[-1], temb, groups, eps, heads, cross_attention_dim)

        rev = list(reversed(block_out_channels))
        self.up_blocks = nn.ModuleList()
        cout = rev[0]
        for i, kind in enumerate(up_block_types):
            prev, cout = cout, rev[i]
            cin = rev[min(i + 1, n - 1)]
            self.up_blocks.append(
                UpBlock(cin, cout, prev, temb, layers_per_block + 1, groups, eps, heads, cross_attention_dim,
                        kind == "CrossAttnUpBlock3D", i < n - 1)
            )
        self.conv_norm_out = nn.GroupNorm(groups, ch0, eps=eps)
        self.conv_act = nn.SiLU()
        self.conv_out = Pseudo3DConv(ch0, out_channels, 3)
        self.global_img_encoder = GlobalFrameEncoder(cross_attention_dim or 320)

    # ------------------------------------------------------------------ conditioning
    def encode_global_frames(self, latents: torch.Tensor, batch: int) -> torch.Tensor:
        """Global-frame latents ``(batch * G, 4, h, w)`` -> cross-attention tokens ``(batch, G * t * t, 320)``.

        ``t = ⌈h/2⌉ - 2`` (14 at a 256 canvas: 3136 tokens for G = 16). Batch element ``i`` uses latents
        ``i*G .. (i+1)*G - 1`` (official ``rearrange(..., "(b g) c h w -> b (g h w) c")``).
        """
        maps = self.global_img_encoder(latents.to(self.dtype))
        n, c, th, tw = maps.shape
        g = n // batch
        return maps.reshape(batch, g, c, th * tw).permute(0, 1, 3, 2).reshape(batch, g * th * tw, c)

    def _embed(self, values, n: int, max_period: float, linear: TimestepEmbedding, device) -> torch.Tensor:
        # Python numbers become int64 (truncation), as the official torch.tensor([x], dtype=long).
        if not torch.is_tensor(values):
            values = torch.tensor([values], dtype=torch.long, device=device)
        elif values.ndim == 0:
            values = values[None].to(device)
        values = values.to(device).expand(n)
        emb = sinusoidal_embedding(
            values, self.config.block_out_channels[0], max_period=max_period,
            flip_sin_to_cos=self.config.flip_sin_to_cos, freq_shift=self.config.freq_shift,
        )
        return linear(emb.to(self.dtype))

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor | None = None,
        fps: torch.Tensor | int | float = 1,
        global_tokens: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNetOutput | tuple[torch.Tensor]:
        """Predict the noise ε.

        Args:
            sample: ``(B, 9, F, h, w)`` — noisy latents, masked-video latents (both scaled by 0.18215)
                and the latent mask (1 = generate), concatenated on channels.
            timestep: diffusion timestep (0-dim tensor, ``(B,)`` tensor or a number; numbers are
                truncated to int64 like the official code).
            encoder_hidden_states: global-frame latents ``(B * G, 4, h, w)``, G frames per batch element
                (zeros for the "no global context" branch of classifier-free guidance).
            fps: fps condition (``avg_fps // stride``); numbers are truncated to int64.
            global_tokens: ``(B, N, 320)`` tokens from :meth:`encode_global_frames`; replaces
                ``encoder_hidden_states``.

        Returns:
            :class:`UNetOutput` with ``sample`` ``(B, 4, F, h, w)`` in the dtype of the model.

        Raises:
            ValueError: when neither ``encoder_hidden_states`` nor ``global_tokens`` is given.
        """
        b = sample.shape[0]
        if global_tokens is None:
            if encoder_hidden_states is None:
                raise ValueError("give encoder_hidden_states (global-frame latents) or global_tokens")
            global_tokens = self.encode_global_frames(encoder_hidden_states, b)
        context = global_tokens.to(self.dtype)
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        temb = self._embed(timestep, b, 1000.0, self.time_embedding, sample.device)
        femb = self._embed(fps, b, 30.0, self.fps_embedding, sample.device)

        x = self.conv_in(sample.to(self.dtype))
        skips = [x]
        for block in self.down_blocks:
            x, states = block(x, temb, femb, context)
            skips.extend(states)
        x = self.mid_block(x, temb, femb, context)
        for i, block in enumerate(self.up_blocks):
            take = len(block.resnets)
            block_skips, skips = skips[-take:], skips[:-take]
            # latent sides that are not a multiple of 2**n_up: upsample to the skip's exact size
            size = tuple(skips[-1].shape[-2:]) if (skips and block.upsamplers is not None) else None
            x = block(x, block_skips, temb, femb, context, size)
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return UNetOutput(sample=x) if return_dict else (x,)
