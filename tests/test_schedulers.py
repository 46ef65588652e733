"""Schedulers by name (issue 10 item 1): every scheduler denoises a window and a whole clip on the
tiny golden model, starts from the inpainted latents noised to its first timestep, and is in the
config hash; ``pndm-official`` stays the exact official path."""

from __future__ import annotations

import json
import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from m3ddm_ray.distributed.config import config_hash, job_settings, load_config
from m3ddm_ray.errors import InputError
from m3ddm_ray.pipeline import OutpaintPipeline, OutpaintSettings
from m3ddm_ray.sampling import SamplerSettings, WindowInputs, make_scheduler, sample_window, window_noise
from m3ddm_ray.schedulers import SCHEDULERS, build_scheduler, start_timesteps

from conftest import DATA, GOLDEN, PINNED_HUB

SOLVERS = [s for s in SCHEDULERS if s != "pndm-official"]


class Recorder(nn.Module):
    """Wraps the UNet and records the input and timestep of every call."""

    def __init__(self, unet):
        super().__init__()
        self.inner, self.calls = unet, []

    device = property(lambda self: self.inner.device)
    dtype = property(lambda self: self.inner.dtype)

    def forward(self, sample, t, **kw):
        self.calls.append((sample.clone(), float(t)))
        return self.inner(sample, t, **kw)


def window_inputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mask = torch.zeros(1, 1, 16, 8, 8)
    mask[..., :, :3] = 1
    gl = z(16, 4, 8, 8) * 0.5
    tokens = unet.encode_global_frames(torch.cat([torch.zeros_like(gl), gl]), 2)
    return WindowInputs(z(1, 4, 16, 8, 8) * 0.8, z(1, 4, 16, 8, 8) * 0.8, z(1, 4, 16, 8, 8) * 0.1, mask,
                        {0: z(4, 8, 8)}, tokens, 24.0)


