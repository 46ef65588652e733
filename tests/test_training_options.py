"""Objective and loop options that keep the released contract: Min-SNR-γ weights, EMA warm-up,
mask-policy mixes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from m3ddm_ray.errors import InputError
from m3ddm_ray.masks import make_policy
from m3ddm_ray.models.loading import load_unet
from m3ddm_ray.training import checkpoint as ckpt
from m3ddm_ray.training.config import objective_settings
from m3ddm_ray.training.data import clip_settings, local_batches, make_example
from m3ddm_ray.training.loop import build_unet, ema_decay_at, make_ema, train_loop
from m3ddm_ray.training.objective import (
    black_canvas_latent,
    build_inputs,
    loss_fn,
    make_noise_scheduler,
    min_snr_weights,
)

from test_training import small_cfg, sources, vae  # noqa: F401 - the same config builder and fixtures


def _metrics(path):
    return [json.loads(x) for x in (Path(path) / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- Min-SNR-γ
def test_min_snr_weights_follow_the_formula_from_the_sd15_betas():
    """min(SNR, γ) / SNR with SNR = ᾱ / (1 - ᾱ), ᾱ computed here in float64 from the SD 1.5 betas."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1.0 - betas)
    snr = abar / (1.0 - abar)
    t = torch.arange(1000)
    for gamma in (5.0, 1.0, 20.0):
        expected = np.minimum(snr, gamma) / snr
        got = min_snr_weights(t, make_noise_scheduler().alphas_cumprod, gamma)
        assert got.dtype == torch.float32 and got.shape == (1000,)
        np.testing.assert_allclose(got.numpy(), expected, rtol=2e-4)
        below = snr <= gamma  # low-SNR (noisy) timesteps keep weight 1 exactly
        assert below.any() and (~below).any() and (got.numpy()[below] == 1.0).all()
    # γ = 5: SNR(146) = 5.003, SNR(147) = 4.953; SNR(0) = 1175.5
    w = min_snr_weights(torch.tensor([0, 146, 147, 999]), make_noise_scheduler().alphas_cumprod, 5.0)
    assert w[1] < 1.0 and w[2] == 1.0 and w[3] == 1.0 and abs(float(w[0]) - 0.0042536) < 1e-6


