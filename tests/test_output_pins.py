"""Pins of the bundled sample manifests' outputs: their names (config hashes) and the bytes of their
frames from the single-process path at one torch thread.

Rows: ``tests/data/sample_manifest.jsonl`` (outpaint, the config's ratios or the row's) and
``tests/data/tasks_manifest.jsonl`` (outpaint, inpaint with a logo mask, extend), run with the
configuration the job tests use for them (``configs/tiny-cpu.yaml`` with the tiny golden models,
2 sampler steps). Frames: the uint8 output frames of :class:`~m3ddm_ray.pipeline.OutpaintPipeline`
(outpaint) and of the inpaint / extend entry points, hashed with sha256 over their shape and bytes
(the encoded files are not pinned: an encoder build may change them).

What makes the names stable on any machine (the job hashes machine-dependent inputs):

* the weights identity (:mod:`m3ddm_ray.models.identity`) reads the size and modification time of
  the model folders' files: the test runs on copies in ``tmp_path`` whose times are set to
  :data:`MTIME` with ``os.utime``;
* an inpaint row hashes its absolute ``mask_uri``: the name rows use the manifest's mask copied to
  the fsspec memory filesystem at :data:`MASK_URI` (a URL is kept as it is), the frame rows read
  the repository's file;
* only the file name of each output is pinned (the output folder is ``tmp_path``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from m3ddm_ray import video
from m3ddm_ray.distributed.config import job_settings
from m3ddm_ray.distributed.job import build_rows
from m3ddm_ray.pipeline import OutpaintPipeline, run_extend, run_inpaint

from conftest import DATA
from test_ray_job import tiny_cfg

REPO = DATA.parent.parent
MTIME = 1_700_000_000
MASK_URI = "memory://pins/logo_mask_160x118.png"
MANIFESTS = ("sample_manifest.jsonl", "tasks_manifest.jsonl")

NAMES = {
    "sample_manifest.jsonl": [
        ("outpaint", "9:16", "tree_9x16_74507b694929.mp4", None),
        ("outpaint", "1:1", "tree_1x1_74507b694929.mp4", None),
        ("outpaint", "9:16", "megamind_9x16_74507b694929.mp4", None),
        ("outpaint", "1:1", "megamind_1x1_74507b694929.mp4", None),
        ("outpaint", "9:16", "with_audio_9x16_74507b694929.mp4", None),
    ],
    "tasks_manifest.jsonl": [
        ("outpaint", "9:16", "megamind_9x16_74507b694929.mp4", None),
        ("inpaint", None, "no_logo_inpaint_c5240f0cd219.mp4",
         '{"dilate": 2, "mask_uri": "memory://pins/logo_mask_160x118.png", "task": "inpaint"}'),
        ("extend", None, "tree_longer_extend_7506773d7978.mp4", '{"direction": "forward", "frames": 15, "task": "extend"}'),
    ],
}

#: ``"<manifest>:<clip_id>:<ratio or task>"`` -> (shape, sha256 of :func:`frames_digest`), measured at one thread.
FRAMES = {
    "sample_manifest.jsonl:tree:9:16": ((60, 64, 36, 3), "2b4d1f4da979b310c8b308e8637564f25de8e05b96aca7b841ac8f408b641dfe"),
    "sample_manifest.jsonl:tree:1:1": ((60, 64, 64, 3), "4b382b444ff235526deb25c1f5d366f4c333db9143ef1e0b6dd5bd1076cd3b14"),
    "sample_manifest.jsonl:megamind:9:16": ((20, 64, 36, 3), "e3057de967c5f153d7bb7408cef5183545cd3724e8a0f12c09fb864e462eddf6"),
    "sample_manifest.jsonl:megamind:1:1": ((20, 64, 64, 3), "855b0e8dc5833c3c1b1aa37e03ea501a47aa011278553a0ee79ebb375fd3752a"),
    "sample_manifest.jsonl:with_audio:9:16": ((20, 64, 36, 3), "f7baf5540a35086c32db06fe79dd2806e4828e581c2a517f1fb7d91487ffdcdd"),
    "tasks_manifest.jsonl:megamind:9:16": ((20, 64, 36, 3), "e3057de967c5f153d7bb7408cef5183545cd3724e8a0f12c09fb864e462eddf6"),
    "tasks_manifest.jsonl:no_logo:inpaint": ((20, 118, 160, 3), "5d4b952b611bfa343a3033a7c30327ab84e867f662039d6e4e9570b7c61391ae"),
    "tasks_manifest.jsonl:tree_longer:extend": ((75, 120, 160, 3), "7836d63f42d2a54152838a4530dcefe795a2d19ce1f4bcf6b8e4d6b5fd5996ad"),
}


def entries(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def pinned_cfg(tmp_path_factory):
    """The job tests' tiny config on copies of the golden models with fixed modification times."""
    tmp = tmp_path_factory.mktemp("pins")
    cfg = tiny_cfg()
    for key in ("model", "vae"):
        dst = tmp / key
        shutil.copytree(cfg[key], dst)
        for p in dst.rglob("*"):
            os.utime(p, (MTIME, MTIME))
        cfg[key] = str(dst)
    return cfg


