"""Training sources and random clips: what one training example is, before any model sees it. No torch.

A *source* is a video (file, fsspec URL or frame folder) or a photograph seen through a moving crop
window (a virtual pan/zoom video, so the out-of-view content of every frame is known exactly).
:func:`sample_example` draws one example from a source: 16 clip frames at a random stride, a random
square crop resized to the ``S x S`` canvas, the ``G`` global frames of the (virtual) video through
the same crop, a mask from a :mod:`m3ddm_ray.masks` policy, and the fps condition ``fps // stride``
(as the inference window plan: ``avg_fps // stride``, :mod:`m3ddm_ray.plan`).

Sources are listed by :func:`read_sources` from ``--data``: a ``.jsonl`` manifest (rows with
``video_uri`` or ``image_uri``), or a folder/prefix holding videos, images and frame folders.
``skimage://NAME.png`` names a photograph shipped inside scikit-image's package data folder (read from
disk, never downloaded); ``synthetic://colour-fields`` a new synthetic photograph of flat colours per
example (:mod:`m3ddm_ray.training.synthetic`), so a manifest row ``{"image_uri":
"synthetic://colour-fields"}`` gives that share of the examples plain backgrounds, gradients,
rectangles and smooth colour fields seen through a moving window.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import geometry
from ..errors import InputError
from ..masks import make_policy, mask_global_frames
from .synthetic import COLOUR_FIELDS_URI, KINDS, colour_field

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Frame rate and length of the virtual video of a photograph.
PHOTO_FPS = 25.0
PHOTO_FRAMES = 240


@dataclass(frozen=True)
class Source:
    """One training source. ``kind`` is ``"video"`` or ``"photo"``; ``uri`` a path, URL or
    ``skimage://NAME``; ``fps`` overrides the video's frame rate (None: read it)."""

    kind: str
    uri: str
    fps: float | None = None


def skimage_path(name: str) -> Path:
    """Path of a photograph inside scikit-image's package data folder (no download).

    Raises:
        InputError: the file does not ship with the installed scikit-image.
    """
    import skimage.data

    path = Path(skimage.data.__file__).parent / name
    if not path.is_file():
        shipped = sorted(p.name for p in path.parent.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        raise InputError(f"skimage://{name}: not shipped with scikit-image; shipped images: {shipped}")
    return path


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in path.iterdir())


def read_sources(uri: str | os.PathLike) -> list[Source]:
    """List the training sources of ``--data``.

    * ``*.jsonl``: one JSON object per line with ``video_uri`` (video or frame folder, optional
      ``fps``) or ``image_uri`` (a photograph; ``skimage://NAME`` allowed); relative paths are taken
      from the working directory, like the outpaint manifests;
    * a folder: its videos, its images (photographs) and its sub-folders of images (frame folders).

    Raises:
        InputError: no such file/folder, a bad manifest row, or no source at all.
    """
    text = str(uri)
    path = Path(text)
    sources: list[Source] = []
    if text.endswith(".jsonl"):
        if not path.is_file():
            raise InputError(f"--data {text}: no such manifest")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{text}:{n}: not JSON ({exc})") from None
            if "video_uri" in row:
                sources.append(Source("video", str(row["video_uri"]), row.get("fps")))
            elif "image_uri" in row:
                uri = str(row["image_uri"])
                if uri.startswith("synthetic://") and uri != COLOUR_FIELDS_URI:
                    raise InputError(f"{text}:{n}: image_uri {uri!r}: the one synthetic source is {COLOUR_FIELDS_URI!r}")
                sources.append(Source("photo", uri))
            else:
                raise InputError(f"{text}:{n}: a row needs 'video_uri' (video or frame folder) or 'image_uri'")
    elif path.is_dir():
        for p in sorted(path.iterdir()):
            if p.suffix.lower() in VIDEO_EXTS:
                sources.append(Source("video", str(p)))
            elif p.suffix.lower() in IMAGE_EXTS:
                sources.append(Source("photo", str(p)))
            elif _is_frame_folder(p):
                sources.append(Source("video", str(p)))
    else:
        raise InputError(f"--data {text}: not a .jsonl manifest nor a folder of videos / images / frame folders")
    if not sources:
        raise InputError(f"--data {text}: no videos, images or frame folders found")
    return sources


# --------------------------------------------------------------------------- decoding (cached per process)
@functools.lru_cache(maxsize=8)
def load_video(uri: str, fps: float | None = None, max_side: int = 256) -> tuple[np.ndarray, float]:
    """All frames of a video or frame folder, shrunk so the long side is ``<= max_side``.

    Returns ``(uint8 (T, H, W, 3), fps)``. Cached per process (a few small videos at training
    resolution; each worker decodes a source once, not the dataset at once).
    """
    import cv2

    if Path(uri).is_dir():
        from ..video.images import read_image_sequence

        frames, rate = read_image_sequence(uri, fps)
    else:
        from .. import video

        frames, info = video.read_frames(uri)
        rate = float(fps or info.fps)
    h, w = frames.shape[1:3]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    return np.ascontiguousarray(frames), rate


@functools.lru_cache(maxsize=32)
def load_photo(uri: str, max_side: int = 512) -> np.ndarray:
    """A photograph as ``uint8 (H, W, 3)`` RGB (grey and RGBA converted), long side ``<= max_side``."""
    import cv2

    path = skimage_path(uri[len("skimage://"):]) if uri.startswith("skimage://") else Path(uri)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{uri}: cannot read this image")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return img


#: Side in pixels of a ``synthetic://colour-fields`` photograph.
SYNTHETIC_SIDE = 256


