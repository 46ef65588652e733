"""The keyframe canvas scratch file (m3ddm_ray.canvas_file): round trips, ranged and mask-only reads."""

from __future__ import annotations

import numpy as np
import pytest

from m3ddm_ray import canvas_file, storage
from m3ddm_ray.canvas_file import CanvasFileWriter, read_canvas_rows

S = 8


def _write(uri: str, n: int, with_masks: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    masked = rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8)
    inpainted = rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8)
    masks = rng.integers(0, 2, (n, S, S), dtype=np.uint8) * 255 if with_masks else None
    with CanvasFileWriter(uri, S, with_masks=with_masks) as w:
        for lo in range(0, n, 3):  # appended in chunks, as the prepare stage streams them
            w.append(masked[lo:lo + 3], inpainted[lo:lo + 3], None if masks is None else masks[lo:lo + 3])
    return masked, inpainted, masks


def test_rows_in_any_order_round_trip_with_and_without_masks(tmp_path):
    rows = [7, 2, 3, 4, 0, 9, 8]
    for with_masks in (False, True):
        uri = str(tmp_path / f"c{int(with_masks)}.u8")
        masked, inpainted, masks = _write(uri, 10, with_masks)
        assert (tmp_path / f"c{int(with_masks)}.u8").stat().st_size == 10 * (7 if with_masks else 6) * S * S
        got = read_canvas_rows(uri, rows, S, with_masks=with_masks)
        np.testing.assert_array_equal(got[0], masked[rows])
        np.testing.assert_array_equal(got[1], inpainted[rows])
        if with_masks:
            np.testing.assert_array_equal(got[2], masks[rows])
            (only,) = read_canvas_rows(uri, rows, S, with_masks=True, masks_only=True)
            assert only.shape == (len(rows), S, S) and only.dtype == np.uint8
            np.testing.assert_array_equal(only, masks[rows])


def test_masks_only_reads_only_the_mask_bytes(tmp_path, monkeypatch):
    uri = str(tmp_path / "c.u8")
    _write(uri, 10, True)
    got: list[int] = []
    real = storage.url_to_fs

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def seek(self, pos):
            return self.f.seek(pos)

        def read(self, n):
            data = self.f.read(n)
            got.append(len(data))
            return data

    def counting_fs(u, so=None):
        fs, path = real(u, so)

        class FS:
            def open(self, p, mode):
                return Counting(fs.open(p, mode))
        return FS(), path

    monkeypatch.setattr(canvas_file.storage, "url_to_fs", counting_fs)
    read_canvas_rows(uri, [1, 2, 3, 6], S, with_masks=True, masks_only=True)
    assert sum(got) == 4 * S * S
    got.clear()
    read_canvas_rows(uri, [1, 2, 3, 6], S, with_masks=True)
    assert sum(got) == 4 * 7 * S * S and len(got) == 2  # two consecutive runs, one read each


def test_bad_reads_name_the_file(tmp_path):
    uri = str(tmp_path / "c.u8")
    _write(uri, 4, False)
    with pytest.raises(RuntimeError, match=r"canvases 3..4 asked, the file holds 4"):
        read_canvas_rows(uri, [3, 4], S)
    with pytest.raises(ValueError, match="masks_only for a canvas file without masks"):
        read_canvas_rows(uri, [0], S, masks_only=True)
    masked_uri = str(tmp_path / "m.u8")
    _write(masked_uri, 4, True)
    with pytest.raises(RuntimeError, match=r"canvases 5..5 asked, the file holds 4"):
        read_canvas_rows(masked_uri, [1, 5], S, with_masks=True, masks_only=True)
