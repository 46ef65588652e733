"""Cluster entry point of the batch job: ``python -m pipelines.outpaint --manifest ... --output ...``.

Same arguments as ``m3ddm-ray outpaint`` (see ``m3ddm_ray/distributed/job.py``); meant for
``ray job submit -- python -m pipelines.outpaint ...``.
"""

import sys

from m3ddm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["outpaint", *sys.argv[1:]]))
