"""Inpainting and prediction on the held-out clips: the project's small trained model vs the baselines.

Single process, no Ray (the eval job's ``--task`` wiring comes later). For each clip of
``tests/data/heldout`` (its first ``--frames`` frames):

* inpainting: a synthetic object mask (``stationary`` and ``moving``, area 0.1, seed = clip index),
  methods ``model`` (``tasks.run_inpaint``), ``telea`` (per frame), ``nearest_known`` (copy from the
  nearest frame where the pixel is known); PSNR / SSIM over whole frames and the temporal
  consistency in the hole (levels; lower is better);
* prediction (ExtDM-style): condition on the first ``c`` frames, predict ``p``; methods ``model``
  (``tasks.run_extend``) and ``last_frame``; PSNR / SSIM per predicted frame index.

Usage::

    .venv/bin/python benchmarks/eval_tasks.py [--frames 16] [--context 8] [--predict 8] [--steps 50] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, print_table, write_json  # noqa: E402

from m3ddm_ray import tasks, video  # noqa: E402
from m3ddm_ray.evaluation.task_baselines import last_frame_copy, nearest_known_inpaint, telea_inpaint  # noqa: E402
from m3ddm_ray.evaluation.task_protocols import (  # noqa: E402
    inpaint_case,
    inpaint_scores,
    prediction_case,
    prediction_scores,
)
from m3ddm_ray.pipeline import OutpaintPipeline, OutpaintSettings  # noqa: E402
from m3ddm_ray.sampling import SamplerSettings  # noqa: E402

TRAINED = DATA / "trained"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--context", type=int, default=8)
    p.add_argument("--predict", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--clips", type=int, default=0, help="only the first N clips (0: all)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    settings = OutpaintSettings(sampler=SamplerSettings(num_inference_steps=args.steps), canvas_size=64)
    pipe = OutpaintPipeline.from_pretrained(str(TRAINED / "unet"), str(TRAINED / "vae"), dtype="fp32",
                                            device="cpu", settings=settings)
    clips = sorted((DATA / "heldout").glob("*.mp4"))
    if args.clips:
        clips = clips[:args.clips]
    inpaint_rows: dict[tuple[str, str], list[dict]] = {}
    pred_rows: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    for i, path in enumerate(clips):
        frames, info = video.read_frames(str(path), range(args.frames))
        for motion in ("stationary", "moving"):
            case = inpaint_case(frames, motion, 0.1, seed=i)
            outs = {"model": tasks.run_inpaint(pipe.outpainter, frames, case.masks, info.fps),
                    "telea": telea_inpaint(frames, case.masks),
                    "nearest_known": nearest_known_inpaint(frames, case.masks)}
            for name, out in outs.items():
                inpaint_rows.setdefault((motion, name), []).append(inpaint_scores(out, case))
        case = prediction_case(frames, args.context, args.predict)
        outs = {"model": tasks.run_extend(pipe.outpainter, case.context, info.fps, args.predict)[args.context:],
                "last_frame": last_frame_copy(case.context, args.predict)}
        for name, out in outs.items():
            pred_rows.setdefault(name, []).append(prediction_scores(out, case))
        print(f"{path.name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)

    table = []
    for (motion, name), rows in inpaint_rows.items():
        table.append([motion, name, f"{np.mean([r['psnr'] for r in rows]):.2f}",
                      f"{np.mean([r['ssim'] for r in rows]):.3f}", f"{np.nanmean([r['temporal'] for r in rows]):.2f}"])
    print_table(["mask", "method", "PSNR dB", "SSIM", "temporal (levels)"], table)
    ptable = []
    for name, rows in pred_rows.items():
        psnr = np.mean([r["psnr"] for r in rows], axis=0)
        ssim = np.mean([r["ssim"] for r in rows], axis=0)
        ptable.append([name] + [f"{a:.1f} / {b:.2f}" for a, b in zip(psnr, ssim)])
    print_table(["method"] + [f"t+{k + 1} PSNR/SSIM" for k in range(args.predict)], ptable)
    if args.json:
        write_json(args.json, {"inpaint": table, "prediction": ptable, "clips": [c.name for c in clips],
                               "args": vars(args)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
