"""Training: objective inputs, VAE whitening, loss goes down, checkpoint round trip, resume, data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m3ddm_ray.errors import InputError
from m3ddm_ray.models.loading import load_unet, make_tiny_models
from m3ddm_ray.sampling import VAE_SCALE
from m3ddm_ray.training import checkpoint as ckpt
from m3ddm_ray.training.config import load_train_config
from m3ddm_ray.training.data import local_batches, make_example, clip_settings
from m3ddm_ray.training.loop import build_unet, enable_gradient_checkpointing, set_train_mode, train_loop
from m3ddm_ray.training.objective import (
    ObjectiveSettings,
    black_canvas_latent,
    build_inputs,
    encode,
    loss_fn,
    make_noise_scheduler,
)
from m3ddm_ray.training.sources import read_sources
from m3ddm_ray.training.vae import latent_stats, random_images, whiten_latents

DATA = Path(__file__).resolve().parent / "data"

MANIFEST = DATA / "train_manifest.jsonl"


def small_cfg(*overrides: str, path=None) -> dict:
    """A fast config: 8-frame clips, 4 global frames, canvas 64, local loader (over ``path``'s YAML if given)."""
    base = ["data.num_frames=8", "data.num_global_frames=4", "data.loader=local", "train.batch_size=2",
            "train.log_every=1", "train.warmup_steps=1", "train.lr=1e-3", "train.device=cpu"]
    return load_train_config(path, base + list(overrides))


@pytest.fixture(scope="module")
def sources():
    return read_sources(MANIFEST)


@pytest.fixture(scope="module")
def vae():
    return make_tiny_models(seed=0)[1]


def test_example_rows_are_deterministic_and_shaped(sources):
    cs = clip_settings(small_cfg())
    a, b = make_example(sources, cs, 0, 5), make_example(sources, cs, 0, 5)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert a["frames"].shape == (8, 64, 64, 3) and a["frames"].dtype == np.uint8
    assert a["mask"].shape == (8, 64, 64) and a["global_frames"].shape == (4, 64, 64, 3)
    assert int(a["stride"]) in (1, 5, 15) and int(a["fps"]) >= 1
    assert not np.array_equal(a["frames"], make_example(sources, cs, 0, 6)["frames"])


def test_cfg_dropouts_give_the_inference_branches(sources, vae):
    cfg = small_cfg()
    batch = next(local_batches(cfg, sources))
    sched = make_noise_scheduler()
    black = black_canvas_latent(vae, 64)
    keep = build_inputs(vae, batch, ObjectiveSettings(0.0, 0.0), sched, black, "cpu")
    drop = build_inputs(vae, batch, ObjectiveSettings(1.0, 1.0), sched, black, "cpu")
    assert keep["sample"].shape == (2, 9, 8, 8, 8) and keep["global_latents"].shape == (8, 4, 8, 8)
    assert torch.equal(keep["noise"], drop["noise"]) and torch.equal(keep["timesteps"], drop["timesteps"])
    assert torch.equal(keep["sample"][:, :4], drop["sample"][:, :4])  # same noisy latents
    assert (drop["global_latents"] == 0).all() and keep["global_latents"].abs().sum() > 0
    raw = ~torch.from_numpy(batch["mask"]).reshape(2, 8, -1).bool().any(-1)
    for b in range(2):
        for f in range(8):
            if raw[b, f]:  # guide frame: its own latent, mask 0, in both branches
                assert torch.equal(drop["sample"][b, 4:, f], keep["sample"][b, 4:, f])
                assert (drop["sample"][b, 8, f] == 0).all()
            else:  # unconditional input of inference: black-image latent, mask 1
                assert torch.allclose(drop["sample"][b, 4:8, f], black)
                assert (drop["sample"][b, 8, f] == 1).all()
    # the latent mask is the pixel mask at the top-left pixel of each 8x8 cell (geometry.latent_mask)
    assert torch.equal(keep["sample"][:, 8], torch.from_numpy(batch["mask"][..., ::8, ::8]).float())
    # fps condition fps // stride
    assert keep["fps"].tolist() == batch["fps"].tolist()


def test_vae_whitening_is_exact_and_unit_std(sources):
    _, v = make_tiny_models(seed=1)
    images = torch.from_numpy(random_images(sources, 64, 3, 64))
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    before = v.decode(v.encode(x).latent_dist.mean).sample
    stats = whiten_latents(v, images)
    after = v.decode(v.encode(x).latent_dist.mean).sample
    assert torch.allclose(before, after, atol=1e-4)
    mean, std = latent_stats(v, images)
    assert torch.allclose(mean, torch.zeros(4), atol=1e-4)
    assert torch.allclose(std * VAE_SCALE, torch.ones(4), atol=1e-4)
    z = encode(v, images)  # what the trainer and the sampler see: unit std per channel
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-3)
    assert len(stats["std"]) == 4


