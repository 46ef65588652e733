"""Synthetic training images of flat colour: fields, gradients, rectangles and smooth fields. No torch.

Photographs and film hold few large flat saturated areas, so a model trained on them alone does not
learn to keep a flat colour (a VAE reconstructs flat green or blue tens of levels off; a UNet paints
texture over a plain background: docs/training.md § The flat-scene check). These images are mixed
into the VAE's frame pool (:func:`m3ddm_ray.training.vae.frame_pool`) and, as the photograph
``synthetic://colour-fields`` seen through the moving crop window of every photo source, into the
UNet's examples (:func:`m3ddm_ray.training.sources.sample_example`).
"""

from __future__ import annotations

import numpy as np

#: ``image_uri`` of the synthetic photograph source: a new :func:`colour_field` per example.
COLOUR_FIELDS_URI = "synthetic://colour-fields"


def colour_fields(n: int, seed: int, canvas_size: int) -> np.ndarray:
    """``uint8 (n, S, S, 3)`` synthetic images of flat colours (the VAE refit's pool), a third of each of
    the first three kinds of :func:`colour_field` (``i % 3``): one
    flat colour; a linear gradient between two colours along a random direction; a flat background
    with one to four flat rectangles of other colours. Colours are uniform in RGB, so saturated ones
    are as common as grey. Deterministic in ``(seed, i)``.
    """
    out = np.empty((n, canvas_size, canvas_size, 3), np.uint8)
    for i in range(n):
        out[i] = colour_field(np.random.default_rng([seed, i]), canvas_size, i % 3)
    return out


#: Kinds of :func:`colour_field`: flat, gradient, rectangles, smooth.
KINDS = 4


def colour_field(rng: np.random.Generator, size: int, kind: int) -> np.ndarray:
    """One ``uint8 (size, size, 3)`` image drawn from ``rng``: ``kind`` 0 a flat colour, 1 a linear
    gradient, 2 a flat background with one to four rectangles, 3 a smooth field (a random colour
    plus two to four low-frequency plane waves, half a period to two across the image, each with its
    own RGB amplitude up to 60 levels: no two alike, so nothing to memorise but the continuation)."""
    c0 = rng.integers(0, 256, 3).astype(np.float64)
    img = np.broadcast_to(c0, (size, size, 3)).copy()
    if kind == 1:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1)
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * xx + np.sin(a) * yy
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        img = c0 + t[..., None] * (rng.integers(0, 256, 3) - c0)
    elif kind == 2:
        for _ in range(int(rng.integers(1, 5))):
            y0, x0 = rng.integers(0, size, 2)
            h, w = rng.integers(size // 8, size // 2 + 1, 2)
            img[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
    elif kind == 3:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
        for _ in range(int(rng.integers(2, 5))):
            a, f, phase = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
            wave = np.cos(2 * np.pi * f * (np.cos(a) * xx + np.sin(a) * yy) + phase)
            img = img + wave[..., None] * rng.uniform(-60, 60, 3)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
