"""The latent cache: cached inputs = build_inputs' inputs, file round trip and reuse, cache key,
training from the cache without Ray, resume on the same example stream."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from m3ddm_ray.errors import InputError
from m3ddm_ray.models.loading import load_unet, load_vae, make_tiny_models
from m3ddm_ray.training import checkpoint as ckpt
from m3ddm_ray.training.config import load_train_config
from m3ddm_ray.training.data import cache_batches, clip_settings, make_example, pool_index
from m3ddm_ray.training.latent_cache import (
    cache_key,
    cache_settings,
    ensure_cache,
    load_cache,
)
from m3ddm_ray.training.loop import train_loop
from m3ddm_ray.training.objective import (
    ObjectiveSettings,
    black_canvas_latent,
    build_inputs,
    make_noise_scheduler,
    numpy_batch,
)
from m3ddm_ray.training.sources import example_seed, read_sources

DATA = Path(__file__).resolve().parent / "data"
MANIFEST = DATA / "train_manifest.jsonl"
GOLDEN_VAE = DATA / "golden" / "models" / "vae"


def cache_cfg(*overrides: str) -> dict:
    """8-frame clips, 4 global frames, canvas 64, a pool of 3 examples in fp32, batch 2."""
    base = ["data.num_frames=8", "data.num_global_frames=4", "data.loader=cache", "data.cache_examples=3",
            "data.cache_dtype=fp32", "data.cache_shard_size=2", "train.batch_size=2", "train.log_every=1",
            "train.warmup_steps=1", "train.lr=1e-3", "train.device=cpu", "train.checkpoint_every=1000"]
    return load_train_config(None, base + list(overrides))


@pytest.fixture(scope="module")
def sources():
    return read_sources(MANIFEST)


@pytest.fixture(scope="module")
def vae():
    return load_vae(GOLDEN_VAE, "fp32", "cpu")


class EncodeCounter:
    """Counts the frames the VAE encodes (wraps ``vae.encode``)."""

    def __init__(self, vae):
        self.frames, self.vae, self.orig = 0, vae, vae.encode

    def __enter__(self):
        def encode(x, *a, **k):
            self.frames += int(x.shape[0])
            return self.orig(x, *a, **k)
        self.vae.encode = encode
        return self

    def __exit__(self, *exc):
        self.vae.encode = self.orig


@pytest.mark.parametrize("dtype,atol", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_cached_inputs_equal_build_inputs(sources, vae, tmp_path, dtype, atol):
    cfg = cache_cfg(f"data.cache_dtype={dtype}")
    where, pool = ensure_cache(cfg, sources, vae, str(tmp_path), log=lambda m: None)
    assert len(pool) == 3 and pool.meta["latent_size"] == 8
    assert pool.arrays["latents"].dtype == (np.float16 if dtype == "fp16" else np.float32)
    cs, sched, black = clip_settings(cfg), make_noise_scheduler(), black_canvas_latent(vae, 64)
    torch.testing.assert_close(pool.black, black)
    ids = [0, 2]
    seeds = [example_seed(0, j) for j in ids]
    rows = numpy_batch([make_example(sources, cs, 0, j) for j in ids])
    cached = pool.batch(ids, seeds)
    assert cached["latent_mask"].shape == (2, 1, 8, 8, 8) and cached["raw"].shape == (2, 8)
    assert np.array_equal(cached["fps"], rows["fps"])
    for p in (0.0, 1.0):  # both the conditional inputs and the dropped (CFG) branches
        settings = ObjectiveSettings(p, p)
        a = build_inputs(vae, rows, settings, sched, black, "cpu")
        b = build_inputs(None, cached, settings, sched, black, "cpu")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=atol, msg=f"p={p} {k}")
        assert torch.equal(b["sample"][:, 8], a["sample"][:, 8])  # the latent mask exactly
    # the black border: a masked pixel is black in the canvas the condition latents encode
    assert (rows["mask"] == 1).any() and cached["raw"].dtype == np.uint8


def test_cache_round_trips_through_a_file_and_is_reused(sources, vae):
    cfg = cache_cfg("data.cache_uri=memory://latent-cache-test")
    with EncodeCounter(vae) as first:
        where, pool = ensure_cache(cfg, sources, vae, "unused", log=lambda m: None)
    assert where.startswith("memory://latent-cache-test/")
    assert first.frames == 3 * (8 + 8 + 4) + 1  # clip, masked canvases, global frames; + the black canvas
    with EncodeCounter(vae) as second:
        where2, again = ensure_cache(cfg, sources, vae, "unused", log=lambda m: None)
    assert where2 == where and second.frames == 0
    for k in pool.arrays:
        assert np.array_equal(pool.arrays[k], again.arrays[k]), k
    # a build killed after its first shard keeps that shard: only the missing examples are encoded
    fs, path = ckpt._fs(where)
    fs.rm(f"{path}/meta.json")
    fs.rm(f"{path}/shard-00001.safetensors")
    with pytest.raises(InputError, match="meta.json missing"):
        load_cache(where)
    with EncodeCounter(vae) as third:
        ensure_cache(cfg, sources, vae, "unused", log=lambda m: None)
    assert third.frames == 1 * (8 + 8 + 4) + 1
    rebuilt = load_cache(where)
    for k in pool.arrays:
        assert np.array_equal(pool.arrays[k], rebuilt.arrays[k]), k


def test_cache_key_follows_data_vae_and_settings(sources, vae):
    cfg = cache_cfg()
    key = lambda c, v=vae, s=sources: cache_key(s, clip_settings(c), int(c["train"]["seed"]),  # noqa: E731
                                                cache_settings(c), v)
    base = key(cfg)
    assert len(base) == 24 and key(cache_cfg()) == base
    assert key(cfg, v=make_tiny_models(seed=0)[1]) != base
    nudged = load_vae(GOLDEN_VAE, "fp32", "cpu")
    with torch.no_grad():
        nudged.quant_conv.bias[0] += 1e-3
    assert key(cfg, v=nudged) != base
    decoded = load_vae(GOLDEN_VAE, "fp32", "cpu")  # the decoder side does not make the cached latents
    with torch.no_grad():
        decoded.post_quant_conv.bias[0] += 1e-3
        next(decoded.decoder.parameters()).add_(1e-3)
    assert key(cfg, v=decoded) == base
    assert key(cfg, s=sources[:-1]) != base
    for o in ("data.cache_dtype=fp16", "data.cache_examples=4", "train.seed=1", "data.canvas_size=32",
              "data.num_frames=16", "data.mask_policy=m3ddm"):
        assert key(cache_cfg(o)) != base, o
    # what does not change the latents does not change the key
    assert key(cache_cfg("train.batch_size=4", "train.lr=1e-4", "data.cache_shard_size=8")) == base


def test_pool_stream_is_epochs_of_permutations(sources):
    assert sorted(pool_index(0, i, 5) for i in range(5)) == list(range(5))
    assert sorted(pool_index(0, i, 5) for i in range(5, 10)) == list(range(5))
    epochs = [[pool_index(0, i, 50) for i in range(e * 50, e * 50 + 50)] for e in range(2)]
    assert epochs[0] != epochs[1]

    class FakePool:
        def __len__(self):
            return 7

        def batch(self, index, seeds):
            return {"index": np.asarray(index), "seed": np.asarray(seeds)}

    cfg = cache_cfg("train.batch_size=4")
    stream = cache_batches(cfg, FakePool())
    batches = [next(stream) for _ in range(4)]
    assert [int(s) for s in batches[2]["seed"]] == [example_seed(0, i) for i in range(8, 12)]
    assert [int(i) for i in batches[2]["index"]] == [pool_index(0, i, 7) for i in range(8, 12)]
    resumed = next(cache_batches(cfg, FakePool(), start_step=2))
    assert np.array_equal(resumed["index"], batches[2]["index"]) and np.array_equal(resumed["seed"], batches[2]["seed"])
    halves = [next(cache_batches(cfg, FakePool(), 2, rank=r, world=2)) for r in (0, 1)]
    assert sorted(np.concatenate([h["seed"] for h in halves]).tolist()) == sorted(batches[2]["seed"].tolist())


def test_train_from_cache_in_process_without_ray(tmp_path, monkeypatch):
    from m3ddm_ray.training.ray_train import run_training

    cfg = cache_cfg("train.max_steps=3", f"model.vae={GOLDEN_VAE}")
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` fails
    out = run_training(cfg, str(MANIFEST), str(tmp_path / "run"), log=lambda m: None)
    assert out["steps"] == 3 and np.isfinite(out["loss_last"])
    assert len(list((tmp_path / "run" / "latent_cache").iterdir())) == 1
    load_unet(tmp_path / "run" / "unet", "fp32", "cpu")  # strictly loadable


class Killed(RuntimeError):
    pass


def test_resume_with_the_cache_continues_the_same_stream(sources, vae, tmp_path):
    cfg = cache_cfg("train.max_steps=5", "train.checkpoint_every=2")
    _, pool = ensure_cache(cfg, sources, vae, str(tmp_path / "shared"), log=lambda m: None)
    seen: dict[str, list] = {"full": [], "part": []}

    def batches(name, die_at=None):
        def make(start):
            for i, b in enumerate(cache_batches(cfg, pool, start)):
                if start + i == die_at:
                    raise Killed("killed")
                seen[name].append((start + i, b["seed"].tolist()))
                yield b
        return make

    full, part = tmp_path / "full", tmp_path / "part"
    train_loop(cfg, vae, batches("full"), str(full))
    with pytest.raises(Killed):
        train_loop(cfg, vae, batches("part", die_at=3), str(part))
    assert ckpt.latest_checkpoint(str(part)).endswith("step-000002")
    train_loop(cfg, vae, batches("part"), str(part), resume=True)
    # the resumed run re-reads step 2 onwards: the stream of the uninterrupted run
    assert seen["part"][-3:] == seen["full"][2:]
    a = load_unet(full / "unet", "fp32", "cpu").state_dict()
    b = load_unet(part / "unet", "fp32", "cpu").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_cache_config_errors():
    with pytest.raises(InputError, match="data.loader='disk'.*'cache'"):
        load_train_config(None, ["data.loader=disk"])
    with pytest.raises(InputError, match="data.cache_dtype='bf16': use fp16 or fp32"):
        load_train_config(None, ["data.cache_dtype=bf16"])
    with pytest.raises(InputError, match="data.cache_examples=0: must be an integer >= 1"):
        load_train_config(None, ["data.cache_examples=0"])
