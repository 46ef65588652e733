"""The training loop: a plain function, usable without Ray (Ray Train only runs it on its workers).

:func:`train_loop` trains (or fine-tunes) the UNet on batches of examples with the objective of
:mod:`m3ddm_ray.training.objective`, VAE frozen. One process = one worker; with ``world > 1`` the
caller has set up ``torch.distributed`` and passes ``wrap`` (e.g. ``ray.train.torch.prepare_model``
or ``DistributedDataParallel``): gradients are then averaged over workers, and since each worker's
loss is the mean over an equal share of the global batch, the update equals one worker's on the
whole global batch.

Optimizer AdamW (or momentum SGD, ``train.optimizer: sgd``), learning rate linear warm-up then cosine decay to ``min_lr_ratio`` at
``max_steps``, gradient clipping, optional EMA (``torch.optim.swa_utils.AveragedModel``, optionally with the
decay warm-up of :func:`ema_decay_at`), optional Min-SNR-γ loss weights, bf16/fp16
autocast (fp16 with a ``GradScaler``), optional gradient checkpointing of every UNet block. The
BatchNorm layers of the global-frame encoder are kept in eval mode (running statistics frozen):
train-mode BatchNorm would make the update depend on the per-worker batch split and would mix the
zeroed "no context" global frames into the statistics.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from ..models.loading import load_unet, resolve_device, tiny_unet_config, unet_from_config
from . import checkpoint as ckpt
from .config import objective_settings
from .objective import black_canvas_latent, build_inputs, loss_fn, make_noise_scheduler, min_snr_weights


def build_unet(cfg: Mapping[str, Any], init: str | None = None, seed: int = 0):
    """The UNet to train, float32, trainable: ``init`` (released-format folder / URL / hub id) or
    ``model.unet`` (``"tiny"``, a dict of config keys, or a model source to fine-tune).

    A model built from a config (``"tiny"`` or a dict) is initialised as ``model.unet_init`` says:
    ``"official"`` (default; :func:`m3ddm_ray.models.init.official_init`, it starts as a per-frame
    2-D network) or ``"random"`` (torch's default in every layer); the random values are drawn with
    ``seed``."""
    spec = init or cfg["model"]["unet"]
    if isinstance(spec, str) and spec != "tiny":
        unet = load_unet(spec, "fp32", "cpu")
    else:
        config = tiny_unet_config() if spec == "tiny" else dict(spec)
        config.setdefault("_class_name", "UNet3DConditionModel")
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            unet = unet_from_config(config, "model.unet", init=cfg["model"]["unet_init"])
        finally:
            torch.random.set_rng_state(state)
    return unet.float().requires_grad_(True)


def ema_decay_at(decay: float, updates: int, warmup: bool) -> float:
    """The EMA decay of the update that follows ``updates`` earlier ones (``updates >= 1``; the first
    update copies the weights).

    Without warm-up: ``decay``. With warm-up: ``min(decay, (1 + updates) / (10 + updates))`` (2/11,
    3/12, 4/13, … until it reaches ``decay``), so the average forgets the early, fast-moving weights.
    This is the schedule of ``diffusers.training_utils.EMAModel(decay, use_ema_warmup=False)``,
    whose ``optimization_step`` is ``updates + 1`` (``update_after_step=0``, ``min_decay=0``).
    """
    if not warmup:
        return decay
    return min(decay, (1 + updates) / (10 + updates))


def make_ema(unet, decay: float, warmup: bool):
    """``torch.optim.swa_utils.AveragedModel`` of ``unet`` with EMA updates of decay
    :func:`ema_decay_at` ``(decay, n_averaged, warmup)``; its ``n_averaged`` buffer (saved in its
    state dict) carries the warm-up position across a resume."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    def update(ema_params, params, n_averaged):
        get_ema_multi_avg_fn(ema_decay_at(decay, int(n_averaged), warmup))(ema_params, params, n_averaged)

    return AveragedModel(unet, multi_avg_fn=update if warmup else get_ema_multi_avg_fn(decay))


def set_train_mode(unet) -> None:
    """``unet.train()`` except BatchNorm layers (global-frame encoder), kept in eval mode."""
    unet.train()
    for m in unet.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def enable_gradient_checkpointing(unet) -> None:
    """Recompute every down/mid/up block in the backward pass (``torch.utils.checkpoint``,
    non-reentrant); changes memory, not results. Instance-level: the saved weights are unaffected."""
    from torch.utils.checkpoint import checkpoint

    def wrap_plain(block):
        orig = block.forward
        block.forward = lambda *a: checkpoint(orig, *a, use_reentrant=False)

    def wrap_up(block):
        orig = block.forward

        def forward(x, skips, temb, femb, context, upsample_size=None):
            run = lambda x, temb, femb, context, *sk: orig(x, list(sk), temb, femb, context, upsample_size)  # noqa: E731
            return checkpoint(run, x, temb, femb, context, *skips, use_reentrant=False)

        block.forward = forward

    for b in unet.down_blocks:
        wrap_plain(b)
    wrap_plain(unet.mid_block)
    for b in unet.up_blocks:
        wrap_up(b)


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return f


def _all_reduce_mean(x: float, world: int) -> float:
    if world <= 1:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t) / world


def _rng_state() -> dict:
    return {"torch": torch.random.get_rng_state(), "numpy": torch.from_numpy(
        np.frombuffer(repr(np.random.get_state()[1].tolist()).encode(), np.uint8).copy())}


