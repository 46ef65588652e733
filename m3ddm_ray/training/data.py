"""Feeding examples to the training loop: in-process, or streamed by Ray Data.

Example ``i`` of a run (``i = step * global_batch + k``) is fully determined by ``(seed, i)``
(:func:`sources.example_seed`), so a resumed run sees exactly the examples it had not seen, and the
``local`` loader splits every global batch the same way whatever the worker count (worker ``r`` of
``W`` takes examples ``k = r, r + W, …``): the DDP-equivalence test relies on it.

The ``ray`` loader builds a Ray Data pipeline ``range(first, last)`` → ``map_batches(make_examples)``
(one CPU task per block, streaming: at most a few blocks of 16-frame clips in memory at once) that
Ray Train splits over its workers (``get_dataset_shard``); each worker iterates it in local batches.
Within a global batch the split over workers is then not fixed, which changes nothing in expectation.

The ``cache`` loader (:func:`cache_batches`) reads a pool of ``K`` pre-encoded examples
(:mod:`m3ddm_ray.training.latent_cache`) epoch by epoch: run example ``i`` is pool example
``perm_e[i mod K]`` with ``e = i // K`` and ``perm_e`` a permutation of ``0..K-1`` seeded by
``(seed, e)`` (:func:`pool_index`), and keeps the run's example seed ``example_seed(seed, i)`` for its
noise, timestep and dropouts, so every epoch sees each pool example once with fresh noise, and a
resumed run continues the same stream. Workers split a global batch as the ``local`` loader does.
"""

from __future__ import annotations

import functools
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..masks import make_policy
from .objective import numpy_batch
from .sources import ClipSettings, Source, example_seed, sample_example, source_of


def clip_settings(cfg: Mapping[str, Any]) -> ClipSettings:
    """:class:`ClipSettings` of the ``data`` section."""
    d = cfg["data"]
    return ClipSettings(canvas_size=int(d["canvas_size"]), num_frames=int(d["num_frames"]),
                        num_global_frames=int(d["num_global_frames"]), strides=tuple(int(s) for s in d["strides"]),
                        crop_scale=tuple(float(x) for x in d["crop_scale"]), mask_policy=d["mask_policy"])


def make_example(sources: Sequence[Source], cs: ClipSettings, seed: int, index: int, policy=None) -> dict:
    s = example_seed(seed, index)
    return sample_example(source_of(sources, s), s, cs, policy)


def local_batches(cfg: Mapping[str, Any], sources: Sequence[Source], start_step: int = 0,
                  rank: int = 0, world: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """This worker's share of every global batch from ``start_step`` on (in-process, no Ray)."""
    cs, policy = clip_settings(cfg), make_policy(cfg["data"]["mask_policy"])
    gb, seed = int(cfg["train"]["batch_size"]), int(cfg["train"]["seed"])
    step = start_step
    while True:
        rows = [make_example(sources, cs, seed, step * gb + k, policy) for k in range(rank, gb, world)]
        yield numpy_batch(rows)
        step += 1


@functools.lru_cache(maxsize=2)
def _epoch_permutation(seed: int, epoch: int, k: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch), 7]).permutation(k)


def pool_index(seed: int, index: int, k: int) -> int:
    """Pool example (``0..k-1``) of run example ``index``: epoch ``index // k``, position ``index % k``
    of that epoch's permutation (seeded by ``(seed, epoch)``)."""
    epoch, pos = divmod(int(index), int(k))
    return int(_epoch_permutation(seed, epoch, int(k))[pos])


def cache_batches(cfg: Mapping[str, Any], pool, start_step: int = 0, rank: int = 0,
                  world: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """This worker's share of every global batch from ``start_step`` on, from a
    :class:`m3ddm_ray.training.latent_cache.LatentPool` (latent batches for ``build_inputs``)."""
    gb, seed, k = int(cfg["train"]["batch_size"]), int(cfg["train"]["seed"]), len(pool)
    step = start_step
    while True:
        ids = [step * gb + j for j in range(rank, gb, world)]
        yield pool.batch([pool_index(seed, i, k) for i in ids], [example_seed(seed, i) for i in ids])
        step += 1


class _MakeExamples:
    """Ray Data ``map_batches`` callable: ``{"id": (n,)}`` -> ``n`` example rows."""

    def __init__(self, sources, cs, seed):
        self.sources, self.cs, self.seed = sources, cs, seed
        self.policy = make_policy(cs.mask_policy)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return numpy_batch([make_example(self.sources, self.cs, self.seed, int(i), self.policy) for i in batch["id"]])


def ray_dataset(cfg: Mapping[str, Any], sources: Sequence[Source], start_step: int = 0):
    """The Ray Data stream of the run's examples from ``start_step`` to ``max_steps``.

    One block per global batch and at most ``data.ray_concurrency`` example tasks at a time, with a
    small object-store budget (``data.ray_object_store_mb``), so that the stream stays a few steps
    ahead of the trainers instead of spending the CPU on examples needed much later.
    """
    import ray

    from ..distributed.ray_args import task_pool

    gb, steps = int(cfg["train"]["batch_size"]), int(cfg["train"]["max_steps"])
    first, last = start_step * gb, steps * gb
    n = max(last - first, 1)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.resource_limits = ray.data.ExecutionResources(
        object_store_memory=float(cfg["data"]["ray_object_store_mb"]) * 2**20)
    ds = ray.data.range(n, override_num_blocks=max(1, n // gb))
    ds = ds.map_batches(lambda b: {"id": b["id"] + first}, batch_size=None)
    fn = _MakeExamples(list(sources), clip_settings(cfg), int(cfg["train"]["seed"]))
    return ds.map_batches(fn, batch_size=gb, num_cpus=0.5, **task_pool(int(cfg["data"]["ray_concurrency"])))


def shard_batches(shard, local_batch: int) -> Iterator[dict[str, np.ndarray]]:
    """Iterate a Ray Train dataset shard in numpy batches of ``local_batch`` examples."""
    yield from shard.iter_batches(batch_size=local_batch, batch_format="numpy", prefetch_batches=2)
