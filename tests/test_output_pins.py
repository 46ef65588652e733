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
        ("outpaint", "9:16", "tree_9x16_17de34ea5897.mp4", None),
        ("outpaint", "1:1", "tree_1x1_17de34ea5897.mp4", None),
        ("outpaint", "9:16", "megamind_9x16_17de34ea5897.mp4", None),
        ("outpaint", "1:1", "megamind_1x1_17de34ea5897.mp4", None),
        ("outpaint", "9:16", "with_audio_9x16_17de34ea5897.mp4", None),
    ],
    "tasks_manifest.jsonl": [
        ("outpaint", "9:16", "megamind_9x16_17de34ea5897.mp4", None),
        ("inpaint", None, "no_logo_inpaint_af9caaf126e1.mp4",
         '{"dilate": 2, "mask_uri": "memory://pins/logo_mask_160x118.png", "task": "inpaint"}'),
        ("extend", None, "tree_longer_extend_b26fb4fc981f.mp4", '{"direction": "forward", "frames": 15, "task": "extend"}'),
    ],
}

#: ``"<manifest>:<clip_id>:<ratio or task>"`` -> (shape, sha256 of :func:`frames_digest`), measured at one thread.
FRAMES = {
    "sample_manifest.jsonl:tree:9:16": ((60, 64, 36, 3), "1cf4e2c0451b73ae2fe3c64f0e503ac85073fb72a8445e90d25f4e08d065d417"),
    "sample_manifest.jsonl:tree:1:1": ((60, 64, 64, 3), "b657798dd5e49ad56a2ac650831212336bc49bf3904beb4f75752da799477765"),
    "sample_manifest.jsonl:megamind:9:16": ((20, 64, 36, 3), "b9894e111e44441f95d8704142ee7d9d20684b4bc76de10e8a497f34ce7de859"),
    "sample_manifest.jsonl:megamind:1:1": ((20, 64, 64, 3), "83124d96996547ea801299e85a3c426b7bcc93475073624a8128e2c387e5dee5"),
    "sample_manifest.jsonl:with_audio:9:16": ((20, 64, 36, 3), "49cc6cf54e8c145e309a75443ed27fae236c226068b8d18817ae8e41c24ff49b"),
    "tasks_manifest.jsonl:megamind:9:16": ((20, 64, 36, 3), "b9894e111e44441f95d8704142ee7d9d20684b4bc76de10e8a497f34ce7de859"),
    "tasks_manifest.jsonl:no_logo:inpaint": ((20, 118, 160, 3), "5306c20d83193ba77a2dd851f5e1d2248593ce108762157fc610ffaa8e219ed9"),
    "tasks_manifest.jsonl:tree_longer:extend": ((75, 120, 160, 3), "170ef8933720ae8ef9f4b21b816c1522cbb362663683a8fe749e395faf3a9b10"),
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
