"""The official initialisation of a UNet built from a config (m3ddm_ray.models.init.official_init)."""

from __future__ import annotations

import json

import pytest
import torch

from m3ddm_ray.errors import InputError
from m3ddm_ray.models.layers import Attention, Pseudo3DConv, SpatialTemporalTransformer
from m3ddm_ray.models.loading import tiny_unet_config, unet_from_config

from conftest import GOLDEN


def _build(init: str, seed: int = 0):
    torch.manual_seed(seed)
    return unet_from_config(tiny_unet_config(), "tiny config", init=init).eval()


def _dirac(out_ch: int, in_ch: int, taps: tuple[int, ...]) -> torch.Tensor:
    """The identity kernel written out: 1 at the centre tap from channel i to channel i."""
    w = torch.zeros(out_ch, in_ch, *taps)
    for i in range(min(out_ch, in_ch)):
        w[(i, i) + tuple(t // 2 for t in taps)] = 1.0
    return w


def _official_names(unet) -> set[str]:
    """The parameter names official_init sets, found from the module types."""
    names = set()
    for name, m in unet.named_modules():
        if isinstance(m, Pseudo3DConv):
            names |= {f"{name}.temporal_conv.weight", f"{name}.temporal_conv.bias"}
        elif isinstance(m, SpatialTemporalTransformer):
            names |= {f"{name}.{p}.{t}" for p in ("proj_in2", "proj_out2") for t in ("weight", "bias")}
        elif isinstance(m, Attention):
            names.add(f"{name}.to_out.0.weight")
    return names


def test_temporal_layers_are_identities_and_attention_outputs_zero():
    unet = _build("official")
    convs = [m for m in unet.modules() if isinstance(m, Pseudo3DConv)]
    transformers = [m for m in unet.modules() if isinstance(m, SpatialTemporalTransformer)]
    attentions = [m for m in unet.modules() if isinstance(m, Attention)]
    # tiny config: 1 + 1 resnets down, 2 mid, 2 + 2 up (2 convs each), conv_out; 4 transformers
    # (down 0, mid, 2 in up 1) of 4 attentions each (attn1, attn2 of the spatial and temporal blocks)
    assert (len(convs), len(transformers), len(attentions)) == (2 * (1 + 1 + 2 + 2 + 2) + 1, 4, 16)
    for m in convs:
        w = m.temporal_conv.weight
        assert torch.equal(w, _dirac(w.shape[0], w.shape[1], (3,))) and not m.temporal_conv.bias.any()
    for m in transformers:
        for conv in (m.proj_in2, m.proj_out2):
            w = conv.weight
            assert w.shape[0] == w.shape[1]  # channels divisible by the heads: a true identity
            assert torch.equal(w, _dirac(w.shape[0], w.shape[1], (1, 1, 1))) and not conv.bias.any()
    for m in attentions:
        assert not m.to_out[0].weight.any()
        assert m.to_out[0].bias.abs().min() > 0  # the official code leaves the bias at torch's default


def test_official_init_changes_exactly_the_official_tensors():
    """Same seed: everything else equals torch's default initialisation (no extra RNG draws)."""
    official, random = _build("official"), _build("random")
    a, b = official.state_dict(), random.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == _official_names(official)
    assert len(changed) == 2 * 17 + 4 * 4 + 16


def test_fresh_network_is_per_frame_up_to_joint_norms_and_frame_positions():
    """Permuting the input frames permutes the output frames (frame-position embedding set aside,
    see m3ddm_ray.models.init); with torch's default init the temporal layers mix frames and it does not."""
    torch.manual_seed(1)
    x = torch.randn(1, 9, 6, 8, 8)
    glob = torch.randn(4, 4, 8, 8)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    outs = {}
    for init in ("official", "random"):
        unet = _build(init, seed=2)
        with torch.no_grad():
            for m in unet.modules():
                if isinstance(m, SpatialTemporalTransformer):
                    m.temporal_position_embed_proj.linear_2.weight.zero_()
                    m.temporal_position_embed_proj.linear_2.bias.zero_()
            out = unet(x, 500, glob, fps=5).sample
            out_perm = unet(x[:, :, perm], 500, glob, fps=5).sample
        outs[init] = (out[:, :, perm], out_perm)
    torch.testing.assert_close(*outs["official"], rtol=1e-4, atol=1e-5)
    assert (outs["random"][0] - outs["random"][1]).abs().max() > 1e-2


def test_meta_build_is_untouched_and_checkpoint_load_unchanged(tiny_unet):
    config = json.loads((GOLDEN / "full_config.json").read_text())
    with torch.device("meta"):
        model = unet_from_config(config)  # official init on meta: nothing to do
    assert all(p.is_meta for p in model.parameters())
    # the golden checkpoint loads over it: the official zeros do not survive a load
    attn = [m for m in tiny_unet.modules() if isinstance(m, Attention)]
    assert attn and all(m.to_out[0].weight.any() for m in attn)


def test_unknown_init_is_an_input_error():
    with pytest.raises(InputError, match=r"init='xavier': use one of official, random"):
        unet_from_config(tiny_unet_config(), init="xavier")


def test_training_builds_a_from_scratch_unet_with_the_official_init():
    from m3ddm_ray.training.config import load_train_config
    from m3ddm_ray.training.loop import build_unet

    for overrides, init in (([], "official"), (["model.unet_init=random"], "random")):
        unet = build_unet(load_train_config(None, ["train.device=cpu", *overrides]), seed=0)
        ref = _build(init, seed=0)
        a, b = unet.state_dict(), ref.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), init
        assert all(p.requires_grad for p in unet.parameters())
    with pytest.raises(InputError, match=r"model.unet_init='dirac': use one of official, random"):
        load_train_config(None, ["model.unet_init=dirac"])
