"""Re-create the small test clips of tests/data/ from the source videos in shared/videos/.

Not run by the tests (the sources are not available there); run it by hand after changing a clip:

    .venv/bin/python tests/data/make_test_clips.py [--videos ../shared/videos] [--out tests/data]
    .venv/bin/python tests/data/make_test_clips.py --synthetic-only   # only the synthetic clips (no sources)

The default source folder is ``shared/videos`` next to the repository (``<repo>/../shared/videos``).
Every clip is written with this project's own :func:`m3ddm_ray.video.write_video` (libx264, crf 18,
preset medium, yuv420p), so the output is deterministic for a given PyAV/x264 build. Frames are
decoded with :func:`m3ddm_ray.video.iter_frames` and shrunk with OpenCV's INTER_AREA resize. See
README.md in this folder for what each file is for.
"""

from __future__ import annotations

import argparse
import os
import sys
from fractions import Fraction

import av
import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from m3ddm_ray import video  # noqa: E402

LONG_SIDE = 160


def small_size(width: int, height: int, long_side: int = LONG_SIDE) -> tuple[int, int]:
    """(w, h) with the longer side ``long_side`` and both sides rounded to the nearest even number."""
    scale = long_side / max(width, height)
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def shrink(frames: list[np.ndarray]) -> np.ndarray:
    h0, w0 = frames[0].shape[:2]
    w, h = small_size(w0, h0)
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])


def take(src: str, start: int, count: int) -> tuple[np.ndarray, video.VideoInfo]:
    info = video.probe(src)
    frames = list(video.iter_frames(src, start=start, stop=start + count))
    assert len(frames) == count, (src, len(frames))
    return shrink(frames), info


def sine_m4a(path: str, seconds: float, rate: int = 44100, freq: float = 440.0) -> None:
    """Mono AAC sine tone in an MP4 (.m4a) container."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    with av.open(path, "w", format="mp4") as c:
        s = c.add_stream("aac", rate=rate, layout="mono")
        s.bit_rate = 64000
        for i in range(0, n, 1024):
            f = av.AudioFrame.from_ndarray(x[None, i : i + 1024], format="fltp", layout="mono")
            f.sample_rate = rate
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def rotated_mp4(path: str, frames: np.ndarray, fps: int, ccw_degrees: int) -> None:
    """Write frames as stored, with a display matrix asking players to rotate them."""
    h, w = frames.shape[1:3]
    with av.open(path, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "18", "preset": "medium"}
        s.set_display_rotation(ccw_degrees)  # PyAV: counter-clockwise degrees
        for i, arr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(arr, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def synthetic_frames(count: int, width: int, height: int) -> np.ndarray:
    """Deterministic test pattern: colour gradients plus a bright disc moving 5 px per frame."""
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(count):
        r = (x * 255 // max(width - 1, 1)).astype(np.uint8)
        g = (y * 255 // max(height - 1, 1)).astype(np.uint8)
        b = np.full_like(r, 96)
        img = np.dstack([r, g, b])
        cx, cy, rad = (20 + 5 * t) % max(width, 1), height // 2, max(2, min(width, height) // 6)
        img[(x - cx) ** 2 + (y - cy) ** 2 <= rad * rad] = 240
        frames.append(img)
    return np.stack(frames)


def raw_h264(path: str, frames: np.ndarray, rate: Fraction, pix_fmt: str = "yuv420p",
             pts: list[int] | None = None, time_base: Fraction | None = None) -> None:
    """Write frames with libx264 directly (write_video only takes even sizes and a constant rate).

    ``pts`` (in ``time_base`` units) gives each frame its own presentation time: irregular values make
    a variable-frame-rate file.
    """
    h, w = frames.shape[1:3]
    with av.open(path, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.options = {"crf": "18", "preset": "medium"}
        if time_base is not None:
            s.codec_context.time_base = time_base
        for i, arr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(arr, format="rgb24")
            f.pts = i if pts is None else pts[i]
            if time_base is not None:
                f.time_base = time_base
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def make_synthetic(out) -> None:
    """The synthetic clips (no source video needed): edge cases of the batch job's bad-input tests."""
    # a video of exactly one frame
    raw_h264(out("one_frame.mp4"), synthetic_frames(1, 160, 120), Fraction(15))
    # odd and extreme dimensions: 7 px wide, 4000 px tall (4:4:4 chroma allows an odd width)
    raw_h264(out("tall_7x4000.mp4"), synthetic_frames(3, 7, 4000), Fraction(15), pix_fmt="yuv444p")
    # variable frame rate: 20 frames shown for 33, 100, 50, 33, 200 ms (repeating), millisecond time base
    durations = [33, 100, 50, 33, 200] * 4
    pts = [int(v) for v in np.cumsum([0] + durations[:19])]
    raw_h264(out("vfr_20.mp4"), synthetic_frames(20, 160, 120), Fraction(15), pts=pts, time_base=Fraction(1, 1000))