def test_loss_goes_down(sources, vae, tmp_path):
    """A short run (well under 60 s on 2 cores) on a fixed pool of 4 examples: the loss drops."""
    cfg = small_cfg("train.max_steps=40", "train.log_every=10", "train.checkpoint_every=1000")
    pool = next(local_batches(load_train_config(None, ["train.batch_size=4", "data.num_frames=8",
                                                       "data.num_global_frames=4"]), sources))

    def batches(start):
        rng = np.random.default_rng(start)
        while True:  # the same 4 clips, fresh noise/timesteps each step (seed column varies)
            pick = rng.choice(4, 2, replace=False)
            out = {k: v[pick] for k, v in pool.items()}
            out["seed"] = rng.integers(0, 2**62, size=2)
            yield out

    out = train_loop(cfg, vae, batches, str(tmp_path))
    rows = [r for r in _metrics(tmp_path)]
    assert out["step"] == 40 and len(rows) == 4
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"], rows  # deterministic: fixed seeds


def _metrics(path):
    import json

    return [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]


def test_checkpoint_strict_reload_round_trip(tmp_path, sources, vae):
    unet = build_unet(small_cfg(), seed=3)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ckpt.save_model_folder(unet, str(tmp_path / "unet"))
    assert sorted(p.name for p in (tmp_path / "unet").iterdir()) == ["config.json",
                                                                     "diffusion_pytorch_model.safetensors"]
    loaded = load_unet(tmp_path, "fp32", "cpu")  # finds unet/ and loads strictly
    a, b = unet.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    batch = next(local_batches(small_cfg(), sources))
    inputs = build_inputs(vae, batch, ObjectiveSettings(), make_noise_scheduler(), black_canvas_latent(vae, 64), "cpu")
    unet.eval()
    with torch.no_grad():
        assert torch.equal(loss_fn(unet, inputs), loss_fn(loaded, inputs))


class Killed(RuntimeError):
    pass


def test_killed_after_checkpoint_and_resumed_equals_uninterrupted(tmp_path, sources, vae):
    cfg = small_cfg("train.max_steps=6", "train.checkpoint_every=3", "train.ema_decay=0.9")
    full = tmp_path / "full"
    train_loop(cfg, vae, lambda s: local_batches(cfg, sources, s), str(full))

    def dies_after_step_3(start):
        for i, b in enumerate(local_batches(cfg, sources, start)):
            if start + i == 4:  # step 3's checkpoint is written; the process dies during step 4
                raise Killed("killed")
            yield b

    part = tmp_path / "part"
    with pytest.raises(Killed):
        train_loop(cfg, vae, dies_after_step_3, str(part))
    assert ckpt.latest_checkpoint(str(part)).endswith("step-000003")
    out = train_loop(cfg, vae, lambda s: local_batches(cfg, sources, s), str(part), resume=True)
    assert out["step"] == 6
    for name in ("unet", "checkpoints/step-000006/unet", "checkpoints/step-000006/unet_ema"):
        a = load_unet(full / name, "fp32", "cpu").state_dict()
        b = load_unet(part / name, "fp32", "cpu").state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")
    # the losses logged after the resume are those of the uninterrupted run
    la = {r["step"]: r["loss"] for r in _metrics(full)}
    lb = {r["step"]: r["loss"] for r in _metrics(part)}
    assert all(abs(la[s] - lb[s]) < 1e-5 for s in (4, 5, 6))


