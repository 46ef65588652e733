"""Make the held-out evaluation videos of the trained tiny model (tests/data/heldout/).

Pan/zoom clips over photographs that ship with scikit-image and are NOT in train_manifest.jsonl
(chelsea, rocket, coins), 32 frames of 128x128 each (a crop window moving over the photo, so the
content outside any crop is the true continuation), plus the sample video box_24.mp4 (box is not
in the training data either). Run from the repository root:

    PYTHONPATH=$PWD python tests/data/make_heldout_clips.py
"""

import shutil
from pathlib import Path

import numpy as np

from m3ddm_ray import video
from m3ddm_ray.training.sources import ClipSettings, _photo_frames, load_photo

OUT = Path(__file__).resolve().parent / "heldout"
PHOTOS = {"chelsea": "skimage://chelsea.png", "rocket": "skimage://rocket.jpg", "coins": "skimage://coins.png"}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    cs = ClipSettings(canvas_size=128)
    for name, uri in PHOTOS.items():
        img = load_photo(uri)
        for k in range(2):
            rng = np.random.default_rng([k, len(name)])
            frames = _photo_frames(img, np.arange(0, 96, 3), rng, cs)  # 32 frames, a slow pan / zoom
            video.write_video(OUT / f"{name}_{k}.mp4", frames, 25)
    shutil.copy(Path(__file__).resolve().parent / "box_24.mp4", OUT / "box_24.mp4")


if __name__ == "__main__":
    main()