def packet_ends(path: str) -> list[int]:
    with av.open(path) as c:
        return [p.pos + p.size for p in c.demux(video=0) if p.size]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", default=os.path.join(os.path.dirname(REPO), "shared", "videos"))
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--synthetic-only", action="store_true", help="only the synthetic clips (step 6)")
    args = ap.parse_args()
    src = lambda name: os.path.join(args.videos, name)  # noqa: E731
    out = lambda name: os.path.join(args.out, name)  # noqa: E731
    if args.synthetic_only:
        make_synthetic(out)
        return

    # 1. plain clips, original frame rate (floats snap to 15, 24000/1001, 30000/1001)
    tree, tree_info = take(src("tree.avi"), 0, 60)
    video.write_video(out("tree_60.mp4"), tree, tree_info.fps)
    mega, mega_info = take(src("Megamind.avi"), 0, 20)
    video.write_video(out("megamind_20.mp4"), mega, mega_info.fps)
    box, box_info = take(src("box.mp4"), 0, 24)
    video.write_video(out("box_24.mp4"), box, box_info.fps)

    # 2. audio: a 4/3 s sine tone (AAC) alone, and muxed with 20 Megamind frames at 15 fps (= 4/3 s)
    sine_m4a(out("audio_only.m4a"), 20 / 15)
    mega2, _ = take(src("Megamind.avi"), 100, 20)
    video.write_video(out("with_audio_20.mp4"), mega2, 15, audio_source=out("audio_only.m4a"))

    # 3. rotation: the first 12 frames of tree_60, stored 160x120, displayed rotated 90 deg clockwise
    rotated_mp4(out("rotated_90.mp4"), tree[:12], 15, ccw_degrees=-90)

    # 4. damaged files
    data = open(out("tree_60.mp4"), "rb").read()
    ends = packet_ends(out("tree_60.mp4"))
    # cut in the middle of a packet (the demuxer flags the last packet as incomplete)
    with open(out("tree_60_truncated.mp4"), "wb") as f:
        f.write(data[: ends[30] + (ends[31] - ends[30]) // 2])
    # cut exactly after packet 30: no decoder error, the file just ends before the listed 60 frames
    with open(out("tree_60_cut_at_packet.mp4"), "wb") as f:
        f.write(data[: ends[30]])
    # 600 bytes of the compressed data overwritten with noise; length and index intact
    rng = np.random.default_rng(0)
    bad = bytearray(data)
    mid = ends[30]
    bad[mid : mid + 600] = rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
    with open(out("tree_60_corrupt.mp4"), "wb") as f:
        f.write(bytes(bad))
    # the first 60,000 bytes of Megamind_bugy.avi: 12 whole frames, then a partial one
    with open(src("Megamind_bugy.avi"), "rb") as f:
        head = f.read(60_000)
    with open(out("megamind_bugy_head.avi"), "wb") as f:
        f.write(head)

    # 5. not a video at all
    with open(out("not_a_video.mp4"), "w") as f:
        f.write("This is a text file with an .mp4 name. It is not a video.\n")

    # 6. synthetic edge cases (one frame, 7x4000, variable frame rate)
    make_synthetic(out)

    for name in sorted(os.listdir(args.out)):
        path = out(name)
        if os.path.isfile(path) and not name.endswith((".py", ".md", ".jsonl")):
            print(f"{name:28s} {os.path.getsize(path):8d} bytes")


if __name__ == "__main__":
    main()
