"""The latent grid follows the VAE: SD's 8x VAE (the golden model) and a 4x VAE (3 down blocks) run
the single-process pipeline and the Ray job end to end; the VAE training's known-cell consistency."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from m3ddm_ray import geometry
from m3ddm_ray.errors import InputError
from m3ddm_ray.pipeline import ClipState, OutpaintPipeline, OutpaintSettings
from m3ddm_ray.sampling import SamplerSettings, vae_factor
from m3ddm_ray.training.vae import known_cell_consistency, vae_config
from m3ddm_ray.video import read_frames

from conftest import DATA

SETTINGS = OutpaintSettings(sampler=SamplerSettings(num_inference_steps=2), canvas_size=64)


@pytest.fixture(scope="module")
def vae4_folder(tmp_path_factory):
    """A random 3-block AutoencoderKL (4x downsampling), saved as a diffusers folder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**vae_config((8, 16, 16), norm_num_groups=8, canvas_size=64, mid_block_attention=False))
    folder = tmp_path_factory.mktemp("vae4") / "vae"
    vae.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def vae4(vae4_folder):
    from m3ddm_ray.models.loading import load_vae

    return load_vae(vae4_folder, "fp32", "cpu")


def test_vae_factor_comes_from_the_config(tiny_vae, vae4):
    assert vae_factor(tiny_vae) == 8
    assert vae_factor(vae4) == 4
    with pytest.raises(ValueError, match="block_out_channels"):
        vae_factor(torch.nn.Identity())


def test_latent_side_and_mask_use_the_factor():
    g = geometry.plan_canvas(64, 64, "16:9", canvas_size=64)
    assert (g.latent_side(8), g.latent_side(4)) == (8, 16)
    with pytest.raises(InputError, match="multiple of the VAE's downsampling factor 16"):
        geometry.plan_canvas(64, 64, "16:9", canvas_size=72).latent_side(16)
    m = geometry.pixel_mask(g)
    assert np.array_equal(geometry.latent_mask(m, 4), m[::4, ::4])


def test_a_4x_vae_runs_the_single_process_pipeline_on_a_16x16_latent_grid(tiny_unet, vae4):
    frames, info = read_frames(str(DATA / "with_audio_20.mp4"), range(8))
    pipe = OutpaintPipeline(tiny_unet, vae4, SETTINGS)
    assert pipe.outpainter.latent_factor == 4
    shapes = []
    out, clip, _ = pipe.run_clip(frames, info.fps, "9:16")
    assert out.shape == (8, 64, 36, 3) and out.dtype == np.uint8
    pipe.outpainter.run_windows(clip, clip.plan.windows[:1], ClipState(),
                                on_window=lambda w, x: shapes.append(tuple(x.shape)))
    assert shapes == [(4, len(clip.plan.windows[0].frame_ids), 16, 16)]


def test_known_cell_consistency_counts_known_cells_only():
    clean = torch.randn(2, 4, 4, 4)
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[:, :, :8] = 1  # left half of the canvas is border: latent columns 0, 1
    masked = clean.clone()
    masked[..., :2] += 5.0  # only border cells differ
    assert float(known_cell_consistency(masked, clean, torch.from_numpy(masks))) == 0.0
    masked[..., 2] += 1.0  # one known column of 2 differs by 1 -> mean 0.5 over known cells
    want = 0.5 / float(clean.var(dim=0).mean())
    assert float(known_cell_consistency(masked, clean, torch.from_numpy(masks))) == pytest.approx(want, rel=1e-5)
    # a pattern every image shares, or a rescaling, does not change the number
    pattern = torch.randn(1, 4, 4, 4) * 10
    assert float(known_cell_consistency(masked + pattern, clean + pattern, torch.from_numpy(masks))) == \
        pytest.approx(want, rel=1e-4)
    assert float(known_cell_consistency(3 * masked, 3 * clean, torch.from_numpy(masks))) == pytest.approx(want, rel=1e-4)
    all_border = torch.from_numpy(np.ones((2, 16, 16), np.uint8))
    assert float(known_cell_consistency(masked, clean, all_border)) == 0.0


@pytest.mark.ray
def test_a_4x_vae_runs_the_ray_job_end_to_end(ray_session, tmp_path, vae4_folder):
    from test_ray_job import manifest, tiny_cfg

    from m3ddm_ray.distributed.job import run_job

    uri = manifest(tmp_path, [{"video_uri": str(DATA / "megamind_20.mp4"), "clip_id": "mm"}])
    cfg = tiny_cfg(vae=str(vae4_folder), ratios=["9:16"])
    result = run_job(cfg, uri, str(tmp_path / "out"))
    (row,) = result.table.to_pylist()
    assert row["status"] == "ok", row["error"]
    frames, _ = read_frames(row["output_uri"])
    assert frames.shape == (20, 64, 36, 3)
    assert pq.read_table(result.results_uri).num_rows == 1
