"""Evaluation datasets: DAVIS 2016 / 2017, YouTube-VOS, a folder of videos -> evaluation manifests.

A dataset reader lists the *videos* of a split (:class:`EvalVideo`: a frame folder with its frames in
order, or a video file), :func:`make_clips` cuts them into evaluation *clips* (:class:`EvalClip`: one
row of the evaluation manifest) and :func:`load_clip` decodes a clip's frames. The ground truth of
an outpainting evaluation is the clip itself: the protocol (:mod:`m3ddm_ray.evaluation.protocols`)
resizes it and crops the known strip out of it, and the method has to paint the rest back.

Layouts (``root`` is a local folder or any fsspec URL; every missing part is reported as an
:class:`~m3ddm_ray.errors.InputError` naming the file or folder that was expected):

* ``davis2017``: ``<root>/JPEGImages/<res>/<seq>/00000.jpg`` and ``<root>/ImageSets/2017/<split>.txt``
  (one sequence name a line). ``res`` is ``480p`` by default. 24 frames per second.
* ``davis2016``: ``<root>/JPEGImages/<res>/<seq>/`` and ``<root>/ImageSets/<res>/<split>.txt`` whose
  lines are ``/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png``: the listed frames
  (first column) are used, grouped by sequence in the order of the file. 24 frames per second.
* ``youtube-vos``: ``<root>/<split>/JPEGImages/<video_id>/*.jpg`` (``val`` is accepted for the
  ``valid`` folder). The released frames are every 5th frame of 30 fps videos, so 6 frames per
  second; the ``*_all_frames`` splits hold every frame (30 fps).
* ``folder``: every video file under ``<root>`` (recursively; the extensions of
  :data:`m3ddm_ray.distributed.manifest.VIDEO_EXTENSIONS`), clip ids as the main job derives them.

Frame folders are also a general input of the job; their reader lives with the video readers in
:mod:`m3ddm_ray.video.images` (:func:`read_image_sequence` and friends, re-exported here).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..video.images import (  # frame folders are a video input; re-exported here for the dataset readers
    DEFAULT_FPS,
    IMAGE_EXTENSIONS,
    abs_uri,
    is_image,
    join_uri,
    path_kind,
    list_dir,
    read_bytes,
    require_kind,
    image_sequence_info,
    is_image_sequence,
    iter_image_sequence,
    list_image_sequence,
    read_image_sequence,
    read_images,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_FPS",
    "DAVIS_FPS",
    "YOUTUBE_VOS_FPS",
    "DATASETS",
    "EvalVideo",
    "EvalClip",
    "read_dataset",
    "read_davis2017",
    "read_davis2016",
    "read_youtube_vos",
    "read_video_folder",
    "make_clips",
    "load_clip",
    "is_image_sequence",
    "list_image_sequence",
    "read_images",
    "read_image_sequence",
    "iter_image_sequence",
    "image_sequence_info",
    "clips_to_table",
]

#: Frame rate of DAVIS sequences (captured and released at 24 fps).
DAVIS_FPS = 24.0
#: Frame rate of the released YouTube-VOS frames: every 5th frame of 30 fps videos.
YOUTUBE_VOS_FPS = 6.0

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

# --------------------------------------------------------------------------------------------------
# Manifest entries
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalVideo:
    """One video of a dataset split.

    Attributes:
        name: sequence name / video id / clip id of a video file (safe as a file name).
        uri: the frame folder, or the video file.
        frames: frame image URIs in order for a frame folder; empty for a video file.
        fps: frame rate.
        num_frames: number of frames (known for frame folders; None until probed for video files).
        dataset, split: where it comes from.
    """

    name: str
    uri: str
    frames: tuple[str, ...] = ()
    fps: float = DEFAULT_FPS
    num_frames: int | None = None
    dataset: str = ""
    split: str | None = None

    @property
    def is_image_sequence(self) -> bool:
        return bool(self.frames)


@dataclass(frozen=True)
class EvalClip:
    """One row of an evaluation manifest: frames ``[start, start + num_frames)`` of a video.

    The ground truth is the clip itself (``gt_uri == uri``); the protocol derives the input.
    """

    clip_id: str
    dataset: str
    split: str | None
    sequence: str
    uri: str
    frame_uris: tuple[str, ...] | None
    start: int
    num_frames: int
    fps: float

    @property
    def gt_uri(self) -> str:
        return self.uri

    def to_record(self) -> dict[str, Any]:
        """Plain dict (JSON / Arrow friendly); :meth:`from_record` inverts it."""
        d = dataclasses.asdict(self)
        d["frame_uris"] = list(self.frame_uris) if self.frame_uris is not None else None
        d["gt_uri"] = self.gt_uri
        return d

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "EvalClip":
        fu = record.get("frame_uris")
        return cls(
            clip_id=str(record["clip_id"]), dataset=str(record["dataset"]),
            split=None if record.get("split") is None else str(record["split"]),
            sequence=str(record["sequence"]), uri=str(record["uri"]),
            frame_uris=None if fu is None else tuple(str(u) for u in fu),
            start=int(record["start"]), num_frames=int(record["num_frames"]), fps=float(record["fps"]),
        )


def clips_to_table(clips: Sequence[EvalClip]):
    """The evaluation manifest as a pyarrow Table (one row per clip)."""
    import pyarrow as pa

    schema = pa.schema([
        ("clip_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()), ("sequence", pa.string()),
        ("uri", pa.string()), ("frame_uris", pa.list_(pa.string())), ("start", pa.int64()),
        ("num_frames", pa.int64()), ("fps", pa.float64()), ("gt_uri", pa.string()),
    ])
    return pa.Table.from_pylist([c.to_record() for c in clips], schema=schema)


def _safe_name(name: str) -> str:
    return _SAFE.sub("_", name).strip("._-")[:100] or "clip"


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------


def _sequence_folder(folder: str, name: str, storage_options, what: str, listed_in: str,
                     fps: float, dataset: str, split: str) -> EvalVideo:
    got = path_kind(folder, storage_options)
    if got != "directory":
        raise InputError(f"{what}: sequence {name!r} is listed in {listed_in} but its frame folder {folder} "
                         f"{'is missing' if got is None else 'is a file'}")
    frames = list_image_sequence(folder, storage_options)
    return EvalVideo(_safe_name(name), folder, tuple(frames), fps, len(frames), dataset, split)


def read_davis2017(root: str | os.PathLike, split: str = "val", resolution: str = "480p",
                   storage_options: Mapping[str, Any] | None = None) -> list[EvalVideo]:
    """DAVIS 2017: the sequences named in ``ImageSets/2017/<split>.txt``, frames from
    ``JPEGImages/<resolution>/<seq>/``, in the order of the list file.

    Raises:
        InputError: missing root, list file, ``JPEGImages/<resolution>`` folder or sequence folder,
            an empty list, a sequence folder without images.
    """
    root = abs_uri(root)
    what = "DAVIS 2017"
    hint = "expected <root>/JPEGImages/480p/<seq>/00000.jpg and <root>/ImageSets/2017/{train,val}.txt"
    require_kind(root, "directory", storage_options, what, hint)
    listing = join_uri(root, "ImageSets", "2017", f"{split}.txt")
    require_kind(listing, "file", storage_options, what, f"split {split!r} needs this list of sequences; {hint}")
    images = join_uri(root, "JPEGImages", resolution)
    require_kind(images, "directory", storage_options, what, hint)
    names = [ln.strip() for ln in read_bytes(listing, storage_options).decode("utf-8", "replace").splitlines()]
    names = list(dict.fromkeys(n for n in names if n and not n.startswith("#")))
    if not names:
        raise InputError(f"{what}: {listing} lists no sequence")
    return [_sequence_folder(join_uri(images, n), n, storage_options, what, listing, DAVIS_FPS, "davis2017", split)
            for n in names]


def read_davis2016(root: str | os.PathLike, split: str = "val", resolution: str = "480p",
                   storage_options: Mapping[str, Any] | None = None) -> list[EvalVideo]:
    """DAVIS 2016: the frames listed in ``ImageSets/<resolution>/<split>.txt`` (first column,
    ``/JPEGImages/480p/<seq>/<frame>.jpg``), grouped by sequence in the order of the file.

    Raises:
        InputError: missing root or list file, a malformed line (named by number), a listed sequence
            folder or frame that does not exist.
    """
    root = abs_uri(root)
    what = "DAVIS 2016"
    hint = (f"expected <root>/JPEGImages/{resolution}/<seq>/ and <root>/ImageSets/{resolution}/{{train,val}}.txt "
            f"with lines like '/JPEGImages/{resolution}/bear/00000.jpg /Annotations/{resolution}/bear/00000.png'")
    require_kind(root, "directory", storage_options, what, hint)
    listing = join_uri(root, "ImageSets", resolution, f"{split}.txt")
    require_kind(listing, "file", storage_options, what, f"split {split!r} needs this list of frames; {hint}")
    seqs: dict[str, list[str]] = {}
    for i, line in enumerate(read_bytes(listing, storage_options).decode("utf-8", "replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rel = line.split()[0].strip("/")
        parts = rel.split("/")
        if len(parts) < 3 or not is_image(parts[-1]):
            raise InputError(f"{what}: {listing} line {i}: {line!r} does not start with an image path like "
                             f"/JPEGImages/{resolution}/<seq>/00000.jpg")
        seqs.setdefault(parts[-2], []).append(rel)
    if not seqs:
        raise InputError(f"{what}: {listing} lists no frame")
    videos = []
    listed: dict[str, set[str]] = {}  # folder -> file names in it (one listing per folder)
    for name, rels in seqs.items():
        uris = []
        for rel in rels:
            folder = join_uri(root, *rel.split("/")[:-1])
            if folder not in listed:
                got = path_kind(folder, storage_options)
                if got != "directory":
                    raise InputError(f"{what}: sequence {name!r} is listed in {listing} but its frame folder "
                                     f"{folder} {'is missing' if got is None else 'is a file'}")
                listed[folder] = {n for n, k in list_dir(folder, storage_options) if k == "file"}
            uri = join_uri(root, *rel.split("/"))
            if rel.rsplit("/", 1)[-1] not in listed[folder]:
                raise InputError(f"{what}: frame {uri} listed in {listing} does not exist")
            uris.append(uri)
        folder = join_uri(root, *rels[0].split("/")[:-1])
        videos.append(EvalVideo(_safe_name(name), folder, tuple(uris), DAVIS_FPS, len(uris), "davis2016", split))
    return videos


def read_youtube_vos(root: str | os.PathLike, split: str = "valid",
                     storage_options: Mapping[str, Any] | None = None) -> list[EvalVideo]:
    """YouTube-VOS: every video folder ``<root>/<split>/JPEGImages/<video_id>/``, sorted by id (as text).

    ``split="val"`` reads the ``valid`` folder when there is no ``val`` folder. Frame rate 6 fps (the
    released frames are every 5th frame of 30 fps videos), 30 fps for ``*_all_frames`` splits.

    Raises:
        InputError: missing root, split folder or ``JPEGImages`` folder, no video folder, a video folder
            without images.
    """
    root = abs_uri(root)
    what = "YouTube-VOS"
    hint = "expected <root>/<split>/JPEGImages/<video_id>/00000.jpg (splits: train, valid, test)"
    require_kind(root, "directory", storage_options, what, hint)
    folder_split = split
    if split == "val" and path_kind(join_uri(root, "val"), storage_options) is None:
        folder_split = "valid"
    images = join_uri(root, folder_split, "JPEGImages")
    require_kind(images, "directory", storage_options, what, hint)
    ids = sorted(n for n, k in list_dir(images, storage_options) if k == "directory")
    if not ids:
        raise InputError(f"{what}: {images} holds no video folder; {hint}")
    fps = 30.0 if folder_split.endswith("_all_frames") else YOUTUBE_VOS_FPS
    out = []
    for vid in ids:
        folder = join_uri(images, vid)
        frames = list_image_sequence(folder, storage_options)
        out.append(EvalVideo(_safe_name(vid), folder, tuple(frames), fps, len(frames), "youtube-vos", folder_split))
    return out


def read_video_folder(root: str | os.PathLike, split: str | None = None,
                      storage_options: Mapping[str, Any] | None = None) -> list[EvalVideo]:
    """Every video file under ``root`` (a folder or fsspec prefix), sorted, with the main job's clip ids.

    Frame counts and rates are probed later (:func:`make_clips`). ``split`` is recorded only.

    Raises:
        InputError: the prefix does not exist, is a file, or holds no video.
    """
    from ..distributed.manifest import manifest_from_prefix

    root_s = abs_uri(root)
    rows = manifest_from_prefix(root_s, storage_options=storage_options)
    return [EvalVideo(r.clip_id, r.video_uri, (), 0.0, None, "folder", split) for r in rows]


#: Dataset name -> reader ``(root, split, storage_options) -> list[EvalVideo]``.
DATASETS: dict[str, Callable[..., list[EvalVideo]]] = {
    "davis2017": lambda root, split, so: read_davis2017(root, split, storage_options=so),
    "davis2016": lambda root, split, so: read_davis2016(root, split, storage_options=so),
    "youtube-vos": lambda root, split, so: read_youtube_vos(root, split, storage_options=so),
    "folder": lambda root, split, so: read_video_folder(root, split, storage_options=so),
}


def read_dataset(name: str, root: str | os.PathLike, split: str = "val",
                 storage_options: Mapping[str, Any] | None = None) -> list[EvalVideo]:
    """The videos of ``split`` of dataset ``name`` (one of :data:`DATASETS`) under ``root``."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")
    return DATASETS[name](root, split, storage_options)


