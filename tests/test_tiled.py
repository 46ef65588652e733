"""The fused multi-tile sampler (m3ddm_ray.sampling_tiles.sample_tiled_windows) and its schedule
restart (m3ddm_ray.schedulers.restart_timesteps, m3ddm_ray.tiles.layout_skip)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from m3ddm_ray.errors import InputError
from m3ddm_ray.sampling import SamplerSettings, WindowInputs, make_scheduler, sample_windows
from m3ddm_ray.sampling_tiles import sample_tiled_windows, tile_window_inputs
from m3ddm_ray.schedulers import build_scheduler, restart_timesteps
from m3ddm_ray.tiles import fusion_weights, layout_skip, plan_tiles

from test_schedulers import Recorder, window_inputs


def _one_tile(side_px=64, factor=8):
    tiles = plan_tiles((side_px, side_px), (0, 0, 0, 0), side_px, 0, factor)
    return tiles, fusion_weights(tiles, (side_px, side_px), factor)


@pytest.mark.parametrize("name", ["pndm-official", "dpmsolver++", "euler"])
def test_one_tile_equals_sample_windows_bit_for_bit(name, tiny_unet):
    inputs = [window_inputs(tiny_unet, seed) for seed in range(2)]
    s = SamplerSettings(num_inference_steps=4, scheduler=name)
    tiles, weights = _one_tile()
    assert len(tiles) == 1
    want = sample_windows(tiny_unet, make_scheduler(None, s), inputs[:1], s)
    got = sample_tiled_windows(tiny_unet, make_scheduler(None, s), inputs, tiles, weights, 8, s)
    assert got.shape == (2, 4, 16, 8, 8)
    assert torch.equal(got[:1], want)
    want2 = sample_windows(tiny_unet, make_scheduler(None, s), inputs[1:], s)
    assert torch.equal(got[1:], want2)


class PointwiseUNet(nn.Module):
    """A stand-in UNet whose ε at a latent cell depends on that cell only (and the branch's context),
    so a fused tiled run must equal the whole-frame run exactly."""

    def __init__(self):
        super().__init__()
        self.calls = []

    device = property(lambda self: torch.device("cpu"))
    dtype = property(lambda self: torch.float32)

    def forward(self, sample, t, fps=None, global_tokens=None):
        self.calls.append(tuple(sample.shape))
        g = global_tokens[:, 0, 0].view(-1, 1, 1, 1, 1)
        return SimpleNamespace(sample=0.1 * sample[:, :4] + 0.05 * sample[:, 4:8] * sample[:, 8:9] + 0.01 * g)


def _frame_inputs(side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mask = torch.ones(1, 1, 16, side, side)
    mask[..., 5:11, 5:11] = 0
    tokens = torch.stack([torch.zeros(3, 8), z(3, 8)])
    return WindowInputs(z(1, 4, 16, side, side), z(1, 4, 16, side, side), z(1, 4, 16, side, side) * 0.1, mask,
                        {0: z(4, side, side), 15: z(4, side, side)}, tokens, 24.0)


@pytest.mark.parametrize("name", ["pndm-official", "dpmsolver++"])
def test_fused_tiles_of_a_pointwise_model_equal_the_whole_frame(name):
    inp = _frame_inputs()
    tiles = plan_tiles((128, 128), (0, 0, 0, 0), 64, 32, 8)  # 3 x 3 tiles of 8 cells, 4 shared
    assert len(tiles) == 9
    s = SamplerSettings(num_inference_steps=5, scheduler=name, max_batch=4)
    whole = sample_windows(PointwiseUNet(), make_scheduler(None, s), [inp], s)
    for kind in ("uniform", "linear"):
        unet = PointwiseUNet()
        got = sample_tiled_windows(unet, make_scheduler(None, s), [inp], tiles,
                                   fusion_weights(tiles, (128, 128), 8, kind), 8, s)
        assert torch.equal(got, whole), kind
        # 5 steps x 3 UNet calls of 4, 4 and 1 tiles (x 3 guidance branches)
        assert [c[0] for c in unet.calls] == [12, 12, 3] * 5 and unet.calls[0][1:] == (9, 16, 8, 8)


def test_uncovered_cells_keep_the_clean_latent_and_tiles_see_their_crops():
    inp = _frame_inputs(side=24)
    inp.mask[...] = 1
    inp.mask[..., 8:24, 8:24] = 0  # bottom-right 16 x 16 cells known
    tiles = plan_tiles((192, 192), (64, 192, 64, 192), 64, 0, 8)  # 3 x 3 grid, the 4 known tiles left out
    assert [(t.y0, t.x0) for t in tiles] == [(0, 0), (0, 64), (0, 128), (64, 0), (128, 0)]
    parts = tile_window_inputs(inp, tiles, 8)
    assert torch.equal(parts[2].z_cond, inp.z_cond[..., 0:8, 16:24])
    assert torch.equal(parts[4].guides[15], inp.guides[15][:, 16:24, 0:8])
    assert torch.equal(parts[3].mask, inp.mask[..., 8:16, 0:8])
    s = SamplerSettings(num_inference_steps=3, max_batch=8)
    out = sample_tiled_windows(PointwiseUNet(), make_scheduler(None, s), [inp], tiles,
                               fusion_weights(tiles, (192, 192), 8), 8, s)
    assert torch.equal(out[..., 8:24, 8:24], inp.z_init[..., 8:24, 8:24])
    assert not torch.equal(out[..., 0:8, 0:8], inp.z_init[..., 0:8, 0:8])


def test_tiled_sampler_refuses_tgate_over_several_calls_and_an_empty_plan():
    inp = _frame_inputs()
    tiles = plan_tiles((128, 128), (0, 0, 0, 0), 64, 32, 8)
    w = fusion_weights(tiles, (128, 128), 8)
    s = SamplerSettings(num_inference_steps=3, tgate_step=2, max_batch=4)
    with pytest.raises(InputError, match="max_batch >= 9"):
        sample_tiled_windows(PointwiseUNet(), make_scheduler(None, s), [inp], tiles, w, 8, s)
    with pytest.raises(InputError, match="no tile"):
        sample_tiled_windows(PointwiseUNet(), make_scheduler(None, s), [inp], (), w, 8, SamplerSettings())


def test_layout_skip_and_restart_timesteps():
    assert layout_skip(50, 1.0) == 0 and layout_skip(50, 0.6) == 20 and layout_skip(50, 0.001) == 49
    assert layout_skip(4, 0.5) == 2 and layout_skip(3, 0.5) == 1  # floor(1.5 + 1/2) = 2 steps run
    with pytest.raises(InputError, match="layout_strength"):
        layout_skip(50, 0.0)
    pndm = build_scheduler("pndm-official")
    assert restart_timesteps(pndm, 10, 0).tolist() == [801, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    # PLMS from 501: its second timestep twice (the Heun correction of the first step)
    assert restart_timesteps(pndm, 10, 4).tolist() == [501, 401, 401, 301, 201, 101, 1]
    assert restart_timesteps(pndm, 10, 9).tolist() == [1]
    dpm = build_scheduler("dpmsolver++")
    assert restart_timesteps(dpm, 10, 4).tolist() == [599, 499, 399, 299, 199, 99]
    assert dpm.begin_index == 4
    with pytest.raises(InputError, match="skip=10"):
        restart_timesteps(dpm, 10, 10)


@pytest.mark.parametrize("name", ["pndm-official", "dpmsolver++", "unipc", "ddim", "euler"])
def test_a_restarted_schedule_takes_a_noised_latent_back_with_the_true_noise(name):
    """From ``add_noise(z0, ε, t_skip)``, stepping with the true ε at the restarted timesteps lands on
    the schedule's end: ``z0`` for the solvers that end at σ = 0, ``√ᾱ_0 z0 + √(1-ᾱ_0) ε`` for PNDM and
    DDIM (they end at ᾱ_0 = 1 - β_0, ``set_alpha_to_one=False``): every step moves exactly one timestep."""
    torch.manual_seed(0)
    z0, eps = torch.randn(1, 4, 2, 4, 4), torch.randn(1, 4, 2, 4, 4)
    sch = build_scheduler(name)
    ts = restart_timesteps(sch, 20, 8)
    x = sch.add_noise(z0, eps, ts[:1])
    for t in ts:
        x = sch.step(eps, t, x).prev_sample
    a0 = sch.alphas_cumprod[0]
    want = a0.sqrt() * z0 + (1 - a0).sqrt() * eps if name in ("pndm-official", "ddim") else z0
    assert (x - want).abs().max() < 1e-5


# --------------------------------------------------------------------------- the tiled run of a clip
class ClipRecorder(Recorder):
    """:class:`Recorder` that also serves the pipeline's global-frame encoding."""

    def encode_global_frames(self, *a, **kw):
        return self.inner.encode_global_frames(*a, **kw)


def _clip_frames():
    from conftest import GOLDEN
    import numpy as np

    return np.load(GOLDEN / "case_hier" / "input_frames.npy")[:16]  # one window ([1] plan)


def _settings(working_size=None, **kw):
    from m3ddm_ray.pipeline import OutpaintSettings
    from m3ddm_ray.tiles import TilingSettings

    return OutpaintSettings(sampler=SamplerSettings(num_inference_steps=4), canvas_size=64,
                            tiling=TilingSettings(working_size=working_size, overlap=32, layout_strength=0.6), **kw)


def test_working_size_equal_to_the_canvas_is_todays_run_bit_for_bit(tiny_unet, tiny_vae):
    import numpy as np

    from m3ddm_ray.pipeline import OutpaintPipeline
    from m3ddm_ray.tiled import TiledOutpaintPipeline

    frames = _clip_frames()
    plain_out, _, plain = OutpaintPipeline(tiny_unet, tiny_vae, _settings()).run_clip(frames, 15.0, "9:16")
    rec = ClipRecorder(tiny_unet)
    out, clip, state = TiledOutpaintPipeline(rec, tiny_vae, _settings(64)).run_clip(frames, 15.0, "9:16")
    assert len(rec.calls) == 4  # one window x 4 steps, no layout pass
    assert np.array_equal(out, plain_out)
    assert sorted(state.stored) == sorted(plain.stored)
    assert all(np.array_equal(state.stored[f], plain.stored[f]) for f in plain.stored)
    with pytest.raises(InputError, match="TiledOutpaintPipeline"):
        OutpaintPipeline(tiny_unet, tiny_vae, _settings(64)).run_clip(frames, 15.0, "9:16")


def test_tiled_run_at_twice_the_canvas(tiny_unet, tiny_vae):
    import numpy as np

    from m3ddm_ray import geometry
    from m3ddm_ray.tiled import TiledOutpaintPipeline, TiledOutpainter

    frames = _clip_frames()
    rec = ClipRecorder(tiny_unet)
    pipe = TiledOutpaintPipeline(rec, tiny_vae, _settings(128, output_size="source"))
    seen = []
    orig = TiledOutpainter.sample_group

    def spy(self, clip, inputs, on_step=None):
        out = orig(self, clip, inputs, on_step)
        seen.append((len(self.tiles_used), tuple(out.shape)))
        return out

    TiledOutpainter.sample_group = spy
    try:
        out, work, state = pipe.run_clip(frames, 15.0, "9:16")
    finally:
        TiledOutpainter.sample_group = orig
    assert work.geom.canvas_size == 128 and work.masked.shape == (16, 128, 128, 3)
    assert seen == [(9, (1, 4, 16, 16, 16))]  # 3 x 3 tiles of 64 px, a 128-px frame latent
    # layout pass 4 UNet calls, then 9 tiles x 3 calls (PLMS from 2 of 4 steps: 3 timesteps, one repeated)
    assert len(rec.calls) == 4 + 9 * 3 and rec.calls[-1][0].shape == (3, 9, 16, 8, 8)
    lay = geometry.source_resolution_layout(work.geom)
    assert out.shape == (16, *lay.out_hw, 3)
    oy, ox = lay.offset
    h, w = frames.shape[1:3]
    assert np.array_equal(out[:, oy:oy + h, ox:ox + w], frames)  # the known region at source resolution
    assert state.stored[0].shape == (4, 16, 16)


def test_tiling_config_is_read_and_checked():
    from m3ddm_ray.distributed.config import job_settings, load_config

    off = job_settings(load_config())
    assert not off.tiling.enabled and not any(k.startswith("tiling") for k in off.to_dict())
    on = job_settings(load_config(overrides=["tiling.working_size=512", "tiling.overlap=64",
                                             "tiling.layout_strength=0.5"]))
    assert (on.tiling.working_size, on.tiling.overlap, on.tiling.layout_strength) == (512, 64, 0.5)
    assert {k: v for k, v in on.to_dict().items() if k.startswith("tiling")} == {
        "tiling_working_size": 512, "tiling_overlap": 64, "tiling_layout_strength": 0.5}
    with pytest.raises(InputError, match=r"tiling.layout_strength=0.0 must be a number in \(0, 1\]"):
        job_settings(load_config(overrides=["tiling.layout_strength=0.0"]))
    with pytest.raises(InputError, match="tiling.working_size=500 must be None"):
        job_settings(load_config(overrides=["tiling.working_size=500"]))
    with pytest.raises(InputError, match="tiling.working_size=128 is smaller than canvas_size=256"):
        job_settings(load_config(overrides=["tiling.working_size=128"]))
    # the output name's hash covers every tiling setting
    from conftest import PINNED_HUB
    from m3ddm_ray.distributed.config import config_hash

    hashes = {config_hash(cfg, job_settings(cfg)) for cfg in (
        load_config(overrides=o, **PINNED_HUB) for o in ([], ["tiling.working_size=512"], ["tiling.working_size=768"],
                                                         ["tiling.working_size=512", "tiling.overlap=64"],
                                                         ["tiling.working_size=512", "tiling.layout_strength=0.5"]))}
    assert len(hashes) == 5


def test_tiling_settings_that_do_not_fit_the_model_are_named(tiny_unet, tiny_vae):
    from dataclasses import replace

    from m3ddm_ray.tiled import TiledOutpaintPipeline
    from m3ddm_ray.tiles import TilingSettings

    frames = _clip_frames()
    bad = replace(_settings(), tiling=TilingSettings(working_size=128, overlap=36))
    with pytest.raises(InputError, match="tiling.overlap=36 pixels is not a multiple of the VAE's downsampling factor 8"):
        TiledOutpaintPipeline(tiny_unet, tiny_vae, bad).run_clip(frames, 15.0, "9:16")


def test_tile_cuts_and_the_seam_ratio():
    import numpy as np

    from m3ddm_ray.quality import TILE_SEAM_EPS, tile_seam_ratio
    from m3ddm_ray.tiles import tile_cuts

    tiles = plan_tiles((128, 128), (0, 0, 0, 0), 64, 32, 8)
    assert tile_cuts(tiles, (128, 128)) == ((32, 64, 96), (32, 64, 96))
    h = w = 16
    mask = np.ones((h, w), np.uint8)
    mask[:, :4] = 0  # known columns 0..3
    ramp = np.tile((np.arange(w) * 3.0)[None, :], (h, 1))  # luma grows 3 levels per column
    frames = np.repeat(np.repeat(ramp[None, :, :, None], 3, axis=3), 2, axis=0).astype(np.uint8)
    # a smooth ramp: across the cut at column 8, 9 level²; elsewhere 9 along the other 10 x 16 row
    # pairs of generated pixels and 0 down the 12 x 15 column pairs
    other = 9 * (10 * 16) / (10 * 16 + 12 * 15)
    assert tile_seam_ratio(frames, mask, [], [8]) == pytest.approx(9 / (other + TILE_SEAM_EPS), rel=1e-12)
    step = frames.copy()
    step[:, :, 8:] = np.minimum(step[:, :, 8:].astype(int) + 40, 255).astype(np.uint8)  # a seam at column 8
    assert tile_seam_ratio(step, mask, [], [8]) == pytest.approx(43 ** 2 / (other + TILE_SEAM_EPS), rel=1e-12)
    # the known region does not count: a cut at column 2 has no generated pair across it
    assert np.isnan(tile_seam_ratio(frames, mask, [], [2]))
    with pytest.raises(InputError, match=r"cuts_x=\[16\] must lie in 1..15"):
        tile_seam_ratio(frames, mask, [], [16])


def _segmented_settings():
    from dataclasses import replace

    return replace(_settings(128, output_size="source"), strides=(3, 1))


def test_a_clip_in_segments_gives_the_same_output_wherever_its_segments_run(tiny_unet, tiny_vae):
    """31 frames with strides [3, 1]: a keyframe pass and two segments. Running the coarse stage,
    then each segment from a pickled copy of its sub-state on a fresh outpainter, in reverse order
    (as the batch job's actors may), gives :func:`run_tiled_clip`'s output bit for bit."""
    import pickle

    import numpy as np

    from conftest import GOLDEN
    from m3ddm_ray.pipeline import finalize_frames, generated_array, prepare_clip
    from m3ddm_ray.tiled import TiledOutpaintPipeline, TiledOutpainter, TiledState

    frames = np.load(GOLDEN / "case_hier" / "input_frames.npy")[:31]
    s = _segmented_settings()
    out, work, state = TiledOutpaintPipeline(tiny_unet, tiny_vae, s).run_clip(frames, 15.0, "9:16")
    assert out.shape[0] == 31 and sorted(state.generated) == list(range(31))
    assert work.masked.shape == (31, 128, 128, 3)
    clip = prepare_clip(frames, 15.0, "9:16", s)
    segs = clip.plan.segments()
    assert len(segs) == 2 and len(clip.plan.coarse) == 1
    read = lambda rows: frames[np.asarray(rows)]  # noqa: E731
    coarse = TiledOutpainter(tiny_unet, tiny_vae, s, source=read).run_coarse(clip)
    assert isinstance(coarse, TiledState) and sorted(coarse.layout_frames) == list(range(0, 31, 3))
    assert coarse.layout_frames[0].shape == (64, 64, 3) and coarse.stored[0].shape == (4, 16, 16)
    pieces = {}
    for seg in reversed(segs):
        sub = pickle.loads(pickle.dumps(coarse.for_segment(seg)))
        outp = TiledOutpainter(tiny_unet, tiny_vae, s, source=read)
        sub = outp.run_fine(clip.segment_slice(seg), sub)
        seg_work = outp.output_clip(clip, sub)
        assert seg_work.geom.canvas_size == 128 and seg_work.first_frame == seg.frame_range[0]
        rows = list(seg.output_frames)
        pieces[seg.index] = finalize_frames(seg_work, generated_array(seg_work, sub, rows), s,
                                            frames[rows[0]:rows[-1] + 1], rows).frames
    assert np.array_equal(np.concatenate([pieces[i] for i in range(len(segs))]), out)


@pytest.mark.parametrize("name", ["pndm-official", "dpmsolver++"])
def test_tile_groups_run_alone_on_their_boxes_equal_the_groups_run_together(name, tiny_unet):
    """Left and right borders (a 2:3 frame outpainted to 3:2): two groups of six tiles, interleaved
    in the row-major plan. Each group run alone on its latent box, with the frame's noise cropped,
    gives the cells of its tiles bit for bit (here every cell is some tile's)."""
    from dataclasses import replace

    from m3ddm_ray.sampling import window_noise
    from m3ddm_ray.tiles import group_plan, tile_groups

    g = torch.Generator().manual_seed(3)
    z = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mask = torch.ones(1, 1, 16, 16, 24)
    mask[..., 8:16] = 0
    tokens = window_inputs(tiny_unet).global_tokens
    inp = WindowInputs(z(1, 4, 16, 16, 24) * 0.8, z(1, 4, 16, 16, 24) * 0.8, z(1, 4, 16, 16, 24) * 0.1, mask,
                       {0: z(4, 16, 24)}, tokens, 24.0)
    tiles = plan_tiles((128, 192), (0, 128, 64, 128), 64, 32, 8)
    groups = tile_groups(tiles)
    assert [len(x) for x in groups] == [6, 6] and groups[0][:3] == (0, 1, 4)  # interleaved by rows
    w = fusion_weights(tiles, (128, 192), 8, "linear")
    s = SamplerSettings(num_inference_steps=3, scheduler=name, max_batch=4, seed=5)
    together = sample_tiled_windows(tiny_unet, make_scheduler(None, s), [inp], tiles, w, 8, s, skip=1)
    noise = window_noise(tuple(inp.z_init.shape), s.seed)
    assembled = inp.z_init.clone()
    for grp in groups:
        (y0, y1, x0, x1), gt, gw = group_plan(tiles, w, grp, 8)
        crop = lambda a: a[..., y0:y1, x0:x1]  # noqa: E731
        part = replace(inp, z_init=crop(inp.z_init), z_cond=crop(inp.z_cond), z_uncond=crop(inp.z_uncond),
                       mask=crop(inp.mask), guides={k: crop(v) for k, v in inp.guides.items()})
        alone = sample_tiled_windows(tiny_unet, make_scheduler(None, s), [part], gt, gw, 8, s, skip=1,
                                     noise=crop(noise))
        covered = torch.as_tensor(gw.normaliser > 0)
        assembled[..., y0:y1, x0:x1] = torch.where(covered, alone, assembled[..., y0:y1, x0:x1])
    assert torch.equal(assembled, together)


def _landscape_frames(n=16):
    import cv2
    import numpy as np

    from conftest import GOLDEN

    frames = np.load(GOLDEN / "case_hier" / "input_frames.npy")[:n]
    return np.stack([cv2.resize(f, (160, 90), interpolation=cv2.INTER_AREA) for f in frames])  # 16:9


def test_a_segment_in_units_run_anywhere_gives_the_tiled_pipelines_output(tiny_unet, tiny_vae):
    """16:9 -> 1:1 at twice the canvas: the top and the bottom band are two units. Each unit run on a
    fresh outpainter from a pickled copy of the coarse state (in reverse order, as the job's actors
    may), its box's pixels assembled, gives :func:`run_tiled_clip`'s output bit for bit; a unit's
    canvases hold pixels only in its box, and only its tiles are denoised."""
    import pickle

    import numpy as np

    from m3ddm_ray.pipeline import finalize_frames, prepare_clip
    from m3ddm_ray.tiled import TiledOutpaintPipeline, TiledOutpainter, assemble_units, unit_pixels

    frames = _landscape_frames()
    s = _settings(128, output_size="source")
    out, work, state = TiledOutpaintPipeline(tiny_unet, tiny_vae, s).run_clip(frames, 15.0, "1:1")
    clip = prepare_clip(frames, 15.0, "1:1", s)
    read = lambda rows: frames[np.asarray(rows)]  # noqa: E731
    outp = TiledOutpainter(tiny_unet, tiny_vae, s, source=read)
    units = outp.units(clip)
    assert [box for _, box in units] == [(0, 8, 0, 16), (8, 16, 0, 16)]
    (seg,) = clip.plan.segments()
    coarse = outp.run_coarse(clip)
    rows = list(seg.output_frames)
    parts = {}
    for u in reversed(range(len(units))):
        fresh = TiledOutpainter(tiny_unet, tiny_vae, s, source=read)
        sub = fresh.run_segment(clip, seg, pickle.loads(pickle.dumps(coarse.for_segment(seg))), u)
        assert len(fresh.tiles_used) == 3 and sub.box == tuple(8 * v for v in units[u][1])
        y0, y1 = sub.box[:2]
        gen = np.stack([sub.generated[f] for f in rows])
        assert not np.delete(gen, np.s_[y0:y1], axis=1).any() and gen[:, y0:y1].any()
        parts[u] = unit_pixels(sub.work, sub, rows)
        seg_work = fresh.output_clip(clip, sub)
    generated = assemble_units(seg_work.known_canvases(rows), [parts[u] for u in sorted(parts)])
    assert np.array_equal(generated, np.stack([state.generated[f] for f in rows]))
    got = finalize_frames(seg_work, generated, s, frames, rows).frames
    assert got.shape == out.shape and np.array_equal(got, out)


def test_a_units_box_is_encoded_alone(tiny_vae):
    """The VAE's GroupNorm and mid-block attention see the whole image: a box encoded alone is not
    the crop of the whole canvas's latents (no margin makes it so), it is the encode of the crop."""
    import numpy as np

    from m3ddm_ray.latents import ClipLatents, images_to_tensor
    from m3ddm_ray.pipeline import OutpaintSettings, prepare_clip
    from m3ddm_ray.sampling import encode_images

    frames = _landscape_frames()
    clip = prepare_clip(frames, 15.0, "1:1", OutpaintSettings(canvas_size=128))  # a working canvas
    w = clip.plan.windows[0]
    whole = ClipLatents(tiny_vae, clip, None, 16).window_latents(w)[1]
    boxed = ClipLatents(tiny_vae, clip, None, 16, box=(64, 128, 0, 128)).window_latents(w)[1]
    assert not boxed[..., :8, :].any()
    crop = clip.masked[list(w.frame_ids), 64:128]
    alone = encode_images(tiny_vae, images_to_tensor(np.ascontiguousarray(crop)), None)
    assert torch.equal(boxed[0, :, :, 8:], alone.permute(1, 0, 2, 3))
    assert not torch.equal(boxed[..., 8:, :], whole[..., 8:, :])
