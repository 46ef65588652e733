"""The training config: one home for its defaults and their validation.

A YAML file (``configs/train-tiny-cpu.yaml``) with the sections below; missing keys take the defaults
of :data:`DEFAULTS`, unknown keys are an error naming the key. ``--set section.key=value`` style
overrides are applied by :func:`load_train_config`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import InputError

DEFAULTS: dict[str, Any] = {
    "model": {
        # "tiny" (models.loading.tiny_unet_config), a dict of UNet config keys, or a released folder
        # (same as --init: fine-tune it).
        "unet": "tiny",
        # a VAE folder / hub id, or "train": train a small AutoencoderKL first (section vae_training).
        "vae": "train",
        # initialisation of a UNet built from a config ("tiny" or a dict): "official" (identity temporal
        # layers, zero attention output weights: models.init) or "random" (torch's default in every layer)
        "unet_init": "official",
    },
    "vae_training": {"steps": 1000, "batch_size": 32, "lr": 1.0e-3, "kl_weight": 1.0e-6,
                     "block_out_channels": [16, 32, 64, 64], "norm_num_groups": 16, "max_wall_s": None,
                     "pool_size": 2048, "crop_size": None, "consistency_weight": 0.0,
                     "mid_block_attention": True},
    "data": {"canvas_size": 64, "num_frames": 16, "num_global_frames": 16, "strides": [1, 5, 15],
             "crop_scale": [0.6, 1.0], "mask_policy": "m3ddm_plus", "loader": "ray",
             "ray_concurrency": 1, "ray_object_store_mb": 256,
             # data.loader: cache (training/latent_cache.py): K examples encoded once, fp16 or fp32,
             # under cache_uri (null: OUTPUT/latent_cache)
             "cache_examples": 20000, "cache_dtype": "fp16", "cache_uri": None, "cache_shard_size": 1024},
    # min_snr_gamma: null = plain MSE; a number (5 in the paper) = Min-SNR-γ weights (objective.py);
    # snr_floor: null = none; a number (1 in Salimans & Ho 2022) = the x0 weight's lower clamp;
    # noise_offset: 0 = none; o > 0 = offset noise, o x N(0, 1) per latent channel added to the target noise
    "objective": {"p_drop_cond": 0.1, "p_drop_global": 0.1, "min_snr_gamma": None, "snr_floor": None,
                  "noise_offset": 0.0},
    "train": {"max_steps": 1000, "batch_size": 4, "lr": 3.0e-4, "warmup_steps": 50, "min_lr_ratio": 0.1,
              "weight_decay": 0.0, "grad_clip": 1.0, "mixed_precision": "no", "gradient_checkpointing": False,
              "ema_decay": None, "ema_warmup": False,
              "checkpoint_every": 250, "log_every": 10, "seed": 0, "max_wall_s": None,
              "device": "auto", "torch_threads": None, "optimizer": "adamw"},
    "ray": {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1, "num_cpus": None},
}


def _merge(base: dict, data: Mapping, where: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in data.items():
        if k not in base:
            raise InputError(f"{where}{k}: unknown training config key; known: {sorted(base)}")
        if isinstance(base[k], dict) and k in ("model", "vae_training", "data", "objective", "train", "ray") \
                and where == "":
            if not isinstance(v, Mapping):
                raise InputError(f"{k}: must be a mapping of {sorted(base[k])}")
            out[k] = _merge(base[k], v, f"{k}.")
        else:
            out[k] = v
    return out


def validate(cfg: Mapping[str, Any]) -> None:
    """Check the values that would fail late (deep in a worker) with a clear error now."""
    t, d = cfg["train"], cfg["data"]
    for key in ("max_steps", "batch_size", "checkpoint_every", "log_every"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise InputError(f"train.{key}={t[key]!r}: must be an integer >= 1")
    if t["mixed_precision"] not in ("no", "fp16", "bf16"):
        raise InputError(f"train.mixed_precision={t['mixed_precision']!r}: use no, fp16 or bf16")
    if t["optimizer"] not in ("adamw", "sgd"):
        raise InputError(f"train.optimizer={t['optimizer']!r}: use adamw or sgd")
    if d["canvas_size"] % 8 or d["canvas_size"] < 16:
        raise InputError(f"data.canvas_size={d['canvas_size']}: must be a multiple of 8 and >= 16 (a whole latent grid for an 8x or 4x VAE)")
    if d["loader"] not in ("ray", "local", "cache"):
        raise InputError(f"data.loader={d['loader']!r}: use 'ray' (Ray Data streaming), 'local' (in-process) "
                         f"or 'cache' (a pool of pre-encoded examples)")
    for key in ("cache_examples", "cache_shard_size"):
        if not isinstance(d[key], int) or d[key] < 1:
            raise InputError(f"data.{key}={d[key]!r}: must be an integer >= 1")
    if d["cache_dtype"] not in ("fp16", "fp32"):
        raise InputError(f"data.cache_dtype={d['cache_dtype']!r}: use fp16 or fp32")
    n = cfg["ray"]["num_workers"]
    if not isinstance(n, int) or n < 1 or t["batch_size"] % n:
        raise InputError(f"train.batch_size={t['batch_size']} must be a multiple of ray.num_workers={n} "
                         f"(the global batch is split evenly)")
    if t["ema_decay"] is not None and not 0.0 < float(t["ema_decay"]) < 1.0:
        raise InputError(f"train.ema_decay={t['ema_decay']}: must be in (0, 1) or null")
    from ..models.init import UNET_INITS

    if cfg["model"]["unet_init"] not in UNET_INITS:
        raise InputError(f"model.unet_init={cfg['model']['unet_init']!r}: use one of {', '.join(UNET_INITS)}")
    if not isinstance(t["ema_warmup"], bool):
        raise InputError(f"train.ema_warmup={t['ema_warmup']!r}: must be true or false")
    objective_settings(cfg)  # the objective's values, checked where they are used


def objective_settings(cfg: Mapping[str, Any]):
    """The config's ``objective`` section as :class:`m3ddm_ray.training.objective.ObjectiveSettings`.

    Raises:
        InputError: a probability outside ``[0, 1]``, a ``min_snr_gamma`` that is not a number > 0, or
            an ``snr_floor`` that is not a number in ``(0, min_snr_gamma]``, a ``noise_offset`` outside ``[0, 1]``.
    """
    from .objective import ObjectiveSettings

    o = cfg["objective"]
    return ObjectiveSettings(float(o["p_drop_cond"]), float(o["p_drop_global"]), o["min_snr_gamma"], o["snr_floor"],
                             o["noise_offset"])


def load_train_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults <- YAML file <- ``section.key=value`` overrides; validated.

    Raises:
        InputError: unreadable file, unknown keys, bad values.
    """
    from ..distributed.config import parse_override, read_yaml_mapping  # the one YAML / override reader

    data: Mapping = read_yaml_mapping(path) if path is not None else {}
    cfg = _merge(DEFAULTS, data, "")
    for item in overrides:
        keys, value = parse_override(item)
        if len(keys) != 2 or keys[0] not in cfg or keys[1] not in cfg[keys[0]]:
            raise InputError(f"override {item!r}: use section.key=value with a known key")
        cfg[keys[0]][keys[1]] = value
    validate(cfg)
    return cfg