def alphas_cumprod():
    """SD 1.5's ᾱ_t (scaled_linear β from 0.00085 to 0.012), computed here, not by diffusers."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_denoises_a_window_from_its_first_timestep(name, tiny_unet):
    inp = window_inputs(tiny_unet)
    settings = SamplerSettings(num_inference_steps=5, scheduler=name)
    rec = Recorder(tiny_unet)
    out = sample_window(rec, make_scheduler(None, settings), inp, settings)
    assert out.shape == (1, 4, 16, 8, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert len(rec.calls) == 5  # one UNet call per step, 3 branches each
    first, t0 = rec.calls[0]
    assert first.shape == (3, 9, 16, 8, 8)
    # official quirk: PNDM starts at timesteps[1] (5 steps: 801, 601, 601, ... -> 601); solvers at 999
    assert t0 == (601.0 if name == "pndm-official" else 999.0)
    # the model input at the first call is sqrt(ᾱ)·z_init + sqrt(1-ᾱ)·ε for every scheduler
    # (Euler: z + σε, then scale_model_input divides by sqrt(σ²+1) -- the same thing)
    a = alphas_cumprod()[int(t0)]
    eps = window_noise((1, 4, 16, 8, 8), settings.seed)
    expected = (a.sqrt() * inp.z_init.double() + (1 - a).sqrt() * eps.double()).float()
    assert (first[2:3, :4] - expected).abs().max() <= 1e-5
    ts = [t for _, t in rec.calls]
    assert ts == sorted(ts, reverse=True) and ts[-1] < 250


def test_pndm_official_is_todays_exact_path(tiny_unet):
    """The default settings pick PNDM with the official timesteps (961, 961, 941, ..., 1) and give
    bit-identical latents to an explicitly named pndm-official."""
    sched = make_scheduler()
    assert type(sched).__name__ == "PNDMScheduler"
    ts = [int(t) for t in start_timesteps(sched, 50)]
    assert ts[:3] == [961, 961, 941] and ts[-1] == 1 and len(ts) == 50
    golden_ts = [int(t) for t in np.load(GOLDEN / "case_short" / "windows.npz")["unet_timesteps"]]
    assert ts == golden_ts
    inp = window_inputs(tiny_unet)
    a = sample_window(tiny_unet, make_scheduler(), inp, SamplerSettings(num_inference_steps=4))
    b = sample_window(tiny_unet, make_scheduler(None, SamplerSettings(scheduler="pndm-official")), inp,
                      SamplerSettings(num_inference_steps=4, scheduler="pndm-official"))
    assert torch.equal(a, b)


def test_schedulers_give_different_results_and_are_deterministic(tiny_unet):
    inp = window_inputs(tiny_unet)
    outs = {}
    for name in SCHEDULERS:
        s = SamplerSettings(num_inference_steps=4, scheduler=name)
        outs[name] = sample_window(tiny_unet, make_scheduler(None, s), inp, s)
        again = sample_window(tiny_unet, make_scheduler(None, s), inp, s)
        assert torch.equal(outs[name], again), name  # solver state is reset per window
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (outs[a] - outs[b]).abs().max() > 1e-4, (a, b)


def test_karras_sigmas_and_spacing_change_the_timesteps():
    plain = build_scheduler("dpmsolver++")
    karras = build_scheduler("dpmsolver++", karras_sigmas=True)
    leading = build_scheduler("dpmsolver++", timestep_spacing="leading")
    t_plain, t_karras, t_lead = (list(start_timesteps(s, 20)) for s in (plain, karras, leading))
    assert int(t_plain[0]) == 999 and int(t_lead[0]) < 999  # leading: SD-1.5-style offsets below 999
    assert [int(t) for t in t_plain] != [int(t) for t in t_karras]
    assert type(plain).__name__ == "DPMSolverMultistepScheduler"
    assert plain.config.algorithm_type == "dpmsolver++" and plain.config.solver_order == 2
    assert karras.config.use_karras_sigmas


def test_bad_scheduler_choices_are_input_errors():
    with pytest.raises(InputError, match="not known"):
        SamplerSettings(scheduler="heun")
    with pytest.raises(InputError, match="Karras"):
        SamplerSettings(scheduler="ddim", karras_sigmas=True)
    with pytest.raises(InputError, match="timestep_spacing"):
        SamplerSettings(scheduler="euler", timestep_spacing="random")
    with pytest.raises(InputError, match="not known"):
        job_settings(load_config(overrides=["sampler.scheduler=plms"]))


@pytest.mark.parametrize("name", SOLVERS)
def test_every_scheduler_runs_a_whole_clip(name, tiny_unet, tiny_vae):
    """Single-process pipeline, a 60-frame clip ([15, 5, 1] plan, 7 windows), 3 steps."""
    frames = np.load(GOLDEN / "case_hier" / "input_frames.npy")
    settings = OutpaintSettings(sampler=SamplerSettings(num_inference_steps=3, scheduler=name), canvas_size=64)
    out, clip, state = OutpaintPipeline(tiny_unet, tiny_vae, settings).run_clip(frames, 15.0, "9:16")
    assert out.shape[0] == frames.shape[0] and out.dtype == np.uint8
    assert sorted(state.windows_done) == list(range(len(clip.plan.windows)))


def test_scheduler_choice_is_in_the_config_hash_and_defaults_keep_their_hash():
    base = load_config(**PINNED_HUB)
    hashes = {name: config_hash(load_config(**PINNED_HUB, overrides=[f"sampler.scheduler={name}"])) for name in SCHEDULERS}
    assert len(set(hashes.values())) == len(SCHEDULERS)
    assert hashes["pndm-official"] == config_hash(base)
    for key in ("sampler.karras_sigmas=true", "sampler.timestep_spacing=leading", "sampler.steps=20"):
        cfg = load_config(**PINNED_HUB, overrides=["sampler.scheduler=dpmsolver++", key])
        assert config_hash(cfg) != hashes["dpmsolver++"], key
    # the default config hashes exactly the settings that existed before the scheduler settings
    # (with the weights identity -- here the pinned hub commits --, the resolved dtype and device
    # kind, and without the memory knob vae_batch_size)
    from m3ddm_ray.distributed.resources import local_gpu_count, resolve_device, resolve_dtype

    s = job_settings(base)
    old = {k: getattr(s, k) for k in s.__dataclass_fields__ if k not in ("sampler", "vae_batch_size", "tiling")}
    old.update(num_inference_steps=50, guidance_scale=2.0, previous_guidance_scale=4.0, seed=6,
               official_batch4=False, strides=None)
    device = resolve_device("auto", local_gpu_count())
    weights = {"model": {"hub": "alimama-creative/M3DDM-Video-Outpainting", "subfolder": None, "commit": "1" * 40},
               "vae": {"hub": "stable-diffusion-v1-5/stable-diffusion-v1-5", "subfolder": "vae", "commit": "2" * 40}}
    payload = {**weights, "dtype": resolve_dtype("auto", device),
               "device": device, "settings": old, "encode": base["encode"]}
    assert config_hash(base) == hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


@pytest.mark.ray
def test_job_end_to_end_with_a_solver(ray_session, tmp_path):
    from m3ddm_ray.distributed.job import run_job
    from m3ddm_ray.distributed.manifest import validate_manifest, write_manifest

    cfg = load_config(DATA.parent.parent / "configs" / "tiny-cpu.yaml",
                      ["sampler.scheduler=dpmsolver++", "sampler.steps=2", "ratios=['9:16']"])
    cfg["model"], cfg["vae"] = str(GOLDEN / "models" / "unet"), str(GOLDEN / "models" / "vae")
    uri = str(tmp_path / "m.jsonl")
    write_manifest(validate_manifest([{"video_uri": str(DATA / "megamind_20.mp4"), "clip_id": "m"}]), uri)
    result = run_job(cfg, uri, str(tmp_path / "out"))
    assert result.counts().get("ok") == 1, result.summary()
    row = result.table.to_pylist()[0]
    assert json.loads(row["settings"])["scheduler"] == "dpmsolver++"
    pndm = dict(cfg, sampler={**cfg["sampler"], "scheduler": "pndm-official"})
    assert row["config_hash"] == config_hash(cfg) != config_hash(pndm)


def test_preset_fast_selects_what_it_documents(tmp_path):
    """``fast`` = the official PNDM path at 20 steps with the exact caches (docs/performance.md, "Speed vs
    quality on the trained model"); every other key stays at its default; the YAML file and --set still
    win over the preset."""
    from m3ddm_ray.cli import build_parser, sampler_overrides, video_settings
    from m3ddm_ray.distributed.config import DEFAULTS

    s = job_settings(load_config(preset="fast")).sampler
    assert (s.scheduler, s.num_inference_steps, s.karras_sigmas, s.timestep_spacing, s.exact_caches) == (
        "pndm-official", 20, False, "trailing", True)
    assert (s.deepcache_interval, s.tgate_step, s.guidance_scale, s.previous_guidance_scale, s.seed) == (0, 0, 2.0, 4.0, 6)
    cfg = load_config(preset="fast")
    assert {k: v for k, v in cfg.items() if k not in ("sampler", "preset")} == {
        k: v for k, v in DEFAULTS.items() if k not in ("sampler", "preset")}
    assert config_hash(dict(cfg, **PINNED_HUB)) != config_hash(load_config(**PINNED_HUB))
    # the job command: --preset fast, and an explicit --set over it
    a = build_parser().parse_args(["outpaint", "--manifest", "m.jsonl", "--output", "o", "--preset", "fast",
                                   "--set", "sampler.steps=25"])
    cfg = load_config(None, sampler_overrides(a) + a.overrides)
    assert job_settings(cfg).sampler.scheduler == "pndm-official" and job_settings(cfg).sampler.num_inference_steps == 25
    # a YAML file naming the preset, with its own steps
    y = tmp_path / "c.yaml"
    y.write_text("preset: fast\nsampler:\n  steps: 30\n")
    assert job_settings(load_config(y)).sampler.num_inference_steps == 30
    assert job_settings(load_config(y)).sampler.scheduler == "pndm-official"
    # outpaint-video: --sampler-preset (its --preset is x264's); --steps only when given
    a = build_parser().parse_args(["outpaint-video", "in.mp4", "--ratio", "9:16", "--out", "o.mp4",
                                   "--sampler-preset", "fast"])
    assert video_settings(a).sampler.num_inference_steps == 20 and a.preset == "medium"
    a = build_parser().parse_args(["outpaint-video", "in.mp4", "--ratio", "9:16", "--out", "o.mp4",
                                   "--sampler-preset", "fast", "--steps", "50", "--scheduler", "unipc"])
    assert (video_settings(a).sampler.num_inference_steps, video_settings(a).sampler.scheduler) == (50, "unipc")
    with pytest.raises(InputError, match="preset"):
        load_config(preset="fastest")
