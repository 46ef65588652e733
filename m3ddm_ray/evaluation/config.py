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

__all__ = ["EVAL_DEFAULTS", "METHODS", "load_eval_config", "parse_methods", "build_protocol"]

#: Defaults of the ``eval:`` config section (configs/davis-eval.yaml shows every key).
EVAL_DEFAULTS: dict[str, Any] = {
    "dataset": None,            # davis2017 | davis2016 | youtube-vos | folder
    "root": None,
    "split": "val",
    "protocol": "benchmark",    # benchmark | m3ddm-plus
    "methods": ["m3ddm"],       # m3ddm | replicate | reflect | blur | telea
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

#: ``--method`` values (= ``baselines.METHODS``; kept here so that registering the command imports nothing heavy).
METHODS = ("m3ddm", "replicate", "reflect", "blur", "telea")


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


def parse_methods(value: Any) -> list[str]:
    """Method names from a list and/or comma-separated strings, in order, without repeats.

    Raises:
        InputError: an unknown method, or none at all.
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        for m in str(item).split(","):
            m = m.strip()
            if not m:
                continue
            if m not in METHODS:
                raise InputError(f"unknown method {m!r}; use one of {', '.join(METHODS)} (comma-separated for several)")
            if m not in out:
                out.append(m)
    if not out:
        raise InputError(f"no method given; use one of {', '.join(METHODS)}")
    return out


def build_protocol(ecfg: Mapping[str, Any]):
    """The protocol object of the eval config."""
    from .protocols import make_protocol

    name = ecfg["protocol"]
    options = ecfg["benchmark"] if name == "benchmark" else ecfg["m3ddm_plus"] if name == "m3ddm-plus" else {}
    return make_protocol(name, options)
