"""Placing the job's pools on the cluster before any work starts: pure rules, no Ray, no torch.

A Ray Data job whose actor pool asks for resources the cluster does not have waits forever without
a message (an actor that cannot be placed stays pending). So the driver resolves every pool's ask
against what the cluster has *before* building the dataset (:func:`plan_pools`) and stops with one
line naming the stage, its ask, the cluster and the fix when something cannot be placed.

Rules (``stages.<name>.num_cpus`` / ``num_gpus`` may be a number or ``"auto"``):

* ``device: auto`` is CUDA when the cluster has a GPU, else the CPU (:func:`resolve_device`);
  ``dtype: auto`` is fp16 on CUDA, fp32 on the CPU (:func:`resolve_dtype`, the same rule as
  :func:`m3ddm_ray.models.loading.resolve_dtype`).
* GPUs, ``auto``: 0 on the CPU. On CUDA each model actor gets a whole GPU when the cluster has one
  for every model actor (coarse + fine); otherwise ``1/k`` of one, with ``k`` the number of model
  actors per GPU needed to fit them all (one GPU, one coarse + one fine actor: 0.5 each -- the
  coarse model is idle most of the time and fits beside the fine one).
* CPUs, ``auto``: 1 per model actor and per prepare / finalize task, scaled down together (to
  fractions) when the model actors plus one task of each kind do not fit the cluster's CPUs. A running job needs all of them at once: both actor pools hold their CPUs for
  the job's life, and the task stages must still find a slot.
* Explicit numbers are kept; if they cannot all be placed :class:`ResourceError` says so.
* Task concurrency (``stages.<task>.concurrency``): ``null`` leaves it to Ray Data (unbounded: as
  many tasks as free CPU slots); ``auto``: as many tasks at a time as fit in the CPUs the actor
  pools and one task of every other task stage leave free, at least 1 (``free // num_cpus``;
  :func:`task_concurrency`); a whole number is kept. ``auto`` is the prepare stage's default
  (finalize's is ``null``): on a 2-core machine it means one prepare task at a time, so fewer
  processes import torch while the model actors start: the fine actor is ready ~2.5 s sooner, and
  together with the cheapest clips first (:mod:`.clip_order`) the Ray overhead on the sample has
  medians of 8.5-9.8 %, against 11.5-13.5 % with ``null`` (docs/performance.md,
  "Ray overhead: the cheapest clips first"). Without that order it costs more: the coarse actor
  can get the long clip first and the fine actor waits through its coarse pass. One hung decode
  holds that one slot until ``prepare_timeout_s``.

With ``ray.autoscaling: true`` (a cluster whose autoscaler adds nodes on demand) a shortfall is
not an error: :func:`plan_pools` returns the plan with a note, and the job's stall watchdog
(``ray.stall_timeout_s``) is the backstop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import M3DDMError

#: The model stages (actor pools that load the UNet); only they get ``auto`` GPUs.
MODEL_STAGES = ("coarse", "fine")
#: The outpaint job's CPU task stages (prepare first; the others after the model pools in messages).
JOB_TASKS = ("prepare", "finalize")
AUTO = "auto"


class ResourceError(M3DDMError):
    """A pool of the job cannot be placed on the cluster; the message names the stage, its ask,
    what the cluster has, and the setting that fixes it."""


@dataclass(frozen=True)
class PoolAsk:
    """Resolved resources of one stage.

    Attributes:
        stage: ``prepare``, ``coarse``, ``fine`` or ``finalize``.
        count: actors of a model stage's pool; 1 for a task stage (the least that must fit).
        num_cpus: logical CPUs per actor / task (may be a fraction).
        num_gpus: GPUs per actor (0 for task stages and on the CPU; may be a fraction).
        concurrency: a task stage's tasks at a time (None: Ray Data decides, unbounded); None for
            actor pools (their size is ``count``).
    """

    stage: str
    count: int
    num_cpus: float
    num_gpus: float
    concurrency: int | None = None


@dataclass(frozen=True)
class ResourcePlan:
    """What :func:`plan_pools` decided: the device, dtype and every stage's ask."""

    device: str
    dtype: str
    asks: Mapping[str, PoolAsk]
    notes: tuple[str, ...] = field(default_factory=tuple)


def resolve_device(device: Any, cluster_gpus: float) -> str:
    """``"auto"`` -> ``"cuda"`` when the cluster has a GPU, else ``"cpu"``; ``cuda:N`` -> ``cuda``
    (the kind; Ray picks the GPU). Anything else -> ``"cpu"`` or raises ResourceError."""
    text = str(device or AUTO).lower()
    if text == AUTO:
        return "cuda" if cluster_gpus > 0 else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "cuda" or text.startswith("cuda:"):
        return "cuda"
    raise ResourceError(f"device={device!r}: use auto, cpu or cuda")


