"""Deviation of each fast sampler setting from the default 50-step PNDM output of the same model
(issue 10 item 5, partial: no ground-truth protocol here). Single process, canvas 64.

Usage::

    .venv/bin/python benchmarks/bench_fast_deviation.py --model M --vae V --video CLIP [--ratio 9:16]

PSNR (dB) of the composited output canvases of a setting against the default's, over the generated
(masked) pixels only, and the UNet calls per frame of the setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from _common import machine_info, print_table  # noqa: E402

SETTINGS = [
    ("default: PNDM 50", dict()),
    ("fast: DPM-Solver++ 2M 20", dict(scheduler="dpmsolver++", num_inference_steps=20)),
    ("DPM-Solver++ 2M 20 + DeepCache N=3", dict(scheduler="dpmsolver++", num_inference_steps=20, deepcache_interval=3)),
    ("DPM-Solver++ 2M 20 + T-GATE k=10", dict(scheduler="dpmsolver++", num_inference_steps=20, tgate_step=10)),
    ("UniPC 15", dict(scheduler="unipc", num_inference_steps=15)),
    ("PNDM 50 + DeepCache N=3", dict(deepcache_interval=3)),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--ratio", default="9:16")
    args = ap.parse_args(argv)
    from m3ddm_ray import geometry, video
    from m3ddm_ray.pipeline import OutpaintPipeline, OutpaintSettings, generated_array
    from m3ddm_ray.sampling import SamplerSettings

    frames, info = video.read_frames(args.video)
    pipe = OutpaintPipeline.from_pretrained(args.model, args.vae, dtype="fp32", device="cpu",
                                            settings=OutpaintSettings(canvas_size=64))
    ref, rows = None, []
    for label, kw in SETTINGS:
        p = pipe.with_settings(sampler=dataclasses.replace(SamplerSettings(), **kw))
        t0 = time.perf_counter()
        _, clip, state = p.run_clip(frames, info.fps, args.ratio)
        sec = time.perf_counter() - t0
        comp = geometry.paste_back(generated_array(clip, state), clip.masked, clip.mask).astype(np.float64)
        hole = clip.mask.astype(bool)
        if ref is None:
            ref = comp
        mse = ((comp - ref)[:, hole] ** 2).mean()
        dev = float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)
        calls = len(clip.plan.windows) * p.settings.sampler.num_inference_steps / clip.num_frames
        rows.append([label, p.settings.sampler.num_inference_steps, calls, dev, sec])
    print(machine_info())
    print_table(["setting", "steps", "UNet calls / frame", "PSNR vs default (dB, generated pixels)", "wall s"], rows,
                title=f"{args.video}: {len(frames)} frames, ratio {args.ratio}, canvas 64")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
