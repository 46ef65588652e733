"""The latent cache: a finite pool of training examples, VAE-encoded once and stored as shards.

Example making (decoding, cropping, resizing, masks) and the three VAE encodes of every example
(clip, masked canvases, global frames) cost far more than the tiny UNet's step on a CPU. With
``data.loader: cache`` the run draws a pool of ``K = data.cache_examples`` examples once — example
``j`` is the run's example ``j`` of the uncached stream (:func:`m3ddm_ray.training.sources.example_seed`
with ``train.seed``, :func:`~m3ddm_ray.training.sources.sample_example`) — encodes each with
:func:`m3ddm_ray.training.objective.encode_examples` (the same function :func:`build_inputs` uses,
so the cached latents are what the uncached path computes) and stores per example:

==================  ==========================  ==========================================
key                 shape / dtype               what
==================  ==========================  ==========================================
``latents``         ``(4, F, h, w)`` fp16/fp32  clean clip latents (posterior mean × 0.18215)
``cond_latents``    ``(4, F, h, w)`` fp16/fp32  latents of the masked canvases (black under the mask)
``latent_mask``     ``(1, F, h, w)`` uint8      0/1, the pixel mask at each cell's top-left pixel
``raw``             ``(F,)`` uint8              1 = guide frame (no masked pixel)
``global_latents``  ``(G, 4, h, w)`` fp16/fp32  global frames, in-clip ones masked (M3DDM+)
``fps``             ``()`` int64                ``fps // stride``
==================  ==========================  ==========================================

``h = w`` is the VAE's own output size (``S / 8`` for an 8× VAE, ``S / 4`` for a 4× one).
Memory per example: ``(8·F + 4·G)·h·w`` floats + ``F·h·w + F`` bytes; at ``S = 64``, ``F = G = 16``,
8× VAE (``h = 8``): 24 KiB in fp16 (48 KiB fp32), i.e. 0.5 GiB for 20 000 examples in fp16; at
``S = 256`` (``h = 32``) 16× that (392 KiB fp16 per example). Training holds the whole pool in memory.

Layout under ``data.cache_uri`` (default ``OUTPUT/latent_cache``, any fsspec URL)::

    latent_cache/<key>/shard-00000.safetensors   examples 0 .. shard_size-1 (safetensors, numpy)
    latent_cache/<key>/...
    latent_cache/<key>/black.safetensors          (4, h, w) float32 latent of the black canvas
    latent_cache/<key>/meta.json                  written last: the cache is complete

``<key>`` (:func:`cache_key`) hashes everything the latents depend on: the sources (kind, URI, fps,
size of local files), the clip settings, ``train.seed``, ``K``, the dtype and the VAE's config and
weights; another VAE or setting gives another folder, a resumed run (or another run with the same
data, VAE and settings) finds and reuses it. A build killed part-way keeps its finished shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..masks import make_policy
from . import checkpoint as ckpt
from .objective import black_canvas_latent, encode_examples, numpy_batch
from .sources import ClipSettings, Source

#: Bumped when the stored layout or the encoding changes: old caches are then not reused.
FORMAT_VERSION = 1
#: Arrays stored per example (leading axis = example).
KEYS = ("latents", "cond_latents", "latent_mask", "raw", "global_latents", "fps")
DTYPES = {"fp16": np.float16, "fp32": np.float32}


@dataclass(frozen=True)
class CacheSettings:
    """``examples``: pool size K (>= 1); ``dtype``: ``"fp16"`` or ``"fp32"`` latents; ``uri``: folder /
    fsspec URL holding the caches (None: ``OUTPUT/latent_cache``); ``shard_size``: examples per file;
    ``encode_batch``: examples made and encoded together."""

    examples: int = 20000
    dtype: str = "fp16"
    uri: str | None = None
    shard_size: int = 1024
    encode_batch: int = 4


def cache_settings(cfg: Mapping[str, Any]) -> CacheSettings:
    """:class:`CacheSettings` of the ``data`` section (``cache_examples``, ``cache_dtype``, ``cache_uri``,
    ``cache_shard_size``)."""
    d = cfg["data"]
    return CacheSettings(examples=int(d["cache_examples"]), dtype=str(d["cache_dtype"]),
                         uri=d["cache_uri"], shard_size=int(d["cache_shard_size"]))


def vae_fingerprint(vae) -> str:
    """sha256 of what the cache depends on: the VAE's config (without diffusers' ``_``-prefixed
    metadata such as the folder it was loaded from) and its encoder side's weights (``encoder.*``,
    ``quant_conv.*``: names, shapes, dtypes, bytes; sorted by name). A VAE whose decoder alone was
    refit (``refit-vae --decoder-only``) makes the same latents and the same key."""
    config = {k: v for k, v in dict(getattr(vae, "config", {})).items() if not str(k).startswith("_")}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, t in sorted(vae.state_dict().items()):
        if not name.startswith(("encoder.", "quant_conv.")):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _source_id(s: Source) -> dict:
    row = {"kind": s.kind, "uri": s.uri, "fps": s.fps}
    if "://" not in s.uri and os.path.isfile(s.uri):
        row["bytes"] = os.path.getsize(s.uri)
    return row


def cache_key(sources: Sequence[Source], cs: ClipSettings, seed: int, settings: CacheSettings, vae) -> str:
    """24 hex digits of sha256 over the data, clip settings, seed, pool size, dtype, format and VAE."""
    spec = {"format": FORMAT_VERSION, "sources": [_source_id(s) for s in sources], "clip": asdict(cs),
            "seed": int(seed), "examples": settings.examples, "dtype": settings.dtype,
            "vae": vae_fingerprint(vae)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=list).encode()).hexdigest()[:24]


def encode_rows(vae, rows: Sequence[Mapping[str, np.ndarray]], dtype: str = "fp32") -> dict[str, np.ndarray]:
    """Example rows (:func:`sample_example`) -> the cached arrays of :data:`KEYS` (CPU numpy, latents
    in ``dtype``), through :func:`m3ddm_ray.training.objective.encode_examples`."""
    batch = numpy_batch(list(rows))
    lat = encode_examples(vae, batch)
    out = {k: np.ascontiguousarray(lat[k].cpu().numpy(), DTYPES[dtype])
           for k in ("latents", "cond_latents", "global_latents")}
    out["latent_mask"] = lat["latent_mask"].cpu().numpy().astype(np.uint8)
    out["raw"] = lat["raw"].cpu().numpy().astype(np.uint8)
    out["fps"] = np.asarray(batch["fps"], np.int64)
    return out


class LatentPool:
    """The K cached examples in memory (numpy arrays of :data:`KEYS`, leading axis K) and the
    black-canvas latent ``black`` ``(4, h, w)`` float32 tensor."""

    def __init__(self, arrays: Mapping[str, np.ndarray], black: torch.Tensor, meta: Mapping[str, Any]):
        self.arrays, self.black, self.meta = dict(arrays), black, dict(meta)

    def __len__(self) -> int:
        return int(self.arrays["fps"].shape[0])

    def batch(self, index: Sequence[int], seeds: Sequence[int]) -> dict[str, np.ndarray]:
        """The batch of pool examples ``index`` with noise seeds ``seeds``: the latents form of
        :func:`m3ddm_ray.training.objective.build_inputs`'s ``batch``."""
        idx = np.asarray(index, np.int64)
        out = {k: v[idx] for k, v in self.arrays.items()}
        out["seed"] = np.asarray(seeds, np.int64)
        return out


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def build_cache(vae, sources: Sequence[Source], cs: ClipSettings, seed: int, settings: CacheSettings,
                where: str, log: Callable[[str], None] = _log_default,
                make_rows: Callable[[Sequence[int]], list] | None = None) -> None:
    """Make and encode pool examples ``0 .. K-1`` into ``where`` (shards already there are kept),
    then write ``black.safetensors`` and ``meta.json``.

    ``make_rows(indices)`` returns the example rows of those run indices (default: in-process
    :func:`m3ddm_ray.training.data.make_example`).
    """
    from safetensors.numpy import save

    from .data import make_example

    if settings.dtype not in DTYPES:
        raise InputError(f"data.cache_dtype={settings.dtype!r}: use fp16 or fp32")
    policy = make_policy(cs.mask_policy)
    if make_rows is None:
        make_rows = lambda ids: [make_example(sources, cs, seed, int(i), policy) for i in ids]  # noqa: E731
    k, n = settings.examples, settings.shard_size
    t0, done = time.time(), 0
    for first in range(0, k, n):
        uri = ckpt.join(where, f"shard-{first // n:05d}.safetensors")
        if ckpt.exists(uri):
            continue
        parts = []
        for lo in range(first, min(first + n, k), settings.encode_batch):
            ids = range(lo, min(lo + settings.encode_batch, first + n, k))
            parts.append(encode_rows(vae, make_rows(ids), settings.dtype))
            done += len(ids)
        shard = {key: np.ascontiguousarray(np.concatenate([p[key] for p in parts])) for key in KEYS}
        ckpt.write_bytes(uri, save(shard))
        log(f"latent cache: {min(first + n, k)}/{k} examples ({done / max(time.time() - t0, 1e-9):.1f}/s)")
    # contiguous copy: the posterior mean is a strided view, and safetensors writes the raw buffer
    black = np.ascontiguousarray(black_canvas_latent(vae, cs.canvas_size).float().cpu().numpy())
    ckpt.write_bytes(ckpt.join(where, "black.safetensors"), save({"black": black}))
    meta = {"format": FORMAT_VERSION, "examples": k, "shard_size": n, "dtype": settings.dtype,
            "clip": asdict(cs), "seed": int(seed), "latent_size": int(black.shape[-1]),
            "build_s": round(time.time() - t0, 1)}
    ckpt.write_bytes(ckpt.join(where, "meta.json"), json.dumps(meta, sort_keys=True, default=list).encode())


