"""Batched windows (issue 12 item 5, sampler side): independent windows of one pass run as one UNet
batch of ``windows x 3`` branches, capped by ``max_batch``, with the results of one-by-one runs up
to float rounding; ``max_batch`` is not in the config hash."""

from __future__ import annotations

import numpy as np
import pytest

from m3ddm_ray.distributed.config import config_hash, job_settings, load_config
from m3ddm_ray.errors import InputError
from m3ddm_ray.pipeline import OutpaintSettings, Outpainter, batch_windows, prepare_clip
from m3ddm_ray.plan import plan_windows
from m3ddm_ray.sampling import SamplerSettings, make_scheduler, sample_window, sample_windows

from conftest import GOLDEN, PINNED_HUB
from test_schedulers import Recorder, window_inputs


@pytest.mark.parametrize("t", [60, 76, 151, 152, 226, 300, 301])
def test_groups_hold_only_independent_windows_of_one_pass(t):
    plan = plan_windows(t, 25.0)
    for cap in (1, 3, 8, 100):
        groups = batch_windows(plan.windows, cap)
        assert [w.index for g in groups for w in g] == list(range(len(plan.windows)))  # order kept
        for g in groups:
            assert 1 <= len(g) <= cap and len({w.pass_index for w in g}) == 1
            members = {w.index for w in g}
            assert not any(set(w.depends_on) & members for w in g)
    # the official [15, 5, 1] plan: each fine pass batches fully (its windows read earlier passes
    # only); the coarse windows chain (each starts on the previous one's last keyframe)
    assert plan.strides == (15, 5, 1)
    assert len(batch_windows(plan.fine, 100)) == 2
    assert len(batch_windows(plan.coarse, 100)) == len(plan.coarse)


def test_chained_windows_are_never_batched():
    plan = plan_windows(40, 25.0)  # strides [1]: window k+1 starts on window k's last frame
    assert plan.strides == (1,) and len(plan.windows) == 3
    assert [len(g) for g in batch_windows(plan.windows, 8)] == [1, 1, 1]


def test_sample_windows_equals_one_by_one(tiny_unet):
    inputs = [window_inputs(tiny_unet, seed) for seed in range(3)]
    for name in ("pndm-official", "dpmsolver++"):
        s = SamplerSettings(num_inference_steps=4, scheduler=name)
        rec = Recorder(tiny_unet)
        batched = sample_windows(rec, make_scheduler(None, s), inputs, s)
        assert batched.shape == (3, 4, 16, 8, 8)
        assert len(rec.calls) == 4 and rec.calls[0][0].shape == (9, 9, 16, 8, 8)  # 3 windows x 3 branches
        for k, inp in enumerate(inputs):
            one = sample_window(tiny_unet, make_scheduler(None, s), inp, s)
            # float rounding of a 9-row vs 3-row UNet batch, relative to the latents' scale (the random
            # tiny model's DPM-Solver++ latents reach |x| ~ 60; measured worst 5.8e-7 of it)
            worst = (batched[k:k + 1] - one).abs().max() / one.abs().max()
            assert worst <= 2e-6, (name, k, worst.item())


def test_batched_clip_equals_one_by_one(tiny_unet, tiny_vae):
    """case_hier (64 frames, [15, 5, 1], 7 windows), whole clip, coarse and fine stages."""
    frames = np.load(GOLDEN / "case_hier" / "input_frames.npy")
    runs = {}
    for cap in (1, 4):
        settings = OutpaintSettings(sampler=SamplerSettings(num_inference_steps=3, max_batch=cap), canvas_size=64)
        clip = prepare_clip(frames, 15.0, "9:16", settings)
        op = Outpainter(tiny_unet, tiny_vae, settings)
        steps = []
        state = op.run_coarse(clip, on_step=lambda i, n: steps.append(i))
        op.run_fine(clip, state, on_step=lambda i, n: steps.append(i))
        runs[cap] = (state, len(steps))
    (one, n1), (bat, n4) = runs[1], runs[4]
    assert n1 == n4 == 7 * 3  # progress still counts window-steps
    assert one.windows_done == bat.windows_done == list(range(7))
    assert sorted(one.stored) == sorted(bat.stored)
    worst = max(np.abs(one.stored[f] - bat.stored[f]).max() for f in one.stored)
    assert worst <= 1e-5, worst
    for f in one.generated:
        assert np.abs(one.generated[f].astype(int) - bat.generated[f].astype(int)).max() <= 1


def test_max_batch_is_not_hashed_and_reaches_the_job_settings():
    cfg = load_config(**PINNED_HUB, overrides=["sampler.max_batch=8"])
    assert job_settings(cfg).sampler.max_batch == 8
    assert config_hash(cfg) == config_hash(load_config(**PINNED_HUB))
    with pytest.raises(InputError, match="max_batch"):
        SamplerSettings(max_batch=0)
    with pytest.raises(InputError, match="official_batch4"):
        SamplerSettings(max_batch=2, official_batch4=True)


def test_windows_of_different_passes_are_refused(tiny_unet):
    a, b = window_inputs(tiny_unet, 0), window_inputs(tiny_unet, 1)
    b.fps = 5.0
    with pytest.raises(ValueError, match="same shape and fps"):
        sample_windows(tiny_unet, make_scheduler(), [a, b], SamplerSettings(num_inference_steps=2))
