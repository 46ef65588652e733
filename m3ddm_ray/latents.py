"""The latents of one clip: VAE encodes of its canvases and global frames, and the posterior noise.

Production encodes each frame once per clip (:class:`ClipLatents`, noise keyed per frame by
:class:`KeyedPosteriorNoise`, so segments encode exactly as the whole clip does); the official code
re-encodes every window with fresh noise (:class:`PerWindowLatents`, golden parity tests with the
recorded noise). Both give a window ``(z_init, z_cond, z_uncond)`` and the global-frame latents;
:class:`~m3ddm_ray.pipeline.Outpainter` takes either (the encoding seam).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import geometry
from .plan import Window
from .sampling import PosteriorNoise, encode_images


def images_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)`` in ``[-1, 1]`` as ``(x / 255 - 0.5) / 0.5``.

    The result is a permuted (channels-last) view, as in the official code.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().permute(0, 3, 1, 2)
    return (x / 255.0 - 0.5) / 0.5


class KeyedPosteriorNoise:
    """VAE posterior noise keyed by (seed, image kind, frame index): the draw for one image does not
    depend on which other images are encoded, in which order or in which process.

    So a clip split into segments that run on different actors, in any order, encodes every frame
    exactly as the whole-clip run does. Each image's ``(4, h, w)`` draw comes from its own CPU
    generator, seeded with a 63-bit BLAKE2 hash of ``"<seed>:<kind>:<index>"``; float32.
    Kinds used by :class:`ClipLatents`: ``inpainted`` / ``masked`` (frame index), ``global``
    (frame index of the global frame), ``black`` (0).
    """

    def __init__(self, seed: int):
        self.seed = int(seed)

    def key(self, kind: str, index: int) -> int:
        """The generator seed of one image."""
        import hashlib

        digest = hashlib.blake2b(f"{self.seed}:{kind}:{int(index)}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") & ((1 << 63) - 1)

    def for_images(self, kind: str, indices: Sequence[int]) -> PosteriorNoise:
        """A :data:`PosteriorNoise` for one VAE call over the images ``indices`` of ``kind``."""
        ids = [int(i) for i in indices]

        def draw(shape: tuple[int, ...]) -> torch.Tensor:
            if shape[0] != len(ids):
                raise RuntimeError(f"posterior draw for {len(ids)} {kind} images asked for shape {shape}")
            return torch.stack([torch.randn(tuple(shape[1:]), generator=torch.Generator("cpu").manual_seed(
                self.key(kind, i)), dtype=torch.float32) for i in ids])

        return draw


class ClipLatents:
    """Production latents of one clip: every frame's canvases VAE-encoded once, on first use.

    Holds ``(4, h, w)`` float32 latents per frame for the inpainted and masked canvases, the black
    ("unconditional") image latent, and the global-frame latents. Posterior noise is keyed per
    image (:class:`KeyedPosteriorNoise`), or the posterior mean with ``noise=None``: results do not
    depend on how the windows are split into segments or where and in which order they run.

    With ``box`` (a half-open pixel box ``(y0, y1, x0, x1)`` of the canvas, multiples of the VAE
    factor: a tiled run's unit, :func:`m3ddm_ray.tiles.work_units`) only the box's crop of each
    canvas (and a black image of the box's shape) is encoded, and placed into zeros of the whole
    canvas's latent grid: ``(4, S/f, S/f)`` per frame, 0 outside ``box // f``. The VAE's GroupNorm
    layers and its mid-block self-attention see the whole image they are given, so the box's
    latents are not the crop of the whole canvas's latents (no margin makes them so).
    """

    def __init__(self, vae, clip: "PreparedClip", noise: KeyedPosteriorNoise | None, batch_size: int = 16,
                 global_latents: torch.Tensor | None = None, box: tuple[int, int, int, int] | None = None):
        self.vae, self.clip, self.noise, self.batch_size = vae, clip, noise, batch_size
        self.box = None if box is None else tuple(int(v) for v in box)
        self._inpainted: dict[int, torch.Tensor] = {}
        self._masked: dict[int, torch.Tensor] = {}
        self._global = global_latents
        self._black: torch.Tensor | None = None

    def _noise(self, kind: str, ids: Sequence[int]) -> PosteriorNoise | None:
        return None if self.noise is None else self.noise.for_images(kind, ids)

    def _encode(self, images: np.ndarray, kind: str, ids: Sequence[int]) -> torch.Tensor:
        """Encode in VAE calls of exactly ``batch_size`` images (a short last call is padded with
        copies of its last image, whose latents are dropped): CPU and GPU convolution kernels
        round differently for different batch sizes, never for different batch contents, so a
        frame's latent is the same whichever frames share its call -- a segment's encode equals the
        whole clip's."""
        bs = self.batch_size
        out = []
        for i in range(0, len(images), bs):
            chunk, cids = images[i:i + bs], list(ids[i:i + bs])
            n = len(chunk)
            if n < bs:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, axis=0)])
                cids += [cids[-1]] * (bs - n)
            out.append(encode_images(self.vae, images_to_tensor(chunk), self._noise(kind, cids))[:n])
        return self._placed(torch.cat(out).cpu())

    def _crop(self, images: np.ndarray) -> np.ndarray:
        """``images`` ``(N, S, S, 3)`` cut to :attr:`box` (unchanged without one)."""
        if self.box is None:
            return images
        y0, y1, x0, x1 = self.box
        return np.ascontiguousarray(images[:, y0:y1, x0:x1])

    def _placed(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(N, 4, bh, bw)`` of :attr:`box` crops placed into zeros ``(N, 4, S/f, S/f)``."""
        if self.box is None:
            return z
        y0, y1, x0, x1 = self.box
        f = (y1 - y0) // z.shape[-2]
        side = self.clip.geom.canvas_size // f
        out = z.new_zeros(tuple(z.shape[:-2]) + (side, side))
        out[..., y0 // f:y1 // f, x0 // f:x1 // f] = z
        return out

    def global_latents(self, window: Window | None = None) -> torch.Tensor:
        """``(G, 4, h, w)`` latents of the global frames (encoded once per clip)."""
        if self._global is None:
            gf = torch.from_numpy(self.clip.global_frames)
            gids = [int(f) for f in geometry.global_frame_ids(self.clip.num_frames, len(gf))]
            bs = self.batch_size
            self._global = torch.cat([encode_images(self.vae, gf[i:i + bs], self._noise("global", gids[i:i + bs]))
                                      for i in range(0, len(gf), bs)]).cpu()
        return self._global

    def window_latents(self, window: Window) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_init, z_cond, z_uncond)`` each ``(1, 4, F, h, w)`` for the window's frames."""
        todo = sorted({f for f in window.frame_ids if f not in self._inpainted})
        if todo:
            masked, inpainted = self.clip.canvases(self.clip.rows(todo))
            zi = self._encode(self._crop(inpainted), "inpainted", todo)
            zm = self._encode(self._crop(masked), "masked", todo)
            for j, f in enumerate(todo):
                self._inpainted[f], self._masked[f] = zi[j], zm[j]
        if self._black is None:
            s = self.clip.geom.canvas_size
            y0, y1, x0, x1 = self.box or (0, s, 0, s)
            black = torch.full((1, 3, y1 - y0, x1 - x0), -1.0)
            self._black = self._placed(encode_images(self.vae, black, self._noise("black", [0])).cpu())[0]
        stack = lambda d: torch.stack([d[f] for f in window.frame_ids], dim=1)[None]  # noqa: E731
        zu = self._black[:, None].expand(-1, len(window.frame_ids), -1, -1)[None]
        return stack(self._inpainted), stack(self._masked), zu


class PerWindowLatents:
    """The official encoding, for parity tests: every window re-encodes its 16 inpainted canvases,
    16 masked canvases and one black image in a single 33-image VAE call, then the global frames,
    each with its own posterior draw (golden README §5.4-5.5)."""

    def __init__(self, vae, clip: "PreparedClip", noise: PosteriorNoise):
        self.vae, self.clip, self.noise = vae, clip, noise
        self._pending_global: torch.Tensor | None = None

    def window_latents(self, window: Window):
        ids = list(window.frame_ids)
        s = self.clip.geom.canvas_size
        images = torch.cat([images_to_tensor(self.clip.inpainted[ids]), images_to_tensor(self.clip.masked[ids]),
                            torch.full((1, 3, s, s), -1.0)])
        z = encode_images(self.vae, images, self.noise).cpu()
        n = len(ids)
        to5 = lambda t: t.permute(1, 0, 2, 3)[None]  # noqa: E731  (N,4,h,w) -> (1,4,N,h,w)
        self._pending_global = encode_images(self.vae, torch.from_numpy(self.clip.global_frames), self.noise).cpu()
        return to5(z[:n]), to5(z[n:2 * n]), to5(z[2 * n:]).expand(-1, -1, n, -1, -1)

    def global_latents(self, window: Window | None = None) -> torch.Tensor:
        if self._pending_global is None:
            raise RuntimeError("PerWindowLatents: call window_latents(window) first (official call order)")
        return self._pending_global
