"""``python -m m3ddm_ray ...``: the same as the ``m3ddm-ray`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