def train_loop(
    cfg: Mapping[str, Any],
    vae,
    batches: Callable[[int], Iterable[Mapping[str, np.ndarray]]],
    output: str,
    *,
    init: str | None = None,
    resume: bool = False,
    rank: int = 0,
    world: int = 1,
    wrap: Callable | None = None,
    device: str | torch.device | None = None,
    report: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Train the UNet; rank 0 writes checkpoints, ``metrics.jsonl`` and the final ``OUTPUT/unet``.

    Args:
        cfg: the training config (:func:`m3ddm_ray.training.config.load_train_config`).
        vae: the frozen ``AutoencoderKL`` (latents × 0.18215 must have ~unit std).
        batches: ``batches(start_step)`` -> iterable of this worker's batches (numpy dicts, see
            :func:`m3ddm_ray.training.objective.build_inputs`) from that step on.
        output: local folder or fsspec URL of the run.
        init: released-format UNet to fine-tune (overrides ``model.unet``).
        resume: continue from the last complete checkpoint of ``output`` (weights, optimizer, LR
            scheduler, EMA, step); starts fresh when there is none.
        wrap: ``unet -> module`` applied after loading (DDP / Ray Train ``prepare_model``).
        report: called with each logged metrics row (Ray Train ``report``).

    Returns:
        ``{"step", "loss_first", "loss_last", "elapsed_s", "stopped"}`` (``stopped``: ``"max_steps"``
        or ``"max_wall_s"``).
    """
    t = cfg["train"]
    device = resolve_device(device or t["device"])
    unet = build_unet(cfg, init, seed=int(t["seed"]))
    if t["optimizer"] == "sgd":  # plain momentum SGD: updates proportional to the gradients (DDP tests)
        opt = torch.optim.SGD(unet.parameters(), lr=float(t["lr"]), momentum=0.9, weight_decay=float(t["weight_decay"]))
    else:
        opt = torch.optim.AdamW(unet.parameters(), lr=float(t["lr"]), weight_decay=float(t["weight_decay"]))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(int(t["warmup_steps"]), int(t["max_steps"]), float(t["min_lr_ratio"])))
    ema = make_ema(unet, float(t["ema_decay"]), bool(t["ema_warmup"])) if t["ema_decay"] else None
    step, start_elapsed = 0, 0.0
    if resume:
        where = ckpt.latest_checkpoint(output)
        if where is not None:
            state = ckpt.load_state(where)
            loaded = load_unet(ckpt.local_copy(ckpt.join(where, "unet")), "fp32", "cpu")
            unet.load_state_dict(loaded.state_dict(), strict=True)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["lr_scheduler"])
            if ema is not None and "ema" in state:
                ema.load_state_dict(state["ema"])
            torch.random.set_rng_state(state["rng"]["torch"])
            step, start_elapsed = int(state["step"]), float(state.get("elapsed_s", 0.0))
            if rank == 0:
                print(f"resuming from {where} at step {step}", flush=True)
    unet.to(device)
    if ema is not None:
        ema.to(device)
    if t["gradient_checkpointing"]:
        enable_gradient_checkpointing(unet)
    set_train_mode(unet)
    model = wrap(unet) if wrap is not None else unet
    vae = vae.to(device).eval().requires_grad_(False)
    settings = objective_settings(cfg)
    noise_scheduler = make_noise_scheduler()
    black = black_canvas_latent(vae, int(cfg["data"]["canvas_size"])).to(device)
    mp = t["mixed_precision"]
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mp)
    scaler = torch.amp.GradScaler(device.type, enabled=(mp == "fp16"))

    max_steps, log_every, every = int(t["max_steps"]), int(t["log_every"]), int(t["checkpoint_every"])
    max_wall = float(t["max_wall_s"]) if t["max_wall_s"] else None
    t0 = time.time() - start_elapsed
    losses: list[float] = []
    first = last = None
    stopped = "max_steps"

    def save(at: int):
        if rank != 0:
            return
        state = {"step": at, "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
                 "rng": _rng_state(), "elapsed_s": time.time() - t0}
        if ema is not None:
            state["ema"] = ema.state_dict()
        ckpt.save_checkpoint(output, at, unet, state, ema.module.state_dict() if ema is not None else None)

    it = iter(batches(step))
    while step < max_steps:
        batch = next(it)
        inputs = build_inputs(vae, batch, settings, noise_scheduler, black, device)
        weights = None
        if settings.weighted:
            weights = min_snr_weights(inputs["timesteps"], noise_scheduler.alphas_cumprod, settings.min_snr_gamma,
                                      settings.snr_floor)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = loss_fn(model, inputs, weights)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(unet.parameters(), float(t["grad_clip"]))
        scaler.step(opt)
        scaler.update()
        sched.step()
        if ema is not None:
            ema.update_parameters(unet)
        step += 1
        losses.append(float(loss.detach()))
        if step % log_every == 0 or step == max_steps:
            mean = _all_reduce_mean(float(np.mean(losses)), world)
            first = mean if first is None else first
            last = mean
            row = {"step": step, "loss": mean, "lr": sched.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 2),
                   "examples": step * int(t["batch_size"])}
            losses.clear()
            if rank == 0:
                ckpt.append_metrics(output, [row])
                print(f"step {step}/{max_steps} loss {mean:.4f} lr {row['lr']:.2e} {row['elapsed_s']:.0f}s", flush=True)
            if report is not None:
                report(row)
        if step % every == 0 and step < max_steps:
            save(step)
        if max_wall is not None and step < max_steps:
            over = torch.tensor([float(time.time() - t0 > max_wall)])
            if world > 1:
                torch.distributed.all_reduce(over)
            if float(over) > 0:
                stopped = "max_wall_s"
                break
    save(step)
    if rank == 0:
        final = ema.module.state_dict() if ema is not None else None
        ckpt.save_model_folder(unet, ckpt.join(output, "unet"), final)
    return {"step": step, "loss_first": first, "loss_last": last, "elapsed_s": time.time() - t0, "stopped": stopped}