def resolve_dtype(dtype: Any, device: str) -> str:
    """``"auto"`` -> ``"fp16"`` on CUDA, ``"fp32"`` on the CPU; aliases to the short names."""
    text = str(dtype or AUTO).lower()
    aliases = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
    text = aliases.get(text, text)
    if text == AUTO:
        return "fp16" if device == "cuda" else "fp32"
    if text not in ("fp32", "fp16", "bf16"):
        raise ResourceError(f"dtype={dtype!r}: use auto, fp32, fp16 or bf16")
    return text


def is_unset(value: Any) -> bool:
    """True for a setting left to the rules here: None or ``auto`` (any case)."""
    return value is None or (isinstance(value, str) and value.lower() == AUTO)


def _number(stage: str, key: str, value: Any) -> float | None:
    """None for ``auto`` / None, else a float >= 0 (ResourceError otherwise)."""
    if is_unset(value):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = -1.0
    if not math.isfinite(out) or out < 0:
        raise ResourceError(f"stages.{stage}.{key}={value!r}: use a number >= 0 or 'auto'")
    return out


def _fmt(x: float) -> str:
    return f"{x:g}"


def plan_pools(stages: Mapping[str, Mapping[str, Any]], device: Any, dtype: Any,
               cluster: Mapping[str, float], *, autoscaling: bool = False,
               actors: tuple[str, ...] = MODEL_STAGES, tasks: tuple[str, ...] = JOB_TASKS,
               ) -> ResourcePlan:
    """Resolve every stage's CPUs / GPUs against the cluster (rules in the module docstring).

    Args:
        stages: the job config's ``stages`` section (``num_actors``, ``num_cpus``, ``num_gpus``).
        device, dtype: the config's values (``auto`` allowed).
        cluster: total resources, e.g. ``ray.cluster_resources()`` (``"CPU"``, ``"GPU"`` keys).
        autoscaling: the cluster may grow; shortfalls become notes instead of errors.
        actors, tasks: the actor-pool stages and the task stages of the job (the eval job adds its
            ``score`` pool and has no finalize); only :data:`MODEL_STAGES` get ``auto`` GPUs, other
            actor stages keep their explicit ``num_gpus`` (default 0).

    Returns:
        The :class:`ResourcePlan`.

    Raises:
        ResourceError: one line naming the stage, what it asks, what the cluster has, and the fix.
    """
    cpus = float(cluster.get("CPU", 0) or 0)
    gpus = float(cluster.get("GPU", 0) or 0)
    dev = resolve_device(device, gpus)
    dt = resolve_dtype(dtype, dev)
    notes: list[str] = []

    def shortfall(msg: str) -> None:
        if not autoscaling:
            raise ResourceError(msg)
        notes.append(f"{msg} (ray.autoscaling: waiting for the autoscaler)")

    names = tuple(tasks[:1]) + tuple(actors) + tuple(tasks[1:])  # dataflow order for messages
    gpu_stages = tuple(s for s in actors if s in MODEL_STAGES)
    count = {s: 1 for s in names}
    for s in actors:
        n = (stages.get(s) or {}).get("num_actors")
        n = 1 if n is None else n
        if isinstance(n, bool) or not isinstance(n, (int, float)) or int(n) != n or int(n) < 1:
            raise ResourceError(f"stages.{s}.num_actors={n!r}: use a whole number >= 1")
        count[s] = int(n)
    model_actors = sum(count[s] for s in gpu_stages)

    # GPUs -------------------------------------------------------------------------------------
    gpu_ask: dict[str, float] = {s: 0.0 for s in names}
    for s in actors:
        if s not in gpu_stages:
            gpu_ask[s] = _number(s, "num_gpus", (stages.get(s) or {}).get("num_gpus")) or 0.0
    if dev == "cuda":
        if gpus <= 0:
            shortfall(f"device is cuda but the cluster has no GPU ({_fmt(cpus)} CPUs, 0 GPUs); "
                      "run on the CPU with --device cpu, or start the job on a cluster with GPUs")
        # model actors per GPU so that all fit (an autoscaler adds whole GPUs: 1 each)
        per_gpu = 1 if gpus <= 0 or gpus >= model_actors else math.ceil(model_actors / gpus)
        for s in gpu_stages:
            ask = _number(s, "num_gpus", (stages.get(s) or {}).get("num_gpus"))
            gpu_ask[s] = (1.0 / per_gpu) if ask is None else ask
        need = sum(gpu_ask[s] * count[s] for s in actors)
        for s in actors:
            if gpu_ask[s] > 1 and gpu_ask[s] != int(gpu_ask[s]):
                raise ResourceError(f"stages.{s}.num_gpus={_fmt(gpu_ask[s])}: a fraction must be below 1, "
                                    "above 1 use a whole number of GPUs")
        if gpus > 0 and need > gpus + 1e-9:
            worst = max(actors, key=lambda s: gpu_ask[s] * count[s])
            shortfall(f"stage {worst!r} cannot be placed: the model pools ask "
                      + " + ".join(f"{count[s]} x {_fmt(gpu_ask[s])} GPU ({s})" for s in actors if gpu_ask[s])
                      + f" = {_fmt(need)} GPUs, the cluster has {_fmt(gpus)}; "
                      f"share GPUs with --set stages.{worst}.num_gpus=auto (or 0.5), "
                      f"or use fewer actors (--set stages.{worst}.num_actors=1)")

    # CPUs -------------------------------------------------------------------------------------
    explicit: dict[str, float] = {}
    auto: list[str] = []
    for s in names:
        ask = _number(s, "num_cpus", (stages.get(s) or {}).get("num_cpus"))
        if ask is None:
            auto.append(s)
        else:
            explicit[s] = ask
    fixed = sum(explicit[s] * count[s] for s in explicit)
    wanted = sum(count[s] for s in auto)  # 1 CPU each
    scale = 1.0
    if cpus > 0 and fixed + wanted > cpus + 1e-9:
        room = cpus - fixed
        if room <= 0 and auto:
            scale = 0.0
        elif wanted:
            scale = room / wanted
    cpu_ask = dict(explicit)
    for s in auto:
        cpu_ask[s] = round(scale, 4) if scale < 1.0 else 1.0
    if auto and scale <= 0.0:
        listed = ", ".join(f"{s} {count[s]} x {_fmt(explicit[s])}" for s in explicit)
        biggest = max(explicit, key=lambda s: explicit[s] * count[s])
        shortfall(f"stages {', '.join(auto)} cannot be placed: the stages with explicit num_cpus ({listed}) ask "
                  f"{_fmt(fixed)} CPUs, the cluster has {_fmt(cpus)}; lower them "
                  f"(--set stages.{biggest}.num_cpus=auto)")
        for s in auto:
            cpu_ask[s] = 1.0
    need = sum(cpu_ask[s] * count[s] for s in names)
    if need > cpus + 1e-3:
        worst = max(names, key=lambda s: cpu_ask[s] * count[s])
        shortfall(f"stage {worst!r} cannot be placed: the job needs "
                  + " + ".join(f"{count[s]} x {_fmt(cpu_ask[s])} CPU ({s})" for s in names)
                  + f" = {_fmt(need)} CPUs at once, the cluster has {_fmt(cpus)}; "
                  f"use --set stages.{worst}.num_cpus=auto (or a fraction such as 0.5), or a larger cluster")
    conc: dict[str, int | None] = {}
    for s in tasks:
        others = (sum(cpu_ask[a] * count[a] for a in actors)
                  + sum(cpu_ask[t] for t in tasks if t != s))
        conc[s] = task_concurrency(s, (stages.get(s) or {}).get("concurrency"), cpus - others,
                                   cpu_ask[s], autoscaling=autoscaling)
    asks = {s: PoolAsk(s, count[s], float(cpu_ask[s]), float(gpu_ask[s]), conc.get(s)) for s in names}
    return ResourcePlan(dev, dt, asks, tuple(notes))