# --------------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------------


def _probe_video(video: EvalVideo, storage_options) -> EvalVideo:
    from ..video import probe

    info = probe(video.uri, dict(storage_options or {}) or None)
    if not info.num_frames_exact:
        info = probe(video.uri, dict(storage_options or {}) or None, count_frames=True)
    return dataclasses.replace(video, num_frames=int(info.num_frames), fps=float(info.fps))


def make_clips(videos: Iterable[EvalVideo], clip_len: int | None = 16, mode: str = "first",
               max_clips: int | None = None, storage_options: Mapping[str, Any] | None = None) -> list[EvalClip]:
    """Cut videos into evaluation clips.

    Args:
        videos: from a reader (video files are probed here for their frame count and rate).
        clip_len: frames per clip; ``None`` or ``0``: the whole video is one clip.
        mode: ``"first"``: one clip per video, its first ``clip_len`` frames (fewer when the video is
            shorter); ``"all"``: consecutive non-overlapping clips of exactly ``clip_len`` frames (a
            shorter tail is dropped; a video shorter than ``clip_len`` gives one short clip).
        max_clips: keep only the first N clips (in video order).

    Returns:
        Clips in video order. Clip ids: the video name in ``first`` mode or for whole videos,
        ``<name>-<start:05d>`` in ``all`` mode.

    Raises:
        InputError: bad ``clip_len`` / ``mode`` / ``max_clips``, or a video with no frame.
    """
    if clip_len is not None and (isinstance(clip_len, bool) or int(clip_len) < 0):
        raise InputError(f"clip_len={clip_len!r} must be >= 1 frames, or 0 / None for whole sequences")
    if mode not in ("first", "all"):
        raise InputError(f"clip mode {mode!r}: use 'first' (one clip per video) or 'all' (tile every video)")
    if max_clips is not None and int(max_clips) < 1:
        raise InputError(f"max_clips={max_clips!r} must be >= 1")
    length = int(clip_len) if clip_len else 0
    out: list[EvalClip] = []
    for video in videos:
        if max_clips is not None and len(out) >= max_clips:
            break
        if video.num_frames is None:
            video = _probe_video(video, storage_options)
        n = int(video.num_frames or 0)
        if n < 1:
            raise InputError(f"{video.uri}: no frames")
        if not length or length >= n:
            spans = [(0, n)]
        elif mode == "first":
            spans = [(0, length)]
        else:
            spans = [(s, length) for s in range(0, n - length + 1, length)]
        tiled = mode == "all" and bool(length)
        for start, count in spans:
            cid = f"{video.name}-{start:05d}" if tiled else video.name
            frames = video.frames[start:start + count] if video.frames else None
            out.append(EvalClip(cid, video.dataset, video.split, video.name, video.uri,
                                tuple(frames) if frames is not None else None, start, count, float(video.fps)))
    if max_clips is not None:
        out = out[:int(max_clips)]
    ids = [c.clip_id for c in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(f"two clips share the id(s) {', '.join(dup[:5])}; rename the sequences/videos")
    return out


def load_clip(clip: EvalClip, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """The frames of ``clip``: ``uint8 (num_frames, H, W, 3)`` RGB.

    Raises:
        InputError / VideoError: missing or undecodable frames / video.
    """
    if clip.frame_uris is not None:
        frames = read_images(list(clip.frame_uris), storage_options)
    else:
        from ..video import read_frames

        frames, _ = read_frames(clip.uri, range(clip.start, clip.start + clip.num_frames),
                                dict(storage_options or {}) or None)
    if len(frames) != clip.num_frames:
        raise InputError(f"{clip.uri}: expected {clip.num_frames} frames for clip {clip.clip_id}, got {len(frames)}")
    return frames
