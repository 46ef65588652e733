"""Job configuration: YAML files in ``configs/``, every key overridable on the command line.

A config is a nested dict; :func:`load_config` merges ``configs/default.yaml``-style defaults, the
given YAML file and ``key.path=value`` overrides (values parsed as YAML scalars). :func:`job_settings`
turns it into the :class:`~m3ddm_ray.pipeline.OutpaintSettings` of the run, and :func:`config_hash`
fingerprints everything that changes the pixels of an output (used in output keys and result rows),
the model's and the VAE's weights included (:mod:`m3ddm_ray.models.identity`, resolved once per job
by :func:`with_weights`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..errors import InputError
from ..storage import DEFAULT_RETRY_POLICY as _STORAGE

#: Defaults of every key (the released model on one GPU per actor). ``configs/default.yaml`` mirrors it.
DEFAULTS: dict[str, Any] = {
    "model": "alimama-creative/M3DDM-Video-Outpainting",
    "vae": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "dtype": "auto",
    "device": "auto",
    "ratios": ["9:16"],
    "output_size": "canvas",
    "canvas_size": 256,
    "strides": None,
    "num_global_frames": 16,
    "posterior": "sample",
    "paste_mode": "round",
    "preset": None,
    "sampler": {"steps": 50, "guidance_scale": 2.0, "previous_guidance_scale": 4.0, "seed": 6,
                "scheduler": "pndm-official", "karras_sigmas": False, "timestep_spacing": "trailing",
                "exact_caches": True, "deepcache_interval": 0, "tgate_step": 0, "max_batch": 1,
                "autocast": "off", "sdpa_backend": "auto", "channels_last": False, "compile_backend": None},
    "vae_batch_size": 16,
    # the generated region at the working resolution (m3ddm_ray.tiled, docs/tiling.md); rows of every task
    "tiling": {"working_size": None, "overlap": 32, "layout_strength": 0.6},
    "encode": {"crf": 18, "preset": "medium"},
    "ray": {"address": None, "num_cpus": None, "num_gpus": None, "autoscaling": False,
            "stall_timeout_s": 3600, "actor_start_timeout_s": 1800, "progress_interval_s": 30},
    "retries": {  # the one home of the retry defaults (storage_*: m3ddm_ray.storage.RetryPolicy's)
        "actor_max_restarts": -1,      # restart a dead model actor (GPU node lost, OOM-killed...) without limit
        "actor_max_task_retries": 3,   # ... and retry its unfinished batch at most this often (bounds poison rows)
        "task_max_retries": 3,         # prepare / finalize tasks whose worker process died
        "storage_attempts": _STORAGE.attempts,          # tries per upload / download / listing
        "storage_base_delay_s": _STORAGE.base_delay_s,  # first backoff wait, doubled each time
        "storage_max_delay_s": _STORAGE.max_delay_s,
        "storage_jitter": _STORAGE.jitter,              # each wait times a random factor in [1 - jitter, 1]
    },
    "stages": {
        # concurrency auto: the prepare tasks that fit beside the pools (.resources); cheapest_first:
        # the cheapest of the first 8 clips go first (.clip_order)
        "prepare": {"num_cpus": "auto", "concurrency": "auto", "prepare_timeout_s": 3600, "cheapest_first": 8},
        "coarse": {"num_actors": 1, "num_gpus": "auto", "num_cpus": "auto", "batch_size": 1},
        "fine": {"num_actors": 1, "num_gpus": "auto", "num_cpus": "auto", "batch_size": 1},
        "finalize": {"num_cpus": "auto", "concurrency": None},
    },
    "storage_options": {},
}


#: Named presets (``--preset NAME`` / ``preset: NAME``): applied over :data:`DEFAULTS`, under the YAML file
#: and the overrides. ``fast``: the official PNDM path at 20 steps with the exact caches -- 2.5x fewer UNet
#: FLOPs per frame than the 50-step default. Chosen on the shipped small model (docs/performance.md, "Speed
#: vs quality on the trained model"): the fewest FLOPs whose PSNR against the ground truth is at most 0.5 dB
#: below the default's (paired) and whose output is within 28 dB PSNR of the default's at every seed
#: (PNDM 10 is 22.9 dB from it; DPM-Solver++ 2M 15 with Karras sigmas loses 0.56 dB).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"sampler": {"scheduler": "pndm-official", "steps": 20, "exact_caches": True}},
}


def deep_merge(base: dict, extra: Mapping) -> dict:
    """Merge ``extra`` into ``base`` in place, recursing into nested mappings; returns ``base``."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _check_keys(cfg: Mapping, ref: Mapping, where: str, prefix: str = "") -> None:
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if key not in ref:
            raise InputError(f"{where}: unknown config key {path!r}; known keys at this level: {sorted(ref)}")
        if isinstance(ref[key], dict) and ref[key] and isinstance(value, Mapping):
            _check_keys(value, ref[key], where, path + ".")


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file. Raises InputError naming the file otherwise."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"config {path}: cannot read it ({exc})") from exc
    if not isinstance(data, Mapping):
        raise InputError(f"config {path}: the top level must be a mapping of keys")
    return dict(data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"stages.coarse.num_actors=2"`` -> ``(["stages", "coarse", "num_actors"], 2)`` (YAML scalar)."""
    if "=" not in text:
        raise InputError(f"override {text!r}: expected KEY.PATH=VALUE, e.g. stages.coarse.num_actors=2")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), **flags: Any) -> dict[str, Any]:
    """Defaults <- YAML file <- ``KEY.PATH=VALUE`` overrides <- non-None ``flags`` (top-level keys or
    dotted paths given with ``__`` for ``.``, e.g. ``sampler__steps=3``).

    Raises:
        InputError: unreadable YAML, unknown keys (named, with the known ones), malformed overrides.
    """
    cfg = copy.deepcopy(DEFAULTS)
    data = {}
    if path is not None:
        data = read_yaml_mapping(path)
        _check_keys(data, DEFAULTS, f"config {path}")
    items = [parse_override(o) for o in overrides]
    items += [(k.split("__"), v) for k, v in flags.items() if v is not None]
    preset = data.get("preset")
    for keys, value in items:
        if keys == ["preset"]:
            preset = value
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"preset {preset!r} is not known; use one of {sorted(PRESETS)}")
        deep_merge(cfg, PRESETS[preset])
    deep_merge(cfg, data)
    for keys, value in items:
        _check_keys(_nest(keys, value), DEFAULTS, "override")
        deep_merge(cfg, _nest(keys, value))
    return cfg


def _nest(keys: list[str], value: Any) -> dict:
    out: Any = value
    for key in reversed(keys):
        out = {key: out}
    return out


def job_settings(cfg: Mapping[str, Any], overrides: Mapping[str, Any] | None = None):
    """:class:`OutpaintSettings` of a job config, with per-manifest-row ``overrides`` applied
    (``seed``, ``num_inference_steps``, ``guidance_scale``, ``previous_guidance_scale``,
    ``canvas_size``, ``output_size``; None values are ignored)."""
    from ..settings import OutpaintSettings, SamplerSettings

    o = {k: v for k, v in (overrides or {}).items() if v is not None}
    s = cfg["sampler"]
    sampler = SamplerSettings(
        num_inference_steps=int(o.get("num_inference_steps", s["steps"])),
        guidance_scale=float(o.get("guidance_scale", s["guidance_scale"])),
        previous_guidance_scale=float(o.get("previous_guidance_scale", s["previous_guidance_scale"])),
        seed=int(o.get("seed", s["seed"])),
        scheduler=str(s["scheduler"]), karras_sigmas=bool(s["karras_sigmas"]),
        timestep_spacing=str(s["timestep_spacing"]), exact_caches=bool(s["exact_caches"]),
        deepcache_interval=int(s["deepcache_interval"]), tgate_step=int(s["tgate_step"]),
        max_batch=int(s["max_batch"]), sdpa_backend=str(s["sdpa_backend"]),
        autocast="off" if s["autocast"] in (False, None) else str(s["autocast"]),  # YAML reads off as false
        channels_last=bool(s["channels_last"]), compile_backend=s["compile_backend"] or None,
    )
    strides = tuple(cfg["strides"]) if cfg.get("strides") else None
    return OutpaintSettings(
        sampler=sampler, canvas_size=int(o.get("canvas_size", cfg["canvas_size"])), strides=strides,
        num_global_frames=int(cfg["num_global_frames"]), paste_mode=cfg["paste_mode"],
        output_size=o.get("output_size", cfg["output_size"]), posterior=cfg["posterior"],
        vae_batch_size=int(cfg["vae_batch_size"]), tiling=tiling_settings(cfg),
    )


def tiling_settings(cfg: Mapping[str, Any]):
    """:class:`m3ddm_ray.tiles.TilingSettings` of a config's ``tiling`` section (defaults for a
    config without one).

    Raises:
        InputError: a value of the wrong type or out of range (named, with the fix).
    """
    from ..tiles import TilingSettings

    t = {**DEFAULTS["tiling"], **(cfg.get("tiling") or {})}
    return TilingSettings(working_size=t["working_size"], overlap=t["overlap"],
                          layout_strength=t["layout_strength"])


#: Settings that change memory use or speed but not the pixels of an output: left out of the hash.
UNHASHED_SETTINGS = ("vae_batch_size", "max_batch")


#: Key of a job config under which :func:`with_weights` keeps the resolved weights identity.
WEIGHTS_KEY = "weights_identity"


def with_weights(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` with the weights identity of its ``model`` (UNet) and ``vae`` resolved
    (:func:`m3ddm_ray.models.identity.weights_identity`: one ``fs.info`` per file, or one hub
    look-up) and kept under :data:`WEIGHTS_KEY`, so that :func:`config_hash` reads it instead of
    asking the filesystem or the hub again for every row. A hub id is pinned to the commit it
    resolved to (``owner/name@<commit>``), so the model actors load exactly the weights hashed.
    The job's driver calls it once per job; idempotent (a resolved config is returned as a copy).

    Raises:
        InputError / ModelLoadError: as :func:`~m3ddm_ray.models.identity.weights_identity`.
    """
    if _resolved_weights(cfg) is not None:
        return dict(cfg)
    from ..models.identity import pinned_source, weights_identity

    so = cfg.get("storage_options") or None
    model, vae = weights_identity(cfg["model"], "unet", so), weights_identity(cfg["vae"], "vae", so)
    out = dict(cfg, model=pinned_source(cfg["model"], model), vae=pinned_source(cfg["vae"], vae))
    out[WEIGHTS_KEY] = {"sources": [out["model"], out["vae"]], "model": model, "vae": vae}
    return out


