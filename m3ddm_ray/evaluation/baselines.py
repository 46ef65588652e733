"""Non-learned outpainting baselines, run through the same protocol as the model.

Each baseline is a pure numpy / OpenCV function ``(strip, geom) -> canvas``: ``strip`` is the input
clip ``uint8 (T, h, w, 3)`` (the protocol's known region), ``geom`` the
:class:`~m3ddm_ray.geometry.CanvasGeometry` the pipeline plans for it (``MaskCase.geom``), and the
result is ``uint8 (T, S, S, 3)`` canvases, the same thing the diffusion model produces. The strip is
put on the canvas exactly as the pipeline does (:func:`place_on_canvas`, the resize-and-truncate rule
of :func:`geometry.make_canvases`), so :func:`outpaint` can then paste the known pixels back and crop
with the pipeline's own rule (``geometry.paste_back`` + ``geometry.crop_box``): a baseline and the
model differ only in how the border is filled.

* ``replicate``: every border pixel copies the nearest known edge pixel (``np.pad`` mode ``edge``).
* ``reflect``: mirror image of the known rectangle about its edges, edge pixel not repeated
  (``np.pad`` mode ``reflect``, repeated as needed when the border is wider than the rectangle).
* ``blur``: the "blurred background" of vertical videos on TV: the known rectangle scaled to *cover*
  the canvas (centre crop), Gaussian-blurred (sigma ``S / 16`` by default), known rectangle pasted.
* ``telea``: OpenCV's TELEA inpainting of each canvas (radius 5): the pipeline's own diffusion start
  (``PreparedClip.inpainted``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .. import geometry
from ..errors import InputError
from ..quality import check_frames

__all__ = ["METHODS", "BASELINES", "place_on_canvas", "replicate", "reflect", "blur", "telea", "outpaint"]


def place_on_canvas(strip: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    """The strip on a black ``S x S`` canvas, exactly as ``geometry.make_canvases`` places it (float32
    ``cv2.resize`` to ``geom.resized_hw`` when the sizes differ, values truncated to ``uint8``)."""
    import cv2

    strip = _check(strip, geom)
    s = geom.canvas_size
    y0, y1, x0, x1 = geom.known_box
    rh, rw = geom.resized_hw
    out = np.zeros((strip.shape[0], s, s, 3), dtype=np.uint8)
    if strip.shape[1:3] == (rh, rw):
        out[:, y0:y1, x0:x1] = strip
    else:
        for i, f in enumerate(strip):
            out[i, y0:y1, x0:x1] = cv2.resize(f.astype(np.float32), (rw, rh))
    return out


def _check(strip: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    strip = check_frames(strip, "strip")
    if tuple(strip.shape[1:3]) != tuple(geom.source_hw):
        raise InputError(f"strip is {strip.shape[1]}x{strip.shape[2]} (HxW) but the canvas was planned for "
                         f"{geom.source_hw[0]}x{geom.source_hw[1]}")
    return strip


def _known(strip, geom) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    canvas = place_on_canvas(strip, geom)
    y0, y1, x0, x1 = geom.known_box
    return canvas[:, y0:y1, x0:x1], (y0, geom.canvas_size - y1, x0, geom.canvas_size - x1)


def _pad(strip, geom, mode: str) -> np.ndarray:
    known, (top, bottom, left, right) = _known(strip, geom)
    if mode == "reflect" and (known.shape[1] < 2 and (top or bottom) or known.shape[2] < 2 and (left or right)):
        mode = "edge"  # a 1-pixel rectangle has nothing to mirror
    return np.ascontiguousarray(np.pad(known, ((0, 0), (top, bottom), (left, right), (0, 0)), mode=mode))


def replicate(strip: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    """Border filled with the nearest edge pixel of the known rectangle."""
    return _pad(strip, geom, "edge")


def reflect(strip: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    """Border filled with the mirror image of the known rectangle (edge pixel not repeated)."""
    return _pad(strip, geom, "reflect")


def blur(strip: np.ndarray, geom: geometry.CanvasGeometry, sigma: float | None = None) -> np.ndarray:
    """Blurred-background fill: known rectangle scaled to cover the canvas, Gaussian blur, known pasted."""
    import cv2

    known, _ = _known(strip, geom)
    s = geom.canvas_size
    kh, kw = known.shape[1:3]
    scale = max(s / kh, s / kw)
    bh, bw = max(s, int(round(kh * scale))), max(s, int(round(kw * scale)))
    top, left = (bh - s) // 2, (bw - s) // 2
    sig = float(sigma) if sigma is not None else s / 16.0
    y0, y1, x0, x1 = geom.known_box
    out = np.empty((known.shape[0], s, s, 3), dtype=np.uint8)
    for i, k in enumerate(known):
        big = cv2.resize(k, (bw, bh), interpolation=cv2.INTER_LINEAR)[top:top + s, left:left + s]
        out[i] = cv2.GaussianBlur(big, (0, 0), sigmaX=sig, sigmaY=sig, borderType=cv2.BORDER_REFLECT_101)
        out[i, y0:y1, x0:x1] = k
    return out


def telea(strip: np.ndarray, geom: geometry.CanvasGeometry, radius: int = 5) -> np.ndarray:
    """OpenCV TELEA inpainting of the generated region of each canvas."""
    import cv2

    canvas = place_on_canvas(strip, geom)
    if geom.fills_canvas:
        return canvas
    mask = geometry.pixel_mask(geom)
    return np.stack([cv2.inpaint(c, mask, int(radius), cv2.INPAINT_TELEA) for c in canvas])


#: Baseline name -> ``(strip, geom) -> canvas``.
BASELINES: dict[str, Callable[[np.ndarray, geometry.CanvasGeometry], np.ndarray]] = {
    "replicate": replicate, "reflect": reflect, "blur": blur, "telea": telea,
}

#: ``--method`` values: the diffusion model and the baselines.
METHODS = ("m3ddm", *BASELINES)


def outpaint(method: str, strip: np.ndarray, geom: geometry.CanvasGeometry, ratio: geometry.RatioLike) -> np.ndarray:
    """Run baseline ``method`` and finish like the pipeline (known pixels pasted back, ``crop_box`` of
    ``ratio``): ``uint8 (T, h', w', 3)``, what ``finalize_clip`` returns for the model."""
    if method not in BASELINES:
        raise InputError(f"unknown baseline {method!r}; use one of {', '.join(BASELINES)}")
    canvas = BASELINES[method](strip, geom)
    masked = place_on_canvas(strip, geom)
    composite = geometry.paste_back(canvas, masked, geometry.pixel_mask(geom), mode="round")
    y0, y1, x0, x1 = geometry.crop_box(geom, ratio)
    return np.ascontiguousarray(composite[:, y0:y1, x0:x1])
