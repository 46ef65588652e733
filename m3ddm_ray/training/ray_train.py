"""Ray Train adapter: run :func:`m3ddm_ray.training.loop.train_loop` on ``TorchTrainer`` workers.

The driver (:func:`run_training`) lists the sources, prepares the frozen VAE (trains the small one
when ``model.vae: train`` and ``OUTPUT/vae`` does not exist yet; a resumed run reuses it), and
starts ``ray.train.torch.TorchTrainer`` with ``ray.num_workers`` workers (DDP; ``gloo`` on CPU,
``nccl`` when ``ray.use_gpu``). Each worker loads the VAE from ``OUTPUT/vae``, wraps the UNet with
``ray.train.torch.prepare_model`` and reads its batches from its Ray Data shard (``data.loader:
ray``) or makes them in-process (``data.loader: local``, the deterministic split).

With ``data.loader: cache`` the driver first builds (or reuses) the latent cache
(:mod:`m3ddm_ray.training.latent_cache`) in-process; with ``ray.num_workers: 1`` it then runs
:func:`~m3ddm_ray.training.loop.train_loop` itself, without Ray (torch and diffusers only, e.g. on
one GPU with ``train.device: cuda``), and with more workers the Ray Train workers read the cache.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Mapping

from ..errors import InputError
from . import checkpoint as ckpt


def prepare_vae(cfg: Mapping[str, Any], sources, output: str, log=print) -> str:
    """Return the VAE source the workers load: ``OUTPUT/vae`` (trained here if needed) or
    ``model.vae`` as given."""
    spec = cfg["model"]["vae"]
    if spec != "train":
        return str(spec)
    where = ckpt.join(output, "vae")
    if ckpt.exists(ckpt.join(where, "config.json")):
        log(f"VAE: reusing {where}")
        return where
    import torch

    from .vae import train_vae

    if cfg["train"]["torch_threads"]:
        torch.set_num_threads(int(cfg["train"]["torch_threads"]))
    v = cfg["vae_training"]
    t0 = time.time()
    rows: list[dict] = []

    def on_log(row):
        rows.append(row)
        log(f"vae step {row['vae_step']} loss {row['vae_loss']:.4f} l1 {row['vae_l1']:.4f} {row['elapsed_s']:.0f}s")

    vae = train_vae(sources, steps=int(v["steps"]), batch_size=int(v["batch_size"]), lr=float(v["lr"]),
                    kl_weight=float(v["kl_weight"]), seed=int(cfg["train"]["seed"]),
                    canvas_size=int(cfg["data"]["canvas_size"]), block_out_channels=v["block_out_channels"],
                    norm_num_groups=int(v["norm_num_groups"]), log=on_log, max_wall_s=v["max_wall_s"],
                    pool_size=int(v["pool_size"]), crop_size=v["crop_size"],
                    consistency_weight=float(v["consistency_weight"]),
                    mid_block_attention=bool(v["mid_block_attention"]))
    ckpt.save_model_folder(vae, where)
    ckpt.append_metrics(output, rows + [{"vae_done_s": round(time.time() - t0, 1)}])
    return where


def _worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from ..models.loading import load_vae
    from .data import local_batches, shard_batches
    from .loop import train_loop
    from .sources import read_sources

    import torch

    cfg = config["cfg"]
    torch.set_num_threads(int(cfg["train"]["torch_threads"] or max(1, int(float(cfg["ray"]["cpus_per_worker"])))))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    vae = load_vae(config["vae"], "fp32", "cpu")
    local_bs = int(cfg["train"]["batch_size"]) // world
    if cfg["data"]["loader"] == "cache":
        from .data import cache_batches
        from .latent_cache import load_cache

        pool = load_cache(config["cache"])
        batches = lambda start: cache_batches(cfg, pool, start, rank, world)  # noqa: E731
    elif cfg["data"]["loader"] == "ray":
        shard = ray.train.get_dataset_shard("train")
        batches = lambda start: shard_batches(shard, local_bs)  # noqa: E731  (the dataset starts at the resumed step)
    else:
        sources = read_sources(config["data"])
        batches = lambda start: local_batches(cfg, sources, start, rank, world)  # noqa: E731

    def report(row):
        ray.train.report(row)

    train_loop(cfg, vae, batches, config["output"], init=config["init"], resume=config["resume"], rank=rank,
               world=world, wrap=ray.train.torch.prepare_model, device=device, report=report)


def _local_abspath(spec: Any) -> Any:
    """``spec`` as an absolute path when it names an existing local folder, else unchanged (hub ids,
    URLs, ``"tiny"``, ``"train"``, config dicts)."""
    if isinstance(spec, str) and "://" not in spec and os.path.isdir(spec):
        return os.path.abspath(spec)
    return spec


def _absolute_model_paths(cfg: Mapping[str, Any], init: str | None) -> tuple[dict, str | None]:
    """``model.unet``, ``model.vae`` and ``init`` with local folders made absolute on the driver: the Ray
    Train workers do not run in the driver's working directory, so a config's relative
    ``tests/data/trained/unet`` would not resolve there."""
    cfg = dict(cfg)
    cfg["model"] = {k: _local_abspath(v) for k, v in dict(cfg["model"]).items()}
    return cfg, _local_abspath(init)


def run_training(cfg: Mapping[str, Any], data: str, output: str, *, init: str | None = None, resume: bool = False,
                 address: str | None = None, log=print) -> dict[str, Any]:
    """Train with Ray Train; returns ``{"output", "steps", "elapsed_s", "vae"}``.

    Raises:
        InputError: bad data, config or output.
    """
    from .sources import read_sources

    data = os.path.abspath(data) if "://" not in data and os.path.exists(data) else data
    if "://" not in output:
        output = os.path.abspath(output)
    sources = read_sources(data)
    cfg, init = _absolute_model_paths(cfg, init)
    t0 = time.time()
    vae = prepare_vae(cfg, sources, output, log)
    cache = None
    if cfg["data"]["loader"] == "cache":
        cache, pool = _prepare_cache(cfg, sources, vae, output, log)
        if int(cfg["ray"]["num_workers"]) == 1:
            return _train_in_process(cfg, pool, vae, output, init, resume, t0)
        del pool  # the Ray Train workers read the cache themselves
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .data import ray_dataset

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    start = 0
    if resume:
        where = ckpt.latest_checkpoint(output)
        if where is not None:
            start = int(ckpt.load_state(where)["step"])
    r = cfg["ray"]
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kw: dict[str, Any] = {"address": address or "local"}  # never attach by accident to a `ray start` cluster
        if not address and r["num_cpus"]:
            kw["num_cpus"] = r["num_cpus"]
        ray.init(log_to_driver=True, include_dashboard=False, **kw)
    datasets = {"train": ray_dataset(cfg, sources, start)} if cfg["data"]["loader"] == "ray" else {}
    n = int(r["num_workers"])
    use_gpu = bool(r["use_gpu"])
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"cfg": dict(cfg), "vae": vae, "output": output, "init": init, "resume": resume,
                           "data": data, "cache": cache},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=n, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": float(r["cpus_per_worker"])}),
        run_config=RunConfig(name=f"m3ddm-train-{int(t0)}",
                             storage_path=tempfile.mkdtemp(prefix="m3ddm-raytrain-")),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return _summary(output, t0, vae)


def _prepare_cache(cfg: Mapping[str, Any], sources, vae_src: str, output: str, log):
    """Build or reuse the run's latent cache on the driver; returns its folder URL and
    :class:`~m3ddm_ray.training.latent_cache.LatentPool`."""
    import torch

    from ..models.loading import load_vae
    from .latent_cache import ensure_cache

    if cfg["train"]["torch_threads"]:
        torch.set_num_threads(int(cfg["train"]["torch_threads"]))
    return ensure_cache(cfg, sources, load_vae(vae_src, "fp32", "cpu"), output, log)


def _train_in_process(cfg: Mapping[str, Any], pool, vae_src: str, output: str, init: str | None,
                      resume: bool, t0: float) -> dict[str, Any]:
    """One worker, no Ray: :func:`train_loop` here on batches of the latent cache ``pool``."""
    from ..models.loading import load_vae
    from .data import cache_batches
    from .loop import train_loop

    train_loop(cfg, load_vae(vae_src, "fp32", "cpu"), lambda start: cache_batches(cfg, pool, start), output,
               init=init, resume=resume)
    return _summary(output, t0, vae_src)


def _summary(output: str, t0: float, vae: str) -> dict[str, Any]:
    rows = [r for r in _read_metrics(output) if "step" in r]
    last = rows[-1] if rows else {}
    return {"output": output, "steps": last.get("step"), "elapsed_s": round(time.time() - t0, 1), "vae": vae,
            "loss_last": last.get("loss")}


def _read_metrics(output: str) -> list[dict]:
    import json

    uri = ckpt.join(output, "metrics.jsonl")
    if not ckpt.exists(uri):
        return []
    return [json.loads(line) for line in ckpt.read_bytes(uri).decode().splitlines() if line.strip()]