def synthetic_photo(seed: int) -> np.ndarray:
    """The ``synthetic://colour-fields`` photograph of the example with ``seed``: uint8
    ``(256, 256, 3)``, one of the four kinds of :func:`m3ddm_ray.training.synthetic.colour_field`
    (drawn from its own generator, so the example's other draws are those of any photo source)."""
    rng = np.random.default_rng([int(seed), 2])
    return colour_field(rng, SYNTHETIC_SIDE, int(rng.integers(KINDS)))


# --------------------------------------------------------------------------- one example
@dataclass(frozen=True)
class ClipSettings:
    """How examples are cut.

    Attributes:
        canvas_size: side ``S`` of the square canvas (multiple of 8).
        num_frames: clip length ``F`` (16, the window size).
        num_global_frames: ``G`` (16 as released).
        strides: strides drawn uniformly among those the source is long enough for (inference uses
            15, 5, 1 for videos of >= 50 frames and 1 below).
        crop_scale: side of the random square crop as a fraction of the frame's short side.
        mask_policy: a :func:`m3ddm_ray.masks.make_policy` entry.
    """

    canvas_size: int = 64
    num_frames: int = 16
    num_global_frames: int = 16
    strides: tuple[int, ...] = (1, 5, 15)
    crop_scale: tuple[float, float] = (0.6, 1.0)
    mask_policy: Any = "m3ddm_plus"


def _resize(img: np.ndarray, s: int) -> np.ndarray:
    import cv2

    interp = cv2.INTER_AREA if min(img.shape[:2]) >= s else cv2.INTER_LINEAR
    return cv2.resize(img, (s, s), interpolation=interp)


def _photo_frames(img: np.ndarray, ids: np.ndarray, rng: np.random.Generator, cs: ClipSettings) -> np.ndarray:
    """Frames ``ids`` of a virtual pan/zoom video over ``img``: a square window whose centre and side
    move linearly from a random start to a random end over :data:`PHOTO_FRAMES` frames."""
    import cv2

    h, w = img.shape[:2]
    short = min(h, w)
    side0, side1 = (rng.uniform(0.35, 0.8) * short for _ in range(2))
    pts = []
    for side in (side0, side1):
        pts.append((rng.uniform(side / 2, w - side / 2), rng.uniform(side / 2, h - side / 2)))
    s = cs.canvas_size
    out = np.empty((len(ids), s, s, 3), np.uint8)
    for j, t in enumerate(ids):
        a = t / (PHOTO_FRAMES - 1)
        side = side0 + a * (side1 - side0)
        cx, cy = pts[0][0] + a * (pts[1][0] - pts[0][0]), pts[0][1] + a * (pts[1][1] - pts[0][1])
        k = s / side  # affine map of the window onto the canvas (sub-pixel pan, antialiased by INTER_AREA)
        m = np.array([[k, 0, s / 2 - k * cx], [0, k, s / 2 - k * cy]], np.float32)
        out[j] = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
    return out


def sample_example(source: Source, seed: int, cs: ClipSettings = ClipSettings(), policy=None) -> dict[str, Any]:
    """One training example from ``source``, fully determined by ``seed``.

    Returns a row of numpy values:
        ``frames`` uint8 ``(F, S, S, 3)`` ground-truth canvases; ``mask`` uint8 ``(F, S, S)`` (1 =
        generate); ``global_frames`` uint8 ``(G, S, S, 3)`` with the pixels of in-clip global frames
        under the mask set to 0 (black, as the masked canvases); ``fps`` int64 (``fps // stride``);
        ``stride`` int64; ``seed`` int64 (drives the diffusion noise of this example).

    Raises:
        InputError: the source is too short for one clip even at stride 1 (fewer than ``F`` frames
            are padded by repeating the last frame, as the inference plan does).
    """
    rng = np.random.default_rng(seed)
    policy = make_policy(cs.mask_policy) if policy is None else policy
    f, g, s = cs.num_frames, cs.num_global_frames, cs.canvas_size
    if source.kind == "photo":
        img = synthetic_photo(seed) if source.uri == COLOUR_FIELDS_URI else load_photo(source.uri)
        total, fps = PHOTO_FRAMES, PHOTO_FPS
    else:
        frames, fps = load_video(source.uri, source.fps)
        total = len(frames)
    ok = [st for st in cs.strides if (f - 1) * st + 1 <= total] or [1]
    stride = int(ok[int(rng.integers(len(ok)))])
    span = (f - 1) * stride + 1
    start = int(rng.integers(0, max(total - span, 0) + 1))
    clip_ids = np.minimum(start + stride * np.arange(f), total - 1)
    global_ids = geometry.global_frame_ids(total, g)
    if source.kind == "photo":
        both = _photo_frames(img, np.concatenate([clip_ids, global_ids]), rng, cs)
    else:
        h, w = frames.shape[1:3]
        side = int(round(rng.uniform(*cs.crop_scale) * min(h, w)))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        pick = frames[np.concatenate([clip_ids, global_ids]), y0:y0 + side, x0:x0 + side]
        both = np.stack([_resize(x, s) for x in pick])
    clip, glob = both[:f], both[f:]
    draw = policy(rng, f, s)
    gmask = mask_global_frames(global_ids, clip_ids, draw.mask)
    glob = glob * (1 - gmask[..., None])
    return {"frames": clip, "mask": draw.mask, "global_frames": glob.astype(np.uint8),
            "fps": np.int64(int(fps // stride)), "stride": np.int64(stride), "seed": np.int64(seed)}


def example_seed(base_seed: int, index: int) -> int:
    """Seed of example ``index`` of a run (independent of worker count and order)."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1)[0])


def source_of(sources: Sequence[Source], seed: int) -> Source:
    """The source of an example: uniform over sources, from the example's seed."""
    return sources[int(np.random.default_rng([seed, 1]).integers(len(sources)))]