def test_gradient_checkpointing_and_bf16_switches(sources, vae):
    cfg = small_cfg()
    batch = next(local_batches(cfg, sources))
    inputs = build_inputs(vae, batch, ObjectiveSettings(), make_noise_scheduler(), black_canvas_latent(vae, 64), "cpu")
    grads = []
    for ckpting in (False, True):
        unet = build_unet(cfg, seed=0)
        if ckpting:
            enable_gradient_checkpointing(unet)
        set_train_mode(unet)
        loss = loss_fn(unet, inputs)
        loss.backward()
        grads.append((float(loss.detach()), [p.grad.clone() for p in unet.parameters()]))
    assert abs(grads[0][0] - grads[1][0]) < 1e-6
    for g0, g1 in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-6)
    unet = build_unet(cfg, seed=0)
    set_train_mode(unet)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_bf16 = loss_fn(unet, inputs)
    assert loss_bf16.dtype == torch.float32 and abs(float(loss_bf16) - grads[0][0]) < 0.05 * grads[0][0]


def test_batchnorm_stays_in_eval_mode():
    unet = build_unet(small_cfg(), seed=0)
    set_train_mode(unet)
    bns = [m for m in unet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and unet.conv_in.training


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {max_stepz: 3}\n")
    with pytest.raises(InputError, match="train.max_stepz: unknown training config key"):
        load_train_config(bad)
    with pytest.raises(InputError, match="multiple of ray.num_workers"):
        load_train_config(None, ["train.batch_size=3", "ray.num_workers=2"])
    with pytest.raises(InputError, match="mixed_precision"):
        load_train_config(None, ["train.mixed_precision=fp8"])
    with pytest.raises(InputError, match="section.key=value"):
        load_train_config(None, ["max_steps=3"])


def test_cli_train_bad_data_is_one_error_line(tmp_path, capsys):
    from m3ddm_ray.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {max_steps: 1}\n")
    assert main(["train", "--config", str(cfg), "--data", str(tmp_path / "none.jsonl"),
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data") and "no such manifest" in err


def test_fine_tune_from_a_released_format_folder(tmp_path, sources, vae):
    """--init: start from a released-format UNet folder (here the golden tiny one), train, save."""
    init = DATA / "golden" / "models" / "unet"
    cfg = small_cfg("train.max_steps=2", "train.checkpoint_every=1000")
    train_loop(cfg, vae, lambda s: local_batches(cfg, sources, s), str(tmp_path), init=str(init))
    before = load_unet(init, "fp32", "cpu").state_dict()
    after = load_unet(tmp_path / "unet", "fp32", "cpu").state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    # not the random initialisation: weights stay within a few lr-sized steps of the init
    assert max(float((before[k] - after[k]).abs().max()) for k in changed) < 0.01


def test_relative_model_folders_are_made_absolute_for_the_workers(tmp_path, monkeypatch):
    """Ray Train workers do not run in the driver's directory: a config's relative model folders
    (configs/finetune-tasks-cpu.yaml) are resolved on the driver; names that are no folder stay."""
    from m3ddm_ray.training.ray_train import _absolute_model_paths

    (tmp_path / "m" / "unet").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    cfg = {"model": {"unet": "m/unet", "vae": "train"}, "train": {}}
    out, init = _absolute_model_paths(cfg, "m/unet")
    assert out["model"] == {"unet": str(tmp_path / "m" / "unet"), "vae": "train"} and init == str(tmp_path / "m" / "unet")
    assert cfg["model"]["unet"] == "m/unet"  # the caller's config is not changed
    out, init = _absolute_model_paths({"model": {"unet": "tiny", "vae": "owner/name"}}, None)
    assert out["model"] == {"unet": "tiny", "vae": "owner/name"} and init is None
