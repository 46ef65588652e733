"""Feature caches of the sampler (issue 10 item 2): the exact caches give the same latents as no cache
(<= 1e-6) and really skip work; DeepCache and T-GATE change results only when switched on."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from m3ddm_ray import caching
from m3ddm_ray.distributed.config import config_hash, load_config
from m3ddm_ray.pipeline import OutpaintSettings, Outpainter, prepare_clip
from m3ddm_ray.sampling import SamplerSettings, make_scheduler, sample_window

from conftest import GOLDEN, PINNED_HUB
from test_schedulers import window_inputs


@contextlib.contextmanager
def count_calls(modules):
    """Count forward calls of ``modules``; yields a one-element list with the running count."""
    n = [0]
    handles = [m.register_forward_hook(lambda *a: n.__setitem__(0, n[0] + 1)) for m in modules]
    try:
        yield n
    finally:
        for h in handles:
            h.remove()


def run(unet, steps=4, **kw):
    s = SamplerSettings(num_inference_steps=steps, **kw)
    return sample_window(unet, make_scheduler(None, s), window_inputs(unet), s)


def run_clip(unet, vae, **kw):
    frames = np.load(GOLDEN / "case_hier" / "input_frames.npy")
    settings = OutpaintSettings(sampler=SamplerSettings(num_inference_steps=3, **kw), canvas_size=64)
    clip = prepare_clip(frames, 15.0, "9:16", settings)
    op = Outpainter(unet, vae, settings)
    state = op.run_fine(clip, op.run_coarse(clip))
    return state, op


def test_exact_caches_equal_no_cache_on_a_whole_clip(tiny_unet, tiny_vae):
    cached, op_c = run_clip(tiny_unet, tiny_vae, exact_caches=True)
    plain, op_p = run_clip(tiny_unet, tiny_vae, exact_caches=False)
    n_windows = len(cached.windows_done)
    assert n_windows == 7 and sorted(cached.stored) == sorted(plain.stored)
    worst = max(np.abs(cached.stored[f] - plain.stored[f]).max() for f in cached.stored)
    assert worst <= 1e-6, worst
    assert all(np.abs(cached.generated[f].astype(int) - plain.generated[f].astype(int)).max() <= 1 for f in plain.generated)
    # global tokens: once per clip (both stages share the clip's latents) vs once per window
    assert op_c.tokens.encodes == 1 and op_p.tokens.encodes == n_windows


def test_cross_attention_kv_is_computed_once_per_window(tiny_unet):
    attn2 = caching.cross_attentions(tiny_unet)
    assert len(attn2) == 4  # down 0, mid, 2 in the last up block of the tiny model
    keys = [a.to_k for a in attn2]
    with count_calls(keys) as n:
        cached = run(tiny_unet, steps=4, exact_caches=True)
    assert n[0] == len(attn2)  # once per layer for the whole window
    with count_calls(keys) as n:
        plain = run(tiny_unet, steps=4, exact_caches=False)
    assert n[0] == 4 * len(attn2)
    assert torch.equal(cached, plain)  # same op on the same tensor: bit-identical
    assert all(a.cache is None for a in attn2)  # hooks removed after the window


def test_zero_context_tokens_once_per_model(tiny_unet):
    g = torch.randn(16, 4, 8, 8)
    a = caching.zero_tokens(tiny_unet, g)
    with count_calls([tiny_unet.global_img_encoder]) as n:
        b = caching.zero_tokens(tiny_unet, g * 2)  # same shape: cached
    assert n[0] == 0 and a is b
    fresh = tiny_unet.encode_global_frames(torch.zeros_like(g), 1)
    assert (a - fresh).abs().max() <= 1e-6
    both = caching.TokenCache(True).tokens(tiny_unet, g)
    assert (both - caching.context_tokens(tiny_unet, g)).abs().max() <= 1e-6


def test_deepcache_refresh_step_is_the_full_unet_and_shallow_steps_skip_the_deep_blocks(tiny_unet):
    inp = window_inputs(tiny_unet)
    sample = torch.randn(3, 9, 16, 8, 8)
    store: dict = {}
    with torch.no_grad():
        full = tiny_unet(sample, 500, fps=24, global_tokens=inp.global_tokens[[0, 0, 1]]).sample
        ref = caching.unet_forward_deepcache(tiny_unet, sample, 500, 24, inp.global_tokens[[0, 0, 1]], store, True)
        assert torch.equal(full, ref) and store["deep"].shape[0] == 3
        with count_calls([tiny_unet.mid_block, tiny_unet.down_blocks[1]]) as n:
            shallow = caching.unet_forward_deepcache(tiny_unet, sample * 0.9, 480, 24,
                                                     inp.global_tokens[[0, 0, 1]], store, False)
    assert n[0] == 0 and shallow.shape == full.shape and torch.isfinite(shallow).all()


def test_deepcache_changes_results_only_when_switched_on(tiny_unet):
    base = run(tiny_unet)
    assert torch.equal(run(tiny_unet, deepcache_interval=0), base)
    assert torch.equal(run(tiny_unet, deepcache_interval=1), base)  # refresh every step = exact
    with count_calls([tiny_unet.mid_block]) as n:
        on = run(tiny_unet, deepcache_interval=2)
    assert n[0] == 2  # steps 0 and 2 of 4 run the deep blocks
    assert (on - base).abs().max() > 1e-4 and torch.isfinite(on).all()


def test_tgate_changes_results_only_when_switched_on(tiny_unet):
    base = run(tiny_unet)
    assert torch.equal(run(tiny_unet, tgate_step=0), base)
    assert torch.equal(run(tiny_unet, tgate_step=4), base)  # gate after the last step: never reused
    attn2 = caching.cross_attentions(tiny_unet)
    outs = []
    handle = attn2[0].register_forward_hook(lambda m, a, out: outs.append(out))
    try:
        with count_calls([a.to_q for a in attn2]) as n:
            on = run(tiny_unet, tgate_step=2)
    finally:
        handle.remove()
    assert n[0] == 2 * len(attn2)  # cross-attention computed at steps 0, 1 only
    assert len(outs) == 4 and outs[2] is outs[1] and outs[3] is outs[1] and not torch.equal(outs[0], outs[1])
    assert not torch.equal(on, base) and torch.isfinite(on).all()


def test_approximate_caches_are_hashed_exact_ones_are_not():
    h = config_hash(load_config(**PINNED_HUB))
    assert config_hash(load_config(**PINNED_HUB, overrides=["sampler.exact_caches=false"])) == h
    assert config_hash(load_config(**PINNED_HUB, overrides=["sampler.deepcache_interval=3"])) != h
    assert config_hash(load_config(**PINNED_HUB, overrides=["sampler.tgate_step=10"])) != h


@pytest.mark.parametrize("bad", ["deepcache_interval=-1", "tgate_step=-2"])
def test_bad_cache_settings_are_input_errors(bad):
    from m3ddm_ray.errors import InputError

    key, value = bad.split("=")
    with pytest.raises(InputError, match=key):
        SamplerSettings(**{key: int(value)})
