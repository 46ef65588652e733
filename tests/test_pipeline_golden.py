"""End-to-end parity with the official inference (golden README §4, §6.2).

Both golden cases are replayed window by window with the recorded VAE posterior noise injected in
the official call order and the seeded diffusion noise; our own final latents are fed forward as
guides. Checked: canvases, global frames, initial latents, first UNet call, final latents of every
window, and the composited output frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3ddm_ray import geometry
from m3ddm_ray.pipeline import (
    ClipState,
    OutpaintSettings,
    Outpainter,
    PerWindowLatents,
    finalize_clip,
    generated_array,
    prepare_clip,
)
from m3ddm_ray.sampling import RecordedPosteriorNoise, window_noise

from conftest import GOLDEN

CASES = {"case_short": ("16:9", 24.0), "case_hier": ("9:16", 15.0)}


@pytest.fixture(scope="module", params=sorted(CASES))
def replay(request, tiny_unet, tiny_vae):
    """Run the whole case once per module; return everything the tests look at."""
    case = request.param
    ratio, fps = CASES[case]
    folder = GOLDEN / case
    windows = dict(np.load(folder / "windows.npz"))
    preproc = dict(np.load(folder / "preproc.npz"))
    frames = np.load(folder / "input_frames.npy")
    settings = OutpaintSettings(canvas_size=64, paste_mode="official")
    clip = prepare_clip(frames, fps, ratio, settings)
    n = len(clip.plan.windows)
    noise = RecordedPosteriorNoise([windows[f"vae_eps_{j}"] for j in range(2 * n)])
    latents = PerWindowLatents(tiny_vae, clip, noise)
    finals, inits = {}, {}
    original = latents.window_latents

    def record_init(window):  # keep z_init to check the initial noised latents
        out = original(window)
        inits[window.index] = out[0]
        return out

    latents.window_latents = record_init
    state = ClipState()
    Outpainter(tiny_unet, tiny_vae, settings).run_windows(
        clip, clip.plan.windows, state, latents=latents,
        on_window=lambda w, x: finals.__setitem__(w.index, x.clone()))
    return dict(case=case, clip=clip, windows=windows, preproc=preproc, frames=frames, settings=settings,
                state=state, finals=finals, inits=inits, noise=noise, n=n)


def test_canvases_masks_and_global_frames(replay):
    clip, pre = replay["clip"], replay["preproc"]
    assert np.array_equal(clip.masked, pre["masked"])
    assert np.array_equal(clip.inpainted, pre["inpainted"])
    assert np.array_equal(clip.mask, pre["mask"])
    assert np.abs(clip.global_frames - pre["global_frames"]).max() <= 1e-6
    for i in range(replay["n"]):
        assert np.array_equal(replay["windows"][f"w{i}_mask"][0, 0], clip.mask.astype(np.float32))


def test_all_recorded_posterior_draws_consumed_in_order(replay):
    assert replay["noise"].calls == 2 * replay["n"]


def test_initial_latents(replay):
    from m3ddm_ray.sampling import make_scheduler

    w = replay["windows"]
    noise = window_noise((1, 4, 16, 8, 8), 6)
    sched = make_scheduler()
    sched.set_timesteps(50)
    t = sched.timesteps[1]
    assert int(t) == 961 and int(w["w0_add_noise_t"]) == 961
    assert [int(x) for x in sched.timesteps[1:]] == [int(x) for x in w["unet_timesteps"]]
    for i, z0 in replay["inits"].items():
        init = sched.add_noise(z0, noise, t[None])
        assert (init - torch.from_numpy(w[f"w{i}_init_latents"])).abs().max() <= 1e-5


def test_final_latents_of_every_window(replay):
    w = replay["windows"]
    worst = 0.0
    for i in range(replay["n"]):
        ref = torch.from_numpy(w[f"w{i}_decoded_latents"])[0]
        worst = max(worst, (replay["finals"][i] - ref).abs().max().item())
    assert worst <= 1e-4, f"{replay['case']}: final latents differ by {worst:.2e}"


def test_first_unet_call_from_recorded_inputs(replay, tiny_unet):
    w = replay["windows"]
    for i in range(replay["n"]):
        g = torch.from_numpy(w[f"w{i}_unet0_ehs"])
        ctx = torch.cat([torch.zeros_like(g), torch.zeros_like(g), g, g])
        with torch.no_grad():
            out = tiny_unet(torch.from_numpy(w[f"w{i}_unet0_in"]), 961, ctx, fps=float(w[f"w{i}_fps"])).sample
        assert (out - torch.from_numpy(w[f"w{i}_unet0_out"])).abs().max() <= 1e-4


def test_output_frames_match_official(replay):
    clip, state = replay["clip"], replay["state"]
    ref = np.load(GOLDEN / replay["case"] / "out_frames_T.npy")
    composite = geometry.paste_back(generated_array(clip, state), clip.masked, clip.mask, mode="official")
    assert composite.shape == ref.shape  # exactly T frames, no junk frames past the end
    diff = np.abs(composite.astype(int) - ref.astype(int))
    assert diff.max() <= 1
    assert (diff > 0).mean() <= 0.001
    known = clip.mask == 0
    assert np.array_equal(composite[:, known], ref[:, known])
    out = finalize_clip(clip, generated_array(clip, state), replay["settings"])
    y0, y1, x0, x1 = geometry.crop_box(clip.geom, clip.ratio)
    assert out.shape == (clip.num_frames, y1 - y0, x1 - x0, 3)
