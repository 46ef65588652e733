"""Configuration of the evaluation job: the ``eval:`` section, its defaults and the method names.

The job part of a config is the outpaint job's (:func:`m3ddm_ray.distributed.config.load_config`,
validated the same way); this module adds the ``eval:`` keys (:data:`EVAL_DEFAULTS`).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Mapping, Sequence

from ..distributed.config import DEFAULTS, deep_merge, load_config, parse_override, read_yaml_mapping
from ..errors import InputError

__all__ = ["EVAL_DEFAULTS", "METHODS", "TASKS", "TASK_METHODS", "TASK_DEFAULT_METHODS", "load_eval_config",
           "parse_methods", "check_task", "check_task_settings", "build_protocol"]

#: Defaults of the ``eval:`` config section (configs/davis-eval.yaml shows every key).
EVAL_DEFAULTS: dict[str, Any] = {
    "dataset": None,            # davis2017 | davis2016 | youtube-vos | folder
    "root": None,
    "split": "val",
    "task": "outpaint",         # outpaint (protocols below) | inpaint | extend (prediction); TASKS
    "protocol": "benchmark",    # outpaint only: benchmark | m3ddm-plus
    "methods": None,            # null: the task's default (TASK_DEFAULT_METHODS); names: TASK_METHODS
    # inpaint: synthetic object masks (masks.synthetic) per clip, one row set per motion
    "mask_motion": ["stationary", "moving"],
    "mask_area": 0.1,           # area fraction of the frame each mask covers, (0, 0.5]
    "mask_seed": 0,             # mask seed of a clip = mask_seed + crc32("<video name>@<start>") (cases.clip_mask_seed)
    # extend (ExtDM protocol): condition on the first `context` frames of a clip, predict the next `predict`
    "context": 8,
    "predict": 8,
    "frame_size": None,         # inpaint / extend: [H, W] to resize the frames to (INTER_AREA); null: as decoded
    "clip_len": 16,             # frames per clip; 0 = whole sequences
    "clips": "first",           # first: one clip per video; all: tile every video
    "max_clips": None,
    "benchmark": {"size": 256, "mask_ratios": [0.25, 0.66], "direction": "horizontal", "interpolation": "area"},
    "m3ddm_plus": {"output_size": 256, "target_ratio": "16:9", "crop_ratios": [0.25], "crop_axis": "horizontal",
                   "interpolation": "linear"},
    "metrics": {
        "lpips": "auto",            # auto (if the default weight files exist) | true | false
        "lpips_weights": None,      # LPIPS linear heads (lpips/weights/v0.1/alex.pth); random-init: tests only
        "lpips_backbone": None,     # torchvision AlexNet (alexnet-owt-7be5be79.pth); default: torch hub cache
        "fvd_weights": None,        # I3D checkpoint; FVD is computed only when set; random-init: tests only
        "fvd_kind": "videogpt",     # videogpt (i3d_pretrained_400.pt) | stylegan-v (i3d_torchscript.pt)
        "ssim_window": "gaussian",  # gaussian (common protocol) | uniform (skimage default, M3DDM+ script)
        "device": "cpu",
    },
    "baselines": {"blur_sigma": None, "telea_radius": 5},
    "report": {"frames": 4},
    "score": {"num_actors": 1, "num_cpus": 1, "num_gpus": 0, "batch_size": 1},
}

#: ``--method`` values of outpainting: the model and the baselines of :data:`.baselines.BASELINES`.
METHODS = ("m3ddm", "replicate", "reflect", "blur", "telea")

#: ``--task`` values: ``outpaint`` (the protocols of :mod:`.protocols`), ``inpaint`` and ``extend``
#: (:mod:`.cases`).
TASKS = ("outpaint", "inpaint", "extend")
#: Methods per task (the baselines are :mod:`.baselines`).
TASK_METHODS: dict[str, tuple[str, ...]] = {
    "outpaint": METHODS,
    "inpaint": ("m3ddm", "telea", "nearest_known"),
    "extend": ("m3ddm", "last_frame"),
}
#: Methods run when ``eval.methods`` is null: outpainting as before (the model only), the tasks with
#: their baselines.
TASK_DEFAULT_METHODS: dict[str, tuple[str, ...]] = {
    "outpaint": ("m3ddm",), "inpaint": TASK_METHODS["inpaint"], "extend": TASK_METHODS["extend"],
}


def _check_eval_keys(data: Mapping, ref: Mapping, where: str, prefix: str = "eval.") -> None:
    for key, value in data.items():
        if key not in ref:
            raise InputError(f"{where}: unknown config key {prefix + str(key)!r}; known keys at this level: "
                             f"{sorted(ref)}")
        if isinstance(ref[key], dict) and isinstance(value, Mapping):
            _check_eval_keys(value, ref[key], where, f"{prefix}{key}.")


def load_eval_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                     eval_flags: Mapping[str, Any] | None = None, **flags: Any) -> tuple[dict, dict]:
    """``(job config, eval config)`` from a YAML file with an optional ``eval:`` section.

    Precedence: defaults <- YAML <- ``--set`` overrides (``eval.*`` ones go to the eval config) <-
    command-line flags (``flags``: job keys as in :func:`m3ddm_ray.distributed.config.load_config`;
    ``eval_flags``: eval keys, dotted paths with ``__``). The job part goes through ``load_config``
    unchanged (its YAML keys are passed as overrides before the user's), so it is validated the same way.

    Raises:
        InputError: unreadable YAML, unknown keys (job or eval), malformed overrides.
    """

    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path)
    ecfg = copy.deepcopy(EVAL_DEFAULTS)
    eval_part = data.pop("eval", None) or {}
    if not isinstance(eval_part, Mapping):
        raise InputError(f"config {path}: 'eval' must be a mapping of keys")
    _check_eval_keys(eval_part, EVAL_DEFAULTS, f"config {path}")
    deep_merge(ecfg, eval_part)
    for key in data:
        if key not in DEFAULTS:
            raise InputError(f"config {path}: unknown config key {key!r}; known keys: {sorted(DEFAULTS) + ['eval']}")
    job_overrides = [f"{k}={json.dumps(v)}" for k, v in data.items()]
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "eval":
            nested: Any = value
            for k in reversed(keys[1:]):
                nested = {k: nested}
            if not isinstance(nested, Mapping):
                raise InputError(f"override {text!r}: give a key below eval, e.g. eval.clip_len=32")
            _check_eval_keys(nested, EVAL_DEFAULTS, "override")
            deep_merge(ecfg, nested)
        else:
            job_overrides.append(text)
    for name, value in (eval_flags or {}).items():
        if value is None:
            continue
        nested = value
        for k in reversed(name.split("__")):
            nested = {k: nested}
        _check_eval_keys(nested, EVAL_DEFAULTS, "flag")
        deep_merge(ecfg, nested)
    cfg = load_config(None, job_overrides, **flags)
    cfg["output_size"] = "canvas"  # the protocol scores the canvas crop
    return cfg, ecfg


def check_task(task: Any) -> str:
    """``task`` if it is one of :data:`TASKS`.

    Raises:
        InputError: any other value.
    """
    if task not in TASKS:
        raise InputError(f"eval task {task!r}; use one of {', '.join(TASKS)} (--task / eval.task)")
    return str(task)


def parse_methods(value: Any, task: str = "outpaint") -> list[str]:
    """Method names from a list and/or comma-separated strings, in order, without repeats; ``None``
    gives the task's default (:data:`TASK_DEFAULT_METHODS`).

    Raises:
        InputError: an unknown task, a method the task does not have (named with the task's
            methods), or none at all.
    """
    known = TASK_METHODS[check_task(task)]
    if value is None:
        return list(TASK_DEFAULT_METHODS[task])
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        for m in str(item).split(","):
            m = m.strip()
            if not m:
                continue
            if m not in known:
                other = [t for t, ms in TASK_METHODS.items() if m in ms]
                hint = f" ({m!r} is a method of --task {', '.join(other)})" if other else ""
                raise InputError(f"unknown method {m!r} for --task {task}{hint}; use one of {', '.join(known)} "
                                 f"(comma-separated for several)")
            if m not in out:
                out.append(m)
    if not out:
        raise InputError(f"no method given; use one of {', '.join(known)}")
    return out


def _int_at_least(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"eval.{name}={value!r} must be an integer >= {low}")
    return value


def check_task_settings(ecfg: Mapping[str, Any]) -> dict[str, Any]:
    """The validated task keys of an eval config, as one dict: ``task``, ``methods`` (resolved list),
    and for ``inpaint`` ``mask_motion`` (list of :data:`masks.synthetic.MOTIONS`), ``mask_area``
    (float in ``(0, 0.5]``), ``mask_seed`` (int >= 0); for ``extend`` ``context`` / ``predict``
    (ints >= 1); for both ``frame_size`` (None or ``(H, W)`` ints >= 32: LPIPS needs 31 pixels).

    Raises:
        InputError: a bad value, naming the key and what it takes.
    """
    from ..masks.synthetic import MOTIONS

    task = check_task(ecfg.get("task", "outpaint"))
    out: dict[str, Any] = {"task": task, "methods": parse_methods(ecfg.get("methods"), task)}
    if task == "outpaint":
        return out
    size = ecfg.get("frame_size")
    if size is not None:
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 32 for v in size)):
            raise InputError(f"eval.frame_size={size!r} must be null or [height, width], integers >= 32")
        size = (int(size[0]), int(size[1]))
    out["frame_size"] = size
    if task == "inpaint":
        motion = ecfg.get("mask_motion")
        motions = [m.strip() for m in motion.split(",")] if isinstance(motion, str) else list(motion or [])
        bad = [m for m in motions if m not in MOTIONS]
        if not motions or bad:
            raise InputError(f"eval.mask_motion={motion!r}: give one or more of {', '.join(MOTIONS)}")
        area = ecfg.get("mask_area")
        if isinstance(area, bool) or not isinstance(area, (int, float)) or not 0.0 < float(area) <= 0.5:
            raise InputError(f"eval.mask_area={area!r} must be a fraction of the frame in (0, 0.5]")
        out.update(mask_motion=list(dict.fromkeys(motions)), mask_area=float(area),
                   mask_seed=_int_at_least("mask_seed", ecfg.get("mask_seed"), 0))
    else:
        out.update(context=_int_at_least("context", ecfg.get("context"), 1),
                   predict=_int_at_least("predict", ecfg.get("predict"), 1))
    return out


def build_protocol(ecfg: Mapping[str, Any]):
    """The protocol object of the eval config."""
    from .protocols import make_protocol

    name = ecfg["protocol"]
    options = ecfg["benchmark"] if name == "benchmark" else ecfg["m3ddm_plus"] if name == "m3ddm-plus" else {}
    return make_protocol(name, options)
