"""Cluster entry point of training: ``python -m pipelines.train --config ... --data ... --output ...``.

Same arguments as ``m3ddm-ray train`` (see ``m3ddm_ray/training/cli.py``); meant for
``ray job submit -- python -m pipelines.train ...``.
"""

import sys

from m3ddm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
