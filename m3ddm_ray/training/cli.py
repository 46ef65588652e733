"""``m3ddm-ray train``: arguments and command (registered in :mod:`m3ddm_ray.cli`)."""

from __future__ import annotations

import argparse
import json


def add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune the M3DDM UNet on Ray Train (DDP; gloo on CPU, NCCL on GPU)",
        description="Train (or fine-tune with --init) the M3DDM UNet on random 16-frame clips of --data, "
                    "VAE frozen (a small one is trained first when the config says model.vae: train). "
                    "Checkpoints (released format + optimizer state) go to OUTPUT/checkpoints, the final "
                    "model to OUTPUT/unet and OUTPUT/vae, the loss log to OUTPUT/metrics.jsonl.",
    )
    p.add_argument("--config", required=True, help="training config YAML (e.g. configs/train-tiny-cpu.yaml)")
    p.add_argument("--data", required=True,
                   help="a .jsonl manifest (video_uri / image_uri rows) or a folder of videos, images, frame folders")
    p.add_argument("--output", required=True, help="run folder or fsspec URL (s3://..., gs://..., memory://...)")
    p.add_argument("--init", default=None, help="released-format UNet (folder, URL or hub id) to fine-tune")
    p.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT's last complete checkpoint")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or an embedded local Ray)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set train.batch_size=8 (repeatable)")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from .config import load_train_config
    from .ray_train import run_training

    overrides = list(args.set)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise InputError(f"--max-steps {args.max_steps}: must be >= 1")
        overrides.append(f"train.max_steps={args.max_steps}")
    cfg = load_train_config(args.config, overrides)
    result = run_training(cfg, args.data, args.output, init=args.init, resume=args.resume, address=args.address)
    print(json.dumps(result, default=str))
    return 0


def add_refit_vae(subparsers) -> None:
    p = subparsers.add_parser(
        "refit-vae",
        help="refit a VAE with fewer GroupNorm groups, keeping its latent space (the UNet stays valid)",
        description="Copy --vae with --norm-groups GroupNorm groups and train the copy to keep its latents "
                    "(encoder) and to reconstruct frames of --data plus synthetic flat-colour fields from "
                    "them (decoder); saves the released AutoencoderKL format to OUTPUT "
                    "(m3ddm_ray.training.vae.refit_vae, docs/training.md § The VAE).",
    )
    p.add_argument("--vae", required=True, help="the VAE to refit (folder, fsspec URL or hub id)")
    p.add_argument("--data", required=True, help="a .jsonl manifest or a folder (as for `train`)")
    p.add_argument("--output", required=True, help="folder or fsspec URL for the refit VAE")
    p.add_argument("--norm-groups", type=int, default=4, help="GroupNorm groups of the refit VAE (default 4)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--min-lr-ratio", type=float, default=1.0,
                   help="cosine-decay the learning rate to lr x this at the last step (default 1.0: constant)")
    p.add_argument("--colour-share", type=float, default=0.3,
                   help="share of the frame pool replaced by flat-colour fields (default 0.3)")
    p.add_argument("--latent-weight", type=float, default=1.0)
    p.add_argument("--consistency-weight", type=float, default=0.0,
                   help="pull the latents of black-bordered canvases on known cells to the clean latents "
                        "(weight; default 0: off)")
    p.add_argument("--decoder-only", action="store_true",
                   help="train the decoder side only: the encoder and every latent stay exactly the old VAE's "
                        "(--norm-groups must be the old VAE's)")
    p.add_argument("--latent-noise", type=float, default=0.0,
                   help="decoder inputs get Gaussian noise of a std drawn uniformly in [0, this], in scaled-latent "
                        "units, so the decoder is robust to a UNet's latent errors (default 0: off)")
    p.add_argument("--pool-size", type=int, default=2048, help="training frames cut once (default 2048)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--max-wall-s", type=float, default=None)
    p.set_defaults(func=cmd_refit_vae)


def cmd_refit_vae(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..errors import InputError
    from ..models.loading import load_vae
    from . import checkpoint as ckpt
    from .sources import read_sources
    from .vae import refit_vae

    if args.steps < 1 or not 0.0 <= args.colour_share <= 1.0 or not 0.0 <= args.min_lr_ratio <= 1.0 \
            or args.consistency_weight < 0:
        raise InputError(f"--steps {args.steps} must be >= 1, --colour-share {args.colour_share} and "
                         f"--min-lr-ratio {args.min_lr_ratio} in [0, 1], --consistency-weight "
                         f"{args.consistency_weight} >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    old = load_vae(args.vae, "fp32", "cpu")

    def log(row):
        print(f"vae step {row['vae_step']} l1 {row['vae_l1']:.4f} latent {row['vae_latent']:.4f} "
              f"consistency {row['vae_consistency']:.4f} {row['elapsed_s']:.0f}s", flush=True)

    new = refit_vae(old, read_sources(args.data), args.norm_groups, steps=args.steps, batch_size=args.batch_size,
                    lr=args.lr, latent_weight=args.latent_weight, colour_field_share=args.colour_share, log=log, pool_size=args.pool_size,
                    max_wall_s=args.max_wall_s, min_lr_ratio=args.min_lr_ratio,
                    consistency_weight=args.consistency_weight, decoder_only=args.decoder_only,
                    latent_noise=args.latent_noise)
    ckpt.save_model_folder(new, args.output)
    print(json.dumps({"vae": args.output, "from": args.vae, "norm_num_groups": args.norm_groups,
                      "steps": args.steps, "latent_noise": args.latent_noise, "seconds": round(time.time() - t0, 1)}))
    return 0
