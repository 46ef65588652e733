"""The arguments the job gives Ray Data's transforms: fixed-size actor pools for the model stages,
bounded task pools for the CPU stages, and the retry limits of both (``retries.*``).

One home for how a stage becomes a ``map`` / ``flat_map`` / ``map_batches`` call, shared by the
outpaint job (:mod:`.job`) and the eval job (:mod:`m3ddm_ray.evaluation.run`). Ray is imported
only inside the functions.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Mapping

from .config import DEFAULTS
from .resources import is_unset

logger = logging.getLogger(__name__)

#: Defaults of the optional ``retries`` config section (see the README): the config's own defaults.
RETRY_DEFAULTS = DEFAULTS["retries"]


def retry_setting(cfg: Mapping[str, Any], key: str) -> Any:
    """``cfg['retries'][key]``, or its default from :data:`RETRY_DEFAULTS`."""
    value = (cfg.get("retries") or {}).get(key)
    return RETRY_DEFAULTS[key] if value is None else value


def _pool(stage_cfg: Mapping[str, Any], device: str) -> dict[str, Any]:
    """map_batches arguments of a model stage: a fixed-size actor pool.

    ``stage_cfg`` holds numbers (:func:`.job.resolve_runtime` replaced ``auto``). Fault tolerance
    (:func:`stage_fault_args`): Ray restarts an actor whose process died (``max_restarts``) and retries
    the batch it was running on the restarted actor (``max_task_retries``). Ray Data 2.60 already
    defaults to ``max_restarts=-1, max_task_retries=-1``; the job sets them explicitly so that a clip
    that kills its actor every time (a poison input) fails after ``retries.actor_max_task_retries``
    tries instead of looping forever. Application errors are not retried by Ray
    (``DataContext.actor_task_retry_on_errors`` stays False): the stages turn them into ``error``
    rows themselves.
    """
    import ray.data

    gpus = as_float(stage_cfg.get("num_gpus"), 0.0)
    if str(device) == "cpu":
        gpus = 0.0
    return {
        # one batch in flight per actor: a dead actor takes only the segment it was running with it
        # (queued batches would be re-run too), and the next segment goes to whichever actor is free
        "compute": ray.data.ActorPoolStrategy(size=int(stage_cfg.get("num_actors") or 1),
                                              max_tasks_in_flight_per_actor=1),
        "num_gpus": gpus, "num_cpus": as_float(stage_cfg.get("num_cpus"), 1.0),
        "batch_size": int(stage_cfg.get("batch_size") or 1),
    }


def as_float(value: Any, default: float) -> float:
    """A resolved resource number; ``auto`` / None (unresolved config) -> ``default``."""
    if is_unset(value):
        return default
    return float(value)


def stage_fault_args(cfg: Mapping[str, Any], actors: bool) -> dict[str, int]:
    if actors:
        return {"max_restarts": int(retry_setting(cfg, "actor_max_restarts")),
                "max_task_retries": int(retry_setting(cfg, "actor_max_task_retries"))}
    return {"max_retries": int(retry_setting(cfg, "task_max_retries"))}


def with_fault_args(method, fn, fault_args: Mapping[str, int], **kwargs):
    """``method(fn, **kwargs, **fault_args)``: the retry limits go through Ray Data's generic
    ``**ray_remote_args``, which Ray 2.60 deprecates (without a named replacement yet; removal is
    announced for 2.64). The warning is silenced here; a Ray that rejects them gets the call without
    them (its own defaults: unlimited restarts and retries) and a logged warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*ray_remote_args.* is deprecated")
        try:
            return method(fn, **kwargs, **fault_args)
        except TypeError as exc:
            if not any(k in str(exc) for k in fault_args):
                raise
    logger.warning("this Ray version does not take %s; using its default retry limits", sorted(fault_args))
    return method(fn, **kwargs)


def task_pool(concurrency: Any) -> dict[str, Any]:
    """``map`` / ``flat_map`` arguments of a task stage: a pool of at most ``concurrency`` tasks at a
    time (``compute=TaskPoolStrategy(size)``, Ray Data's replacement for the deprecated
    ``concurrency=``), or nothing (Ray Data decides) when ``concurrency`` is None. ``concurrency``
    is the resolved value (:func:`.job.resolve_runtime` makes ``auto`` a number); an unresolved
    ``auto`` (a config that skipped it) is left to Ray Data like None, as :func:`as_float` does."""
    import ray.data

    if is_unset(concurrency):
        return {}
    return {"compute": ray.data.TaskPoolStrategy(size=int(concurrency))}


def map_on_actor_pool(ds, stage_cls, cfg: Mapping[str, Any], stage_cfg: Mapping[str, Any], device: str, **kwargs):
    """``ds.map_batches(stage_cls)`` on a fixed-size actor pool (:func:`_pool`) with the job's actor
    retry limits (:func:`stage_fault_args`): the one pool builder of the outpaint and the eval job.
    ``kwargs`` go to ``map_batches`` (``fn_constructor_kwargs`` ...); batches are numpy."""
    return with_fault_args(ds.map_batches, stage_cls, stage_fault_args(cfg, actors=True), batch_format="numpy",
                            **_pool(stage_cfg, device), **kwargs)


def map_on_task_pool(method, fn, cfg: Mapping[str, Any], stage_cfg: Mapping[str, Any]):
    """``method(fn)`` (``ds.map`` / ``ds.flat_map``) as a CPU task stage: ``stage_cfg``'s
    ``num_cpus`` per task, at most its ``concurrency`` tasks at a time (:func:`task_pool`), and the
    job's task retry limit (:func:`stage_fault_args`): the one task-stage builder of the outpaint and the
    eval job."""
    return with_fault_args(method, fn, stage_fault_args(cfg, actors=False),
                            num_cpus=as_float(stage_cfg.get("num_cpus"), 1.0),
                            **task_pool(stage_cfg.get("concurrency")))
