"""Tiled borders against the whole-canvas run's upscaled border, at ground-truth resolution, on held-out clips.

Each held-out clip (``tests/data/heldout``, 128x128 frames) gives its first ``--frames`` frames as
the ground truth; the method sees the central half of the columns (``benchmark_known_span(W, 0.5)``:
columns 32..95, a 128x64 strip) and outpaints it back to the ground truth's ratio (1:1) with
``output_size="source"``, so the output has the ground truth's pixels and the known strip is pasted
at its own resolution. On the 64-px canvas the border is upscaled 2x; at working size 128 it is
generated at the output's scale.
Runs, all with the same model, seed and ``--steps`` PNDM steps:

* ``whole-canvas``: the whole-canvas run (canvas ``S`` of the model), border upscaled to the output;
* ``fused``: :class:`m3ddm_ray.tiled.TiledOutpaintPipeline` at ``--working-size`` with
  ``--overlap`` pixels of overlap (tiles fused at every step, over the whole-canvas run as layout);
* ``unfused``: the same with overlap 0 -- tiles that share no latent cell, so nothing is fused and
  each tile is denoised on its own (naive tiling), for the seam measure.

Scores against the ground truth (whole frame and generated pixels only): PSNR, SSIM, and the
sharpness ratio ``BMSE(output) / BMSE(ground truth)`` over the generated pixels
(:func:`m3ddm_ray.evaluation.metrics.bmse`; 1 = as much high-frequency energy as the ground truth,
< 1 = blurrier). Seams: :func:`m3ddm_ray.quality.tile_seam_ratio` on the working-resolution
composites along the run's own tile edges (for ``whole-canvas``: its composite upscaled to the working
size, at the fused plan's edges, as the no-tile reference). Cost: UNet calls (rows = tiles x
guidance branches) and wall seconds per clip.

Usage::

    .venv/bin/python benchmarks/bench_tiles.py [--clips chelsea_0,rocket_0] [--frames 16] [--steps 10]
        [--working-size 128] [--overlap 32] [--model tests/data/trained] [--json OUT] [--strip PNG]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from torch import nn  # noqa: E402

from _common import DATA, machine_info, print_table, write_json  # noqa: E402


class CountingUNet(nn.Module):
    """Wraps a UNet and counts its forward calls and batch rows (tiles or windows x branches)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls, self.rows = inner, 0, 0

    device = property(lambda self: self.inner.device)
    dtype = property(lambda self: self.inner.dtype)

    def forward(self, sample, t, **kw):
        self.calls += 1
        self.rows += int(sample.shape[0])
        return self.inner(sample, t, **kw)

    def encode_global_frames(self, *a, **kw):
        return self.inner.encode_global_frames(*a, **kw)


def score(out, gt, mask):
    import numpy as np

    from m3ddm_ray.evaluation.metrics import bmse, psnr, ssim

    return {"psnr": float(np.mean(psnr(out, gt))), "psnr_gen": float(np.mean(psnr(out, gt, mask=mask))),
            "ssim": float(np.mean(ssim(out, gt))),
            "sharpness": float(np.mean(bmse(out, mask)) / np.mean(bmse(gt, mask)))}


