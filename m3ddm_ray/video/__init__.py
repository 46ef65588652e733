"""Video input/output with PyAV (FFmpeg) over fsspec: probe, decode to RGB arrays, encode to H.264 MP4.

Conventions used throughout:

* A *URI* is a local path or any fsspec URL (``file://``, ``memory://``, ``s3://``, ...);
  ``storage_options`` is passed to the fsspec filesystem unchanged.
* A *frame* is a ``numpy.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB, C-contiguous, in
  *display orientation*: when the container carries a rotation (display matrix or legacy ``rotate``
  tag) decoded frames are rotated accordingly, and ``H, W`` are the display height and width.
  Non-square pixels (sample aspect ratio) are not corrected.
* *Frame index* ``i`` is the ``i``-th frame the decoder outputs, in presentation order, counting from
  0. Frames are not resampled onto a constant-rate grid: a stream with dropped or variable-duration
  frames yields fewer frames than ``duration_s * fps`` (``tree.avi`` of the project's sample set stores
  444 frame slots at 15 fps but only 68 coded frames; it decodes to 68 frames).
* Times are in seconds, rates in frames per second.

Error policy: every failure a user can cause is raised as :class:`~m3ddm_ray.errors.VideoError`
(``uri`` + ``reason``) or, for bad arguments, :class:`~m3ddm_ray.errors.InputError`; raw PyAV/FFmpeg
exceptions never escape (they are kept as ``__cause__`` for debugging).

Damaged input policy (strict): the read fails with a ``VideoError`` naming the index of the first
frame that could not be produced, never silently returns fewer frames, when

* the demuxer flags a packet as incomplete or corrupt (a file cut in the middle of a packet),
* the decoder or demuxer reports an error part-way (garbage in the compressed data),
* an MP4/MOV whose index is trusted (see :class:`VideoInfo`) ends before all listed frames.

The frames handed out by :func:`iter_frames` before the error are good and in order (the decoder is
not drained after a break, because frames it still holds may belong further ahead). How many come
out before the break depends on the decoder's reorder and threading delay. Limits: damage the decoder
conceals by itself (painted-over macroblocks) is not detected; an AVI cut exactly at a packet boundary
just ends early (AVI headers also count dropped-frame slots, so their frame count cannot be checked).

Encoding uses the first H.264 encoder that opens, in the order :data:`H264_ENCODERS` (``libx264``,
which the PyAV wheels from PyPI bundle; then ``libopenh264``, which has no CRF mode and is driven by a
bit rate instead).

Layout (one job per module; everything public is re-exported here, import from ``m3ddm_ray.video``):

* :mod:`.source` -- :class:`VideoInfo`, opening a container over fsspec, the strict sequential decoder;
* :mod:`.probing` -- :func:`probe`, :func:`count_frames`;
* :mod:`.readers` -- :func:`iter_frames`, :func:`read_frames` (random and whole reads);
* :mod:`.spans` -- :func:`read_span`: one span of frames by seeking to a recorded key frame;
* :mod:`.images` -- frame folders (image sequences) read like videos;
* :mod:`.masks` -- mask sources (per-frame mask folders, one mask image, a mask video) for inpainting;
* :mod:`.encode` -- :func:`write_video`, encoder discovery, :func:`fps_to_fraction`;
* :mod:`.audio` -- copying / re-encoding the source's audio into the output (remux);
* :mod:`.concat` -- :func:`concat_videos`, joining encoded pieces losslessly (packet remux), and
  :func:`remux_video` (a passthrough output as a copy of the source's packets).
"""

from .concat import REMUX_CODECS, concat_videos, remux_video

from .encode import H264_ENCODERS, X264_PRESETS, fps_to_fraction, h264_encoder, write_video
from .images import (
    DEFAULT_FPS,
    IMAGE_EXTENSIONS,
    image_sequence_info,
    is_image_sequence,
    iter_image_sequence,
    list_image_sequence,
    read_image_sequence,
    read_images,
)
from .masks import LOSSY_THRESHOLD, MaskSource, decode_mask_image, open_masks, read_masks
from .probing import count_frames, probe
from .readers import iter_frames, read_frames
from .source import VideoInfo
from .spans import FrameIndex, SeekPoint, read_image_span, read_span

__all__ = [
    "VideoInfo",
    "probe",
    "iter_frames",
    "read_frames",
    "FrameIndex",
    "SeekPoint",
    "read_span",
    "read_image_span",
    "count_frames",
    "write_video",
    "concat_videos",
    "remux_video",
    "REMUX_CODECS",
    "fps_to_fraction",
    "h264_encoder",
    "H264_ENCODERS",
    "X264_PRESETS",
    "IMAGE_EXTENSIONS",
    "DEFAULT_FPS",
    "is_image_sequence",
    "list_image_sequence",
    "read_images",
    "read_image_sequence",
    "iter_image_sequence",
    "image_sequence_info",
    "read_masks",
    "open_masks",
    "MaskSource",
    "decode_mask_image",
    "LOSSY_THRESHOLD",
]
