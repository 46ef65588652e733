"""Train one small VAE with given settings (or load one with ``--vae``) and score it: flat-colour reconstruction error (RGB levels,
the flat-scene colours and 12 random colours; the flat-scene colours again with Gaussian noise of std 0.1 and
0.25 on the scaled latents, 3 seeds: how far a UNet-sized latent error moves the decoded colour) and held-out reconstruction PSNR (the diagnostics'
``vae_ceiling`` on ``tests/data/heldout``). Variants are compared by running this script side by side
(one thread each) with the same ``--steps``.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_vae.py --steps 800 --groups 4 \\
        [--channels 16,32,64,64] [--crop 32] [--save DIR] [--json out.json]
    .venv/bin/python benchmarks/bench_vae.py --vae tests/data/trained/vae   # score only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from m3ddm_ray.evaluation.flat_scene import FLAT_COLOURS
    from m3ddm_ray.training.diagnostics import flat_colour_error, heldout_clips, vae_ceiling
    from m3ddm_ray.training.sources import read_sources
    from m3ddm_ray.training.vae import train_vae

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "tests/data/train_manifest.jsonl"))
    ap.add_argument("--heldout", default=str(ROOT / "tests/data/heldout"))
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--channels", default="16,32,64,64")
    ap.add_argument("--crop", type=int, default=32, help="0: whole canvases")
    ap.add_argument("--canvas", type=int, default=64)
    ap.add_argument("--vae", default=None, help="score this VAE (folder) instead of training one")
    ap.add_argument("--save", default=None, help="save the VAE to this folder (save_pretrained)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.vae:
        from m3ddm_ray.models.loading import load_vae

        vae = load_vae(args.vae, "fp32", "cpu")
    else:
        vae = train_vae(read_sources(args.data), steps=args.steps, batch_size=args.batch, canvas_size=args.canvas,
                        block_out_channels=[int(c) for c in args.channels.split(",")], norm_num_groups=args.groups,
                        crop_size=args.crop or None)
    train_s = time.time() - t0
    rng = np.random.default_rng(123)
    colours = [tuple(c) for c in FLAT_COLOURS] + [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(12)]
    errs = flat_colour_error(vae, colours, args.canvas)
    ceiling = vae_ceiling(vae, heldout_clips(args.heldout, args.canvas), fillers=())
    settings = {"vae": args.vae} if args.vae else {k: v for k, v in vars(args).items() if k not in ("save", "json", "vae")}
    row = {"settings": settings,
           "train_s": round(train_s, 1), "flat_named": dict(zip(map(str, FLAT_COLOURS), errs[:len(FLAT_COLOURS)])),
           "flat_random_mean": float(np.mean(errs[len(FLAT_COLOURS):])),
           "flat_random_max": float(np.max(errs[len(FLAT_COLOURS):])),
           "heldout_recon_psnr": ceiling["vae_whole_frame"]}
    for sigma in (0.1, 0.25):  # a UNet's latent error: the colour a decoder makes of a nearby latent
        noisy = np.mean([flat_colour_error(vae, FLAT_COLOURS, args.canvas, latent_noise=sigma, seed=s)
                         for s in range(3)], axis=0)
        row[f"flat_named_latent_noise_{sigma}"] = dict(zip(map(str, FLAT_COLOURS), map(float, noisy)))
    print(json.dumps(row, indent=1))
    if args.save:
        vae.save_pretrained(args.save)
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
