"""A strip of frames from output videos, for the README and docs (one row per video).

Each row holds ``--frames`` frames spaced evenly over the video, scaled to ``--height`` pixels (nearest
neighbour, so a 64-px output stays sharp), with a 4-px gap; rows are left-aligned on a white sheet.

Usage::

    .venv/bin/python benchmarks/sample_strip.py outputs/sample/*.mp4 --out docs/img/tiny-trained-sample.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def strip(clips: list[np.ndarray], frames: int = 6, height: int = 128, gap: int = 4) -> np.ndarray:
    """uint8 ``(rows·(height+gap), W, 3)``: ``frames`` evenly spaced frames of each uint8
    ``(T, H, W, 3)`` clip, one row each, scaled to ``height`` (nearest neighbour)."""
    from PIL import Image

    rows = []
    for clip in clips:
        ids = np.linspace(0, len(clip) - 1, frames).round().astype(int)
        w = max(1, int(round(clip.shape[2] * height / clip.shape[1])))
        row = np.full((height + gap, frames * (w + gap), 3), 255, np.uint8)
        for k, i in enumerate(ids):
            row[:height, k * (w + gap):k * (w + gap) + w] = np.asarray(Image.fromarray(clip[i]).resize((w, height), Image.NEAREST))
        rows.append(row)
    sheet = np.full((sum(r.shape[0] for r in rows), max(r.shape[1] for r in rows), 3), 255, np.uint8)
    y = 0
    for r in rows:
        sheet[y:y + r.shape[0], :r.shape[1]] = r
        y += r.shape[0]
    return sheet


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--height", type=int, default=128)
    args = ap.parse_args(argv)
    from m3ddm_ray.video import read_frames

    Image.fromarray(strip([read_frames(v)[0] for v in args.videos], args.frames, args.height)).save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
