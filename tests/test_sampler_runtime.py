"""Device knobs of the sampler (issue 10 item 6, the CPU-testable part): bf16 autocast with float32
scheduler arithmetic, SDPA backend choice, channels-last, torch.compile; all default to today's
behaviour."""

from __future__ import annotations

import copy

import pytest
import torch

from m3ddm_ray import runtime
from m3ddm_ray.distributed.config import config_hash, job_settings, load_config
from m3ddm_ray.errors import InputError
from m3ddm_ray.sampling import SamplerSettings, make_scheduler, sample_window

from conftest import PINNED_HUB
from test_schedulers import Recorder, window_inputs


def run(unet, **kw):
    s = SamplerSettings(num_inference_steps=3, **kw)
    return sample_window(unet, make_scheduler(None, s), window_inputs(unet), s)


def test_defaults_are_todays_behaviour():
    s = SamplerSettings()
    assert (s.autocast, s.sdpa_backend, s.channels_last, s.compile_backend) == ("off", "auto", False, None)
    with runtime.unet_call_context(s, torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_autocast_runs_the_unet_in_bf16_and_the_scheduler_in_fp32(tiny_unet):
    seen = []
    hook = tiny_unet.conv_in.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    try:
        rec = Recorder(tiny_unet)
        s = SamplerSettings(num_inference_steps=3, autocast="bf16")
        out = sample_window(rec, make_scheduler(None, s), window_inputs(tiny_unet), s)
    finally:
        hook.remove()
    assert seen == [torch.bfloat16] * 3  # convolutions ran in bf16
    assert rec.calls[0][0].dtype == torch.float32  # the model input was built in fp32
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    ref = run(tiny_unet)
    diff = (out - ref).abs().max().item()
    assert 0 < diff < 0.1 * ref.abs().max().item()  # bf16 rounding: different, but close
    bf16 = load_config(**PINNED_HUB, overrides=["sampler.autocast=bf16"])
    assert config_hash(bf16) != config_hash(load_config(**PINNED_HUB))


def test_fp16_autocast_on_cpu_is_an_input_error(tiny_unet):
    with pytest.raises(InputError, match="bf16"):
        run(tiny_unet, autocast="fp16")
    with pytest.raises(InputError, match="autocast"):
        SamplerSettings(autocast="fp8")


def test_sdpa_backend_choice(tiny_unet, monkeypatch):
    ref = run(tiny_unet)
    assert (run(tiny_unet, sdpa_backend="math") - ref).abs().max() <= 1e-5
    chosen = []
    import torch.nn.attention as na

    real = na.sdpa_kernel
    monkeypatch.setattr(na, "sdpa_kernel", lambda backends: chosen.append(backends) or real(backends))
    run(tiny_unet, sdpa_backend="math")
    assert chosen and chosen[0] == [na.SDPBackend.MATH]
    with pytest.raises(InputError, match="sdpa_backend"):
        SamplerSettings(sdpa_backend="fastest")


def test_channels_last_gives_the_same_latents(tiny_unet):
    unet = copy.deepcopy(tiny_unet)  # the conversion is in place: keep the shared fixture untouched
    ref = run(unet)
    out = run(unet, channels_last=True)
    w = unet.conv_in.weight
    assert w.is_contiguous(memory_format=torch.channels_last_3d)
    assert (out - ref).abs().max() <= 1e-5


def test_compile_switch_wraps_the_unet_once(tiny_unet, monkeypatch):
    built = []

    def fake_compile(model, backend):
        built.append(backend)
        return model  # what torch.compile returns behaves like the module; keep the test cheap

    monkeypatch.setattr(torch, "compile", fake_compile)
    s = SamplerSettings(compile_backend="inductor")
    assert runtime.unet_callable(tiny_unet, s) is tiny_unet
    runtime.unet_callable(tiny_unet, s)
    assert built == ["inductor"]  # once per model and backend
    assert runtime.unet_callable(tiny_unet, SamplerSettings()) is tiny_unet
    runtime._COMPILED.pop(tiny_unet, None)


def test_device_knobs_reach_the_job_settings_and_only_autocast_is_hashed():
    over = ["sampler.sdpa_backend=efficient", "sampler.channels_last=true", "sampler.compile_backend=inductor"]
    cfg = load_config(**PINNED_HUB, overrides=over)
    s = job_settings(cfg).sampler
    assert (s.sdpa_backend, s.channels_last, s.compile_backend) == ("efficient", True, "inductor")
    assert config_hash(cfg) == config_hash(load_config(**PINNED_HUB))
    assert job_settings(load_config(overrides=["sampler.autocast=off"])).sampler.autocast == "off"  # YAML false