def load_cache(where: str) -> LatentPool:
    """Read a complete cache folder into memory.

    Raises:
        InputError: no ``meta.json`` there (not built, or the build did not finish), or a shard missing.
    """
    from safetensors.numpy import load

    meta_uri = ckpt.join(where, "meta.json")
    if not ckpt.exists(meta_uri):
        raise InputError(f"{where}: no complete latent cache (meta.json missing); build it with data.loader=cache")
    meta = json.loads(ckpt.read_bytes(meta_uri).decode())
    k, n = int(meta["examples"]), int(meta["shard_size"])
    parts = []
    for first in range(0, k, n):
        uri = ckpt.join(where, f"shard-{first // n:05d}.safetensors")
        if not ckpt.exists(uri):
            raise InputError(f"{uri}: shard missing from the latent cache; delete {where} and rebuild")
        parts.append(load(ckpt.read_bytes(uri)))
    arrays = {key: np.concatenate([p[key] for p in parts]) for key in KEYS}
    black = torch.from_numpy(load(ckpt.read_bytes(ckpt.join(where, "black.safetensors")))["black"])
    return LatentPool(arrays, black, meta)


def cache_folder(cfg: Mapping[str, Any], output: str, key: str) -> str:
    """``data.cache_uri`` (or ``OUTPUT/latent_cache``) ``/<key>``."""
    root = cfg["data"]["cache_uri"] or ckpt.join(output, "latent_cache")
    return ckpt.join(str(root), key)


def ensure_cache(cfg: Mapping[str, Any], sources: Sequence[Source], vae, output: str,
                 log: Callable[[str], None] = _log_default, make_rows=None) -> tuple[str, LatentPool]:
    """The run's cache folder and pool: reused when complete, else built (in this process) first."""
    from .data import clip_settings

    cs, settings, seed = clip_settings(cfg), cache_settings(cfg), int(cfg["train"]["seed"])
    where = cache_folder(cfg, output, cache_key(sources, cs, seed, settings, vae))
    if ckpt.exists(ckpt.join(where, "meta.json")):
        log(f"latent cache: reusing {where}")
    else:
        log(f"latent cache: building {settings.examples} examples into {where}")
        build_cache(vae, sources, cs, seed, settings, where, log, make_rows)
    return where, load_cache(where)