def test_snr_floor_raises_the_noisy_timesteps_x0_weight_to_the_floor():
    """max(min(SNR, γ), floor) / SNR, from the SD 1.5 betas in float64; floor 1 alone is the
    truncated-SNR weighting max(SNR, 1) / SNR."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1.0 - betas)
    snr = abar / (1.0 - abar)
    t = torch.arange(1000)
    ac = make_noise_scheduler().alphas_cumprod
    for gamma, floor in ((5.0, 1.0), (None, 1.0), (5.0, 0.1), (2.0, 2.0)):
        x0 = np.maximum(snr if gamma is None else np.minimum(snr, gamma), floor)
        np.testing.assert_allclose(min_snr_weights(t, ac, gamma, floor).numpy(), x0 / snr, rtol=2e-4)
    w = min_snr_weights(torch.tensor([0, 340, 360, 999]), ac, 5.0, 1.0)
    # SNR(999) = 0.00468: weight 213.6; SNR crosses 1 between t = 340 and 360; SNR(0) = 1175.5
    assert abs(float(w[3]) - 213.59) < 0.05 and w[2] > 1.0 and w[1] == 1.0 and abs(float(w[0]) - 0.0042536) < 1e-6
    assert torch.equal(min_snr_weights(t, ac, 5.0, None), min_snr_weights(t, ac, 5.0))


def test_snr_floor_config_is_validated_and_reaches_the_loop(sources, vae, tmp_path):
    assert small_cfg()["objective"]["snr_floor"] is None
    s = objective_settings(small_cfg("objective.min_snr_gamma=5", "objective.snr_floor=1"))
    assert (s.min_snr_gamma, s.snr_floor, s.weighted) == (5, 1, True)
    assert objective_settings(small_cfg("objective.snr_floor=1")).weighted
    assert not objective_settings(small_cfg()).weighted
    for bad in ("0", "-1", "abc", "true", "6"):
        with pytest.raises(InputError, match=r"objective.snr_floor=.*must be a number > 0"):
            small_cfg("objective.min_snr_gamma=5", f"objective.snr_floor={bad}")
    runs = {}
    for floor in ("null", "1"):
        cfg = small_cfg("train.max_steps=1", "objective.min_snr_gamma=5", f"objective.snr_floor={floor}")
        train_loop(cfg, vae, lambda s: local_batches(cfg, sources, s), str(tmp_path / floor))
        runs[floor] = _metrics(tmp_path / floor)[0]["loss"]
    # same batch and noise: the floor only raises weights (1 / SNR(t) > 1 where SNR(t) < 1)
    assert runs["1"] >= runs["null"]


def test_noise_offset_adds_one_value_per_example_and_channel_and_changes_nothing_else(sources, vae):
    """Offset noise: target noise = the option-free noise + o · δ, δ one N(0, 1) value per (example,
    latent channel) shared by every frame and cell; timesteps, dropouts and the rest unchanged."""
    batch = next(local_batches(small_cfg(), sources))
    black = black_canvas_latent(vae, 64)
    base = build_inputs(vae, batch, objective_settings(small_cfg()), make_noise_scheduler(), black, "cpu")
    off = build_inputs(vae, batch, objective_settings(small_cfg("objective.noise_offset=0.5")),
                       make_noise_scheduler(), black, "cpu")
    assert torch.equal(base["timesteps"], off["timesteps"]) and torch.equal(base["global_latents"], off["global_latents"])
    assert torch.equal(base["sample"][:, 4:], off["sample"][:, 4:])  # condition and mask untouched
    delta = off["noise"] - base["noise"]  # (B, 4, F, h, w)
    per_channel = delta.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel), atol=1e-6)
    assert (per_channel[..., 0].abs() > 0).all()
    # the noisy latents carry the same noise: x_t = sqrt(abar) z0 + sqrt(1 - abar) (eps + o delta)
    abar = make_noise_scheduler().alphas_cumprod[base["timesteps"]].view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(off["sample"][:, :4] - base["sample"][:, :4], (1 - abar).sqrt() * delta)
    # δ ~ N(0, 1) times o: over many seeds the spread of the offsets is o
    from m3ddm_ray.training.objective import _draws

    n0 = _draws(torch.arange(2000), (4, 1, 1, 1), 1000)[0]
    n1 = _draws(torch.arange(2000), (4, 1, 1, 1), 1000, noise_offset=0.5)[0]
    assert abs(float((n1 - n0).std()) - 0.5) < 0.03
    for bad in ("-0.1", "2", "abc", "true"):
        with pytest.raises(InputError, match=r"objective.noise_offset=.*must be a number in \[0, 1\]"):
            small_cfg(f"objective.noise_offset={bad}")


def test_loss_without_weights_is_the_plain_mse_and_weights_scale_each_example(sources, vae):
    cfg = small_cfg()
    batch = next(local_batches(cfg, sources))
    inputs = build_inputs(vae, batch, objective_settings(cfg), make_noise_scheduler(),
                          black_canvas_latent(vae, 64), "cpu")
    unet = build_unet(cfg, seed=0).eval()
    with torch.no_grad():
        pred = unet(inputs["sample"], inputs["timesteps"], encoder_hidden_states=inputs["global_latents"],
                    fps=inputs["fps"]).sample
        plain = loss_fn(unet, inputs)
        w = torch.tensor([0.25, 1.0])
        weighted = loss_fn(unet, inputs, w)
    assert torch.equal(plain, torch.nn.functional.mse_loss(pred, inputs["noise"]))  # bit-identical
    per_example = ((pred - inputs["noise"]) ** 2).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(weighted, (0.25 * per_example[0] + per_example[1]) / 2, rtol=1e-6, atol=0)


def test_min_snr_gamma_config_is_validated_and_reaches_the_loop(sources, vae, tmp_path):
    assert small_cfg()["objective"]["min_snr_gamma"] is None
    assert objective_settings(small_cfg("objective.min_snr_gamma=5")).min_snr_gamma == 5
    for bad in ("0", "-1", "abc", "true"):
        with pytest.raises(InputError, match=r"objective.min_snr_gamma=.*must be a number > 0"):
            small_cfg(f"objective.min_snr_gamma={bad}")
    runs = {}
    for gamma in ("null", "0.001"):
        cfg = small_cfg("train.max_steps=1", f"objective.min_snr_gamma={gamma}")
        train_loop(cfg, vae, lambda s: local_batches(cfg, sources, s), str(tmp_path / gamma))
        runs[gamma] = _metrics(tmp_path / gamma)[0]["loss"]
    # same batch and noise: with γ = 0.001 every weight is 0.001 / SNR(t) < 1 (SNR(999) = 0.0047)
    assert runs["0.001"] < 0.5 * runs["null"]


# ----------------------------------------------------------------------------- EMA warm-up
def test_ema_decay_schedule():
    assert ema_decay_at(0.9, 1, warmup=False) == 0.9
    assert [ema_decay_at(0.999, n, warmup=True) for n in (1, 2, 3)] == [2 / 11, 3 / 12, 4 / 13]
    # (1 + n) / (10 + n) reaches 0.9 at n = 80
    assert ema_decay_at(0.9, 79, warmup=True) == 80 / 89 < 0.9
    assert ema_decay_at(0.9, 80, warmup=True) == 0.9 == ema_decay_at(0.9, 1000, warmup=True)
    with pytest.raises(InputError, match="train.ema_warmup='yes': must be true or false"):
        small_cfg("train.ema_warmup='yes'")


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_equals_diffusers_ema_model(warmup):
    """make_ema(decay, warmup=True) is diffusers' EMAModel(decay) (whose default schedule is this
    warm-up); without warm-up it is the fixed-decay EMA."""
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3))
    ours = make_ema(net, 0.95, warmup)
    ref = EMAModel(net.parameters(), decay=0.95, use_ema_warmup=False, foreach=False)
    by_hand = [p.detach().clone() for p in net.parameters()]
    for n in range(40):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ours.update_parameters(net)
        ref.step(net.parameters())
        for e, p in zip(by_hand, net.parameters()):
            e.lerp_(p.detach(), 1.0 if n == 0 else 1 - 0.95)
    got = list(ours.module.parameters())
    for a, b in zip(got, ref.shadow_params if warmup else by_hand):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    if warmup:  # and the schedule did make a difference
        assert max(float((a.detach() - b).abs().max()) for a, b in zip(got, by_hand)) > 0.1


class Killed(RuntimeError):
    pass


def test_resume_with_ema_warmup_equals_uninterrupted(tmp_path, sources, vae):
    cfg = small_cfg("train.max_steps=4", "train.checkpoint_every=2", "train.ema_decay=0.99",
                    "train.ema_warmup=true")
    train_loop(cfg, vae, lambda s: local_batches(cfg, sources, s), str(tmp_path / "full"))

    def dies_in_step_3(start):
        for i, b in enumerate(local_batches(cfg, sources, start)):
            if start + i == 2:
                raise Killed("killed")
            yield b

    with pytest.raises(Killed):
        train_loop(cfg, vae, dies_in_step_3, str(tmp_path / "part"))
    assert ckpt.latest_checkpoint(str(tmp_path / "part")).endswith("step-000002")
    train_loop(cfg, vae, lambda s: local_batches(cfg, sources, s), str(tmp_path / "part"), resume=True)
    state = ckpt.load_state(ckpt.latest_checkpoint(str(tmp_path / "part")))
    assert int(state["ema"]["n_averaged"]) == 4  # the warm-up position came back with the resume
    for name in ("unet", "checkpoints/step-000004/unet_ema"):
        a = load_unet(tmp_path / "full" / name, "fp32", "cpu").state_dict()
        b = load_unet(tmp_path / "part" / name, "fp32", "cpu").state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")


# ----------------------------------------------------------------------------- mask mix
def test_a_mask_policy_mix_trains_one_step(tmp_path, sources, vae):
    path = tmp_path / "mix.yaml"
    path.write_text("data:\n  mask_policy:\n    mix:\n      - {name: m3ddm_plus, weight: 1}\n"
                    "      - {name: prediction, weight: 1}\n")
    cfg = small_cfg("train.max_steps=1", path=path)
    assert cfg["data"]["mask_policy"] == {"mix": [{"name": "m3ddm_plus", "weight": 1},
                                                  {"name": "prediction", "weight": 1}]}
    cs, policy = clip_settings(cfg), make_policy(cfg["data"]["mask_policy"])
    masks = [make_example(sources, cs, 0, i, policy)["mask"].reshape(8, -1).mean(1) for i in range(12)]
    whole_frames = [bool(np.isin(m, (0.0, 1.0)).all()) for m in masks]  # prediction: whole frames
    assert any(whole_frames) and not all(whole_frames)  # both policies are drawn
    out = train_loop(cfg, vae, lambda s: local_batches(cfg, sources, s), str(tmp_path / "run"))
    assert out["step"] == 1 and np.isfinite(_metrics(tmp_path / "run")[0]["loss"])
