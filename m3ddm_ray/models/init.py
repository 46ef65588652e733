"""The official initialisation of a new M3DDM UNet: it starts as a per-frame (2-D) network.

The official model code sets these values in its module constructors; :func:`official_init` sets the
same values on a UNet built here (whose constructors keep torch's default initialisation):

* every pseudo-3-D convolution's temporal ``Conv1d`` (``temporal_conv``, also in ``conv_out``): Dirac
  kernel (``torch.nn.init.dirac_``: 1 at the centre tap from channel ``i`` to channel ``i``) and zero
  bias, i.e. the identity (official ``Pseudo3DConv.__init__``, ``src/model/layer.py``);
* every spatial-temporal transformer's ``proj_in2`` and ``proj_out2`` (1x1x1 ``Conv3d``): Dirac kernel
  and zero bias (official ``SpatialTemporalTransformer.__init__``, ``src/model/attention.py``). With as
  many inner channels as channels (every released and tiny config: ``channels`` divisible by the head
  count) this is the identity; otherwise ``dirac_`` maps channel ``i`` to channel ``i`` for
  ``i < min(in, out)`` and the remaining rows or columns are zero;
* every attention's output projection ``to_out[0].weight``: zero (official ``CrossAttention.__init__``,
  ``src/model/attention.py``). Its **bias is not zeroed** (the official code leaves torch's default
  init), so a fresh attention adds a constant vector that does not depend on its input.

Everything else (spatial convolutions, embeddings, feed-forwards, norms, the global-frame encoder)
keeps torch's default initialisation, as in the official code.

What "per-frame" means for the fresh network: no layer mixes the values of different frames except
the GroupNorms of the ResNet blocks, of the temporal half of the transformers and of the output,
which normalise jointly over the frames of a clip (their statistics see every frame), and the
temporal half's frame-position embedding, which makes the token-wise feed-forward depend on the
frame index. With those two set aside, frame ``f`` of the output is a function of frame ``f`` of the
input alone: permuting the frames of the input permutes those of the output.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Attention, Pseudo3DConv, SpatialTemporalTransformer

#: Initialisations of a UNet built from a config (``loading.unet_from_config``'s ``init``):
#: the official one (:func:`official_init`) or torch's default in every layer.
UNET_INITS = ("official", "random")


def _identity_(conv: nn.Module) -> None:
    """Dirac kernel and zero bias on ``conv`` (Conv1d / Conv3d); nothing on ``meta``."""
    if not conv.weight.is_meta:
        nn.init.dirac_(conv.weight)
        nn.init.zeros_(conv.bias)


@torch.no_grad()
def official_init(unet: nn.Module) -> nn.Module:
    """Give ``unet`` (in place) the official initial values of its temporal layers and attentions.

    Args:
        unet: an M3DDM ``UNet3DConditionModel`` (or any module holding :class:`Pseudo3DConv`,
            :class:`SpatialTemporalTransformer` and :class:`Attention` layers), any dtype and device.
            Parameters on the ``meta`` device hold no values and are left as they are, so a model
            built on ``meta`` to receive a checkpoint costs nothing here.

    Returns:
        ``unet`` itself. Sets: ``temporal_conv`` of every :class:`Pseudo3DConv`, ``proj_in2`` and
        ``proj_out2`` of every :class:`SpatialTemporalTransformer` to Dirac kernels with zero bias;
        ``to_out[0].weight`` of every :class:`Attention` to zero (its bias untouched). Source: official
        ``Pseudo3DConv.__init__`` (``src/model/layer.py``), ``SpatialTemporalTransformer.__init__`` and
        ``CrossAttention.__init__`` (``src/model/attention.py``) of
        ``alimama-creative/M3DDM-Video-Outpainting``.
    """
    for module in unet.modules():
        if isinstance(module, Pseudo3DConv):
            _identity_(module.temporal_conv)
        elif isinstance(module, SpatialTemporalTransformer):
            _identity_(module.proj_in2)
            _identity_(module.proj_out2)
        elif isinstance(module, Attention):
            weight = module.to_out[0].weight
            if not weight.is_meta:
                nn.init.zeros_(weight)
    return unet