def _resolved_weights(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The identity :func:`with_weights` kept in ``cfg``, if it is for ``cfg``'s model and VAE."""
    kept = cfg.get(WEIGHTS_KEY)
    if isinstance(kept, Mapping) and list(kept.get("sources") or ()) == [str(cfg["model"]), str(cfg["vae"])]:
        return dict(kept)
    return None


def config_hash(cfg: Mapping[str, Any], settings=None, task: Mapping[str, Any] | None = None) -> str:
    """12-hex fingerprint of what changes the pixels: the UNet's and the VAE's weights identity
    (:mod:`m3ddm_ray.models.identity`: hub commit, or size and ETag / modification time of the
    weight files -- not the URI; read from ``cfg`` when :func:`with_weights` resolved it, else
    resolved now), the resolved dtype and device kind (``dtype: auto`` is fp16 on CUDA and fp32 on
    the CPU: they must not share an output name), every pixel-changing setting (not
    :data:`UNHASHED_SETTINGS`), the encoder settings, and an inpaint / extend row's task inputs
    (``task``: :meth:`m3ddm_ray.task.Task.spec`; None for outpaint).

    Raises:
        InputError / ModelLoadError: the weights identity cannot be resolved (:func:`with_weights`).
    """
    from .resources import resolve_device, resolve_dtype

    settings = settings if settings is not None else job_settings(cfg)
    device = str(cfg["device"]).lower()
    if device == "auto":  # unresolved config (callers outside the job): the local machine decides
        from .resources import local_gpu_count

        device = resolve_device("auto", local_gpu_count())
    device = resolve_device(device, 0)
    pixels = {k: v for k, v in _hashed_settings(settings).items() if k not in UNHASHED_SETTINGS}
    weights = _resolved_weights(cfg) or with_weights(cfg)[WEIGHTS_KEY]
    payload = {"model": weights["model"], "vae": weights["vae"], "dtype": resolve_dtype(cfg["dtype"], device),
               "device": device, "settings": pixels, "encode": cfg["encode"]}
    if task is not None:
        payload["task"] = dict(task)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _hashed_settings(settings) -> dict:
    """``settings.to_dict()`` without the sampler keys that do not change pixels (``max_batch``, ...)
    and without the optional sampler keys while at their defaults (:meth:`SamplerSettings.hashed`),
    so that an output at the defaults has one name, whether a config spells these keys out or not."""
    d, kept = settings.to_dict(), settings.sampler.hashed()
    for k in settings.sampler.__dataclass_fields__:
        if k not in kept:
            d.pop(k, None)
    return d
