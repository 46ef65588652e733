"""The flat-scene check for any model: border error (RGB levels) against the background colour of flat
clips with a small moving object, outpainted 16:9 -> 9:16 (m3ddm_ray/evaluation/flat_scene.py), next to
edge replication and to the VAE's own reconstruction of the flat colour (its ceiling), and where the
flat frame lies in latent space (per-channel mean of its latents x 0.18215: a whitened VAE gives natural
frames mean 0 and std 1 per channel); optional strip.

Usage::

    .venv/bin/python benchmarks/flat_scene.py --unet tests/data/trained/unet --vae tests/data/trained/vae \\
        [--steps 10] [--seed 6] [--guidance 2 --global-guidance 4] [--strip docs/img/flat-scene.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from m3ddm_ray.evaluation.baselines import outpaint
    from m3ddm_ray.evaluation.flat_scene import FLAT_COLOURS, border_error, flat_clip, output_border
    from m3ddm_ray.models.loading import load_unet, load_vae
    from m3ddm_ray.pipeline import OutpaintPipeline, OutpaintSettings
    from m3ddm_ray.sampling import SamplerSettings
    from m3ddm_ray.training.diagnostics import flat_colour_error

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unet", required=True)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--canvas", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=6, help="diffusion noise seed (default 6, the official one)")
    ap.add_argument("--guidance", type=float, default=2.0, help="w, masked-video condition (official 2)")
    ap.add_argument("--global-guidance", type=float, default=4.0, help="w_g, global frames (official 4)")
    ap.add_argument("--strip", default=None, help="PNG: one row per colour (benchmarks/sample_strip.py)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    vae = load_vae(args.vae, "fp32", "cpu")
    sampler = SamplerSettings(num_inference_steps=args.steps, seed=args.seed, guidance_scale=args.guidance,
                              previous_guidance_scale=args.global_guidance)
    pipe = OutpaintPipeline(load_unet(args.unet, "fp32", "cpu"), vae,
                            OutpaintSettings(sampler=sampler, canvas_size=args.canvas))
    rows, outs = [], []
    print("| colour | model | replicate | VAE ceiling (flat frame) | flat frame's latent channel means |\n"
          "|---|---:|---:|---:|---|")
    for colour in FLAT_COLOURS:
        clip = flat_clip(colour)
        out, prepared, _ = pipe.run_clip(clip, 25.0, "9:16")
        border = output_border(prepared.geom, "9:16")
        row = {"colour": list(colour), "model": border_error(out, border, colour),
               "replicate": border_error(outpaint("replicate", clip, prepared.geom, "9:16"), border, colour),
               "vae_ceiling": flat_colour_error(vae, [colour], args.canvas)[0],
               "latent_means": [round(float(v), 2) for v in latent_means(vae, colour, args.canvas)]}
        rows.append(row)
        outs.append(out)
        print(f"| {tuple(colour)} | {row['model']:.1f} | {row['replicate']:.1f} | {row['vae_ceiling']:.1f} | "
              f"{' / '.join(f'{v:+.1f}' for v in row['latent_means'])} |")
    if args.strip:
        from PIL import Image
        from sample_strip import strip

        Image.fromarray(strip(outs, frames=6, height=96)).save(args.strip)
    if args.json:
        Path(args.json).write_text(json.dumps({"unet": args.unet, "vae": args.vae, "steps": args.steps, "seed": args.seed,
                                               "guidance": [args.guidance, args.global_guidance],
                                               "rows": rows}, indent=1))
    return 0


def latent_means(vae, colour, canvas: int):
    """Per-channel mean of the latents (x 0.18215) of one flat ``canvas x canvas`` frame, float32 ``(C,)``."""
    import numpy as np
    import torch

    from m3ddm_ray.training.objective import encode

    flat = np.zeros((1, canvas, canvas, 3), np.uint8) + np.asarray(colour, np.uint8)
    with torch.no_grad():
        return encode(vae, torch.from_numpy(flat))[0].mean(dim=(1, 2)).cpu().numpy()


if __name__ == "__main__":
    raise SystemExit(main())