def run_clip(name: str, args, unet, vae) -> tuple[list[dict], list]:
    import cv2
    import numpy as np

    from m3ddm_ray import geometry
    from m3ddm_ray.evaluation.protocols import benchmark_known_span
    from m3ddm_ray.pipeline import OutpaintPipeline, OutpaintSettings, SamplerSettings, generated_array
    from m3ddm_ray.quality import tile_seam_ratio
    from m3ddm_ray.tiled import TiledOutpaintPipeline, clip_tiles
    from m3ddm_ray.tiles import TilingSettings, plan_tiles, tile_cuts
    from m3ddm_ray.video import read_frames

    frames, info = read_frames(DATA / "heldout" / f"{name}.mp4")
    gt = np.ascontiguousarray(frames[:args.frames])
    h, w = gt.shape[1:3]
    x0, x1 = benchmark_known_span(w, 0.5)
    strip = np.ascontiguousarray(gt[:, :, x0:x1])
    mask = np.ones((h, w), np.uint8)
    mask[:, x0:x1] = 0
    ratio = f"{w}:{h}"
    s = args.canvas
    sampler = SamplerSettings(num_inference_steps=args.steps, max_batch=args.max_batch)
    rows, outs = [], [gt]
    runs = [("whole-canvas", None, 0), ("fused", args.working_size, args.overlap), ("unfused", args.working_size, 0)]
    for label, ws, overlap in runs:
        settings = OutpaintSettings(sampler=sampler, canvas_size=s, output_size="source",
                                    tiling=TilingSettings(working_size=ws, overlap=overlap,
                                                          layout_strength=args.layout_strength))
        counted = CountingUNet(unet)
        pipe = (TiledOutpaintPipeline if ws else OutpaintPipeline)(counted, vae, settings)
        t0 = time.perf_counter()
        out, clip, state = pipe.run_clip(strip, info.fps, ratio)
        wall = time.perf_counter() - t0
        if out.shape != gt.shape:
            raise SystemExit(f"{name}: output {out.shape} is not the ground truth's {gt.shape}")
        comp = geometry.paste_back(generated_array(clip, state), clip.masked, clip.mask)
        n_tiles = 1
        if ws:
            tiles, _ = clip_tiles(clip, overlap, s, 8)
            n_tiles = len(tiles)
            cuts = tile_cuts(tiles, (ws, ws))
            seam_frames, seam_mask = comp, clip.mask
        else:
            work_size = args.working_size
            seam_frames = np.stack([cv2.resize(c, (work_size, work_size), interpolation=cv2.INTER_CUBIC)
                                    for c in comp])
            geom_w = geometry.plan_canvas(*clip.geom.source_hw, clip.geom.ratios, work_size)
            seam_mask = geometry.pixel_mask(geom_w)
            cuts = tile_cuts(plan_tiles((work_size, work_size), geom_w.known_box, s, args.overlap, 8),
                             (work_size, work_size))
        row = {"clip": name, "run": label, "working_size": ws or s, "overlap": overlap, "tiles": n_tiles,
               **score(out, gt, mask), "seam": tile_seam_ratio(seam_frames, seam_mask, *cuts),
               "unet_calls": counted.calls, "unet_rows": counted.rows, "wall_s": wall}
        rows.append(row)
        outs.append(out)
    return rows, outs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", default="chelsea_0,rocket_0")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--working-size", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--layout-strength", type=float, default=0.6)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--model", default=str(DATA / "trained"), help="folder with unet/ and vae/")
    ap.add_argument("--canvas", type=int, default=64, help="the model's canvas size")
    ap.add_argument("--json", default=None)
    ap.add_argument("--strip", default=None, help="PNG: per clip, rows ground truth / whole-canvas / fused / unfused")
    args = ap.parse_args()

    import torch

    from m3ddm_ray.models.loading import load_unet, load_vae

    torch.set_num_threads(1)
    unet = load_unet(Path(args.model) / "unet", "fp32", "cpu")
    vae = load_vae(Path(args.model) / "vae", "fp32", "cpu")
    rows, outs = [], []
    for name in args.clips.split(","):
        clip_rows, clip_outs = run_clip(name, args, unet, vae)
        rows += clip_rows
        outs += clip_outs
    if args.strip:
        from PIL import Image
        from sample_strip import strip

        Image.fromarray(strip(outs, frames=6, height=128)).save(args.strip)
    keys = ["clip", "run", "working_size", "overlap", "tiles", "psnr", "psnr_gen", "ssim", "sharpness", "seam",
            "unet_calls", "unet_rows", "wall_s"]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else v  # noqa: E731
    print_table(keys, [[fmt(r[k]) for k in keys] for r in rows],
                title=f"bench_tiles: model {args.model}, {args.frames} frames, {args.steps} PNDM steps")
    write_json(args.json, {"machine": machine_info(), "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