def task_concurrency(stage: str, value: Any, free_cpus: float, num_cpus: float, *,
                     autoscaling: bool = False) -> int | None:
    """A task stage's tasks at a time (rule in the module docstring).

    Args:
        stage: the stage name (for messages).
        value: the config's ``concurrency``: ``"auto"``, None (Ray Data decides) or a whole number >= 1.
        free_cpus: the cluster's CPUs less the actor pools' and one task of every other task stage.
        num_cpus: this stage's resolved CPUs per task.
        autoscaling: the cluster may grow: ``auto`` leaves it to Ray Data.

    Returns:
        ``auto``: ``max(1, floor(free_cpus / num_cpus))``, or None when that is not bounded (a task
        of 0 CPUs, an autoscaling cluster); otherwise the value given.

    Raises:
        ResourceError: ``value`` is neither ``auto``, null nor a whole number >= 1.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.lower() == AUTO:
        if autoscaling or num_cpus <= 0:
            return None
        return max(1, math.floor(free_cpus / num_cpus + 1e-9))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise ResourceError(f"stages.{stage}.concurrency={value!r}: use a whole number >= 1, 'auto' "
                            "(fit the free CPUs) or null (let Ray Data decide)")
    return int(value)


def local_gpu_count() -> int:
    """GPUs of this machine without importing torch or starting Ray (NVIDIA's ``/proc`` entries,
    narrowed by ``CUDA_VISIBLE_DEVICES``); 0 when none is found."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return 0
    try:
        found = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        found = 0
    if visible is not None and found:
        return min(found, len([v for v in visible.split(",") if v.strip()]))
    return found
