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