def frames_digest(frames: np.ndarray) -> str:
    """sha256 of an output's shape and uint8 bytes."""
    frames = np.ascontiguousarray(frames)
    assert frames.dtype == np.uint8
    return hashlib.sha256(repr(frames.shape).encode() + frames.tobytes()).hexdigest()


@pytest.mark.parametrize("name", MANIFESTS)
def test_output_names_of_the_sample_manifests(name, pinned_cfg, tmp_path):
    import fsspec

    fsspec.filesystem("memory").pipe(MASK_URI, (DATA / "logo_mask_160x118.png").read_bytes())
    rows = entries(name)
    for e in rows:
        e["video_uri"] = str(REPO / e["video_uri"])
        if "mask_uri" in e:
            e["mask_uri"] = MASK_URI
    uri = tmp_path / name
    uri.write_text("".join(json.dumps(e) + "\n" for e in rows))
    got = [(r["task"], r["ratio"], Path(r["output_uri"]).name, r["task_options"])
           for r in build_rows(pinned_cfg, str(uri), str(tmp_path / "out"))]
    assert got == NAMES[name]


def outputs(cfg, tiny_unet, tiny_vae) -> dict[str, np.ndarray]:
    """``"<manifest>:<clip_id>:<ratio or task>"`` -> uint8 output frames of every row, one thread."""
    pipe = OutpaintPipeline(tiny_unet, tiny_vae, job_settings(cfg))
    out = {}
    for name in MANIFESTS:
        for e in entries(name):
            frames, info = video.read_frames(REPO / e["video_uri"])
            task = e.get("task", "outpaint")
            key = f"{name}:{e['clip_id']}"
            if task == "outpaint":
                for r in e.get("target_ratios", "").split(",") if e.get("target_ratios") else cfg["ratios"]:
                    out[f"{key}:{r}"] = pipe.run_clip(frames, info.fps, r)[0]
            elif task == "inpaint":
                masks = video.read_masks(REPO / e["mask_uri"])
                out[f"{key}:inpaint"] = run_inpaint(pipe.outpainter, frames, masks, info.fps, e.get("mask_dilate", 0))
            else:
                out[f"{key}:extend"] = run_extend(pipe.outpainter, frames, info.fps, e["extend_frames"],
                                                  e.get("extend_direction", "forward"))
    return out


def test_output_frames_of_the_sample_manifests_at_one_thread(pinned_cfg, tiny_unet, tiny_vae):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = {k: (v.shape, frames_digest(v)) for k, v in outputs(pinned_cfg, tiny_unet, tiny_vae).items()}
    finally:
        torch.set_num_threads(threads)
    assert got == FRAMES
