"""The model diagnostics (m3ddm_ray/training/diagnostics.py): hand-checkable rules (x0 from ε, the
known/border split, the benchmark's horizontal mask, an identity "VAE"), the measured latent factor of
an 8x and a 4x VAE, and the four diagnostics on the golden tiny model with tiny counts."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from m3ddm_ray.errors import InputError
from m3ddm_ray.evaluation.protocols import BenchmarkProtocol
from m3ddm_ray.sampling import VAE_SCALE
from m3ddm_ray.training import diagnostics as dg
from m3ddm_ray.training.colour_source import COLOUR_PAIRS, colour_source
from m3ddm_ray.training.objective import make_noise_scheduler

HELDOUT = Path(__file__).resolve().parent / "data" / "heldout"


class IdentityVAE:
    """``encode`` / ``decode`` that leave images unchanged: latents (× 0.18215) are the ``[-1, 1]`` pixels."""

    device, dtype = torch.device("cpu"), torch.float32

    def encode(self, x):
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=x / VAE_SCALE))

    def decode(self, z):
        return SimpleNamespace(sample=z * VAE_SCALE)


def test_x0_from_eps_round_trip_and_known_error():
    sched = make_noise_scheduler()
    acp = sched.alphas_cumprod
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn((3, 4, 16, 8, 8), generator=gen)
    eps = torch.randn(z0.shape, generator=gen)
    t = torch.tensor([0, 500, 999])
    x_t = sched.add_noise(z0, eps, t)
    assert torch.allclose(dg.x0_from_eps(x_t, eps, t, acp), z0, atol=5e-5)
    # an ε off by 0.1 everywhere moves x0 by 0.1 sqrt(1 - ᾱ) / sqrt(ᾱ): squared error 0.01 (1 - ᾱ) / ᾱ
    err = ((dg.x0_from_eps(x_t, eps + 0.1, t, acp) - z0) ** 2).mean(dim=(1, 2, 3, 4))
    ab = acp[t].double()
    assert torch.allclose(err.double(), 0.01 * (1 - ab) / ab, rtol=1e-3)


@pytest.mark.parametrize("ratio, known_cols", [(0.25, 6), (0.66, 3)])
def test_horizontal_mask_and_cell_split(ratio, known_cols):
    draw = dg.mask_policy(str(ratio))(np.random.default_rng(0), 16, 64)
    case = {c.mask_ratio: c for c in BenchmarkProtocol(size=64).cases(64)}[ratio]
    assert draw.mask.shape == (16, 64, 64) and not draw.raw_frames.any()
    assert all(np.array_equal(m, case.mask()) for m in draw.mask)  # the benchmark's own mask
    known, border = dg.cell_regions(draw.mask, 8)
    assert known.shape == border.shape == (16, 8, 8)
    assert not (known & border).any() and (known | border).all()  # a partition of the cells
    # 0.25 keeps columns 8..55 (cells 1..6), 0.66 keeps 21..42 (top-left pixels 24, 32, 40: cells 3..5)
    assert known[0].sum() == 8 * known_cols and known.sum(axis=(1, 2)).tolist() == [8 * known_cols] * 16
    k4, b4 = dg.cell_regions(draw.mask, 4)
    assert k4.shape == (16, 16, 16) and not (k4 & b4).any() and (k4 | b4).all()


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="mask_ratio"):
        dg.mask_policy("1.5")
    with pytest.raises(InputError, match="mask policy 'nope'"):
        dg.mask_policy("nope")
    with pytest.raises(InputError, match="timestep 1000"):
        dg.condition_diagnostics(None, None, [{}], (1000,), ())
    with pytest.raises(InputError, match="must be uint8"):
        dg.vae_ceiling(IdentityVAE(), [("x", np.zeros((2, 16, 8, 3), np.uint8))])


def test_identity_vae_ceiling_is_infinite_and_known_cells_exact():
    clips = dg.heldout_clips(HELDOUT, 16, clip_len=4, max_clips=2)
    assert [c[1].shape for c in clips] == [(4, 16, 16, 3)] * 2
    vae = IdentityVAE()
    assert dg.latent_factor(vae, 16) == 1
    ceil = dg.vae_ceiling(vae, clips)
    for label in ("0.25", "0.66"):
        assert ceil[label]["vae"] == math.inf
        assert all(math.isfinite(ceil[label][m]) for m in dg.FILLERS)
    fid = dg.condition_fidelity(vae, clips)
    assert fid["latent_factor"] == 1
    assert fid["0.25"]["known_mse"] == 0.0 and fid["0.66"]["relative"] == 0.0
    assert fid["0.25"]["known_cells_per_frame"] == 16 * 12  # 0.25 of 16 columns: 2 generated on each side


def test_flat_colour_error_with_latent_noise_measures_how_far_a_latent_error_moves_the_colour():
    """Identity "VAE": the ceiling is exact; noise of std σ in scaled-latent units is σ in [-1, 1]
    pixels, i.e. a mean absolute error of 127.5 σ sqrt(2 / π) levels on a mid grey; seeded."""
    vae, grey = IdentityVAE(), [(128, 128, 128)]
    assert dg.flat_colour_error(vae, grey, 64) == [0.0]
    err = dg.flat_colour_error(vae, grey, 64, latent_noise=0.1, seed=3)[0]
    assert err == pytest.approx(127.5 * 0.1 * math.sqrt(2 / math.pi), rel=0.03)
    assert dg.flat_colour_error(vae, grey, 64, latent_noise=0.1, seed=3)[0] == err
    assert dg.flat_colour_error(vae, grey, 64, latent_noise=0.2, seed=3)[0] == pytest.approx(2 * err, rel=0.03)


def test_latent_factor_is_measured(tiny_vae):
    from diffusers import AutoencoderKL

    assert dg.latent_factor(tiny_vae, 64) == 8
    torch.manual_seed(0)
    vae4 = AutoencoderKL(block_out_channels=(8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, norm_num_groups=8,
                         latent_channels=4).eval()
    assert dg.latent_factor(vae4, 64) == 4
    clips = [("noise", np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))]
    fid = dg.condition_fidelity(vae4, clips)
    # 0.25 keeps columns 8..55: 4x cells 2..13 (12 of 16 columns, 16 rows)
    assert fid["latent_factor"] == 4 and fid["0.25"]["known_cells_per_frame"] == 16 * 12
    with pytest.raises(InputError, match="canvas 66"):
        dg.latent_factor(vae4, 66)


def test_diagnostics_on_golden_tiny_model(tiny_unet, tiny_vae):
    torch.set_num_threads(1)
    sources = dg.heldout_sources(HELDOUT)
    examples = dg.heldout_examples(sources, 2, 64, dg.mask_policy("m3ddm_plus"), seed=3)
    again = dg.heldout_examples(sources, 2, 64, dg.mask_policy("m3ddm_plus"), seed=3)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(examples, again) for k in a)  # seeded
    out = dg.condition_diagnostics(tiny_unet, tiny_vae, examples, position_timesteps=(100, 500), batch_size=2)
    pos = out["eps_per_position"]
    assert set(pos["per_t"]) == {"100", "500"} and len(pos["mean"]) == 16
    assert np.isfinite(pos["mean"]).all() and min(pos["mean"]) > 0
    x0 = out["x0"]
    assert x0["variants"] == ["full", "no_cond", "no_global", "neither"] and x0["regions"] == ["known", "border"]
    for v in x0["variants"]:
        for r in x0["regions"]:
            assert list(x0["mse"][v][r]) == ["500", "700", "900"]
            assert all(np.isfinite(list(x0["mse"][v][r].values())))
            for t, m in x0["mse"][v][r].items():
                assert x0["ratio_to_full"][v][r][t] == pytest.approx(m / x0["mse"]["full"][r][t])
    assert all(x == 1.0 for r in x0["regions"] for x in x0["ratio_to_full"]["full"][r].values())
    assert x0["mse"]["no_cond"]["known"]["500"] != x0["mse"]["full"]["known"]["500"]
    masks = np.stack([e["mask"] for e in examples])
    assert out["cells"]["border"] == int(masks[..., ::8, ::8].sum())
    assert out["cells"]["known"] + out["cells"]["border"] == 2 * 16 * 8 * 8 and out["latent_factor"] == 8
    again = dg.condition_diagnostics(tiny_unet, tiny_vae, examples, (100,), (), batch_size=1)
    assert np.allclose(again["eps_per_position"]["per_t"]["100"], pos["per_t"]["100"], rtol=1e-4)  # batch-free

    clips = dg.heldout_clips(HELDOUT, 64, clip_len=4, max_clips=1)
    ceil = dg.vae_ceiling(tiny_vae, clips)
    assert ceil["clips"] == 1 and math.isfinite(ceil["vae_whole_frame"])
    for label in ("0.25", "0.66"):
        assert set(ceil[label]) == {"vae", *dg.FILLERS, "best_filler", "vae_minus_best_filler"}
        best = ceil[label]["best_filler"]
        assert ceil[label]["vae_minus_best_filler"] == pytest.approx(ceil[label]["vae"] - ceil[label][best])
    fid = dg.condition_fidelity(tiny_vae, clips)
    assert fid["0.25"]["relative"] == pytest.approx(fid["0.25"]["known_mse"] / fid["0.25"]["clean_var"])
    assert fid["0.25"]["known_cells_per_frame"] == 48 and fid["0.66"]["known_cells_per_frame"] == 24


class CopyUNet(torch.nn.Module):
    """A stand-in UNet whose ε̂ makes the predicted x0 equal ``pick(x_t, condition)``."""

    def __init__(self, pick):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))  # gives the module a device
        self.pick = pick
        self.acp = make_noise_scheduler().alphas_cumprod

    def forward(self, sample, t, encoder_hidden_states=None, fps=None):
        c = (sample.shape[1] - 1) // 2
        x_t, cond = sample[:, :c], sample[:, c:2 * c]
        ab = self.acp[t].view(-1, 1, 1, 1, 1)
        return SimpleNamespace(sample=(x_t - ab.sqrt() * self.pick(x_t, cond)) / (1 - ab).sqrt())


def test_colour_source_shares_are_one_for_the_condition_and_zero_for_the_noise():
    a, b = (200, 40, 90), (30, 120, 160)
    flat = lambda rgb: torch.tensor([v / 127.5 - 1 for v in rgb]).view(1, 3, 1, 1, 1)  # noqa: E731
    band = lambda x_t, cond: cond[..., 22:42, :].mean(dim=(2, 3, 4), keepdim=True).expand_as(x_t)  # noqa: E731
    cases = {"condition": (band, 1.0), "noise": (lambda x_t, cond: flat(b).expand_as(x_t), 0.0),
             "halfway": (lambda x_t, cond: 0.5 * band(x_t, cond) + 0.5 * flat(b).expand_as(x_t), 0.5)}
    for name, (pick, share) in cases.items():
        rows = colour_source(CopyUNet(pick), IdentityVAE(), [(a, b)], timesteps=(999, 500), seeds=2, frames=2)
        assert [(r["condition"], r["noisy"], r["t"]) for r in rows] == [([200, 40, 90], [30, 120, 160], 999),
                                                                       ([200, 40, 90], [30, 120, 160], 500)], name
        for r in rows:
            assert r["known"] == pytest.approx(share, abs=1e-4) and r["border"] == pytest.approx(share, abs=1e-4), name
            assert r["known_std"] < 1e-4 and r["border_std"] < 1e-4


def test_colour_source_on_golden_tiny_model_and_bad_inputs(tiny_unet, tiny_vae):
    torch.set_num_threads(1)
    rows = colour_source(tiny_unet, tiny_vae, timesteps=(901,), seeds=2)
    assert len(rows) == len(COLOUR_PAIRS)
    assert all(np.isfinite([r[k] for k in ("known", "border", "known_std", "border_std")]).all() for r in rows)
    assert rows == colour_source(tiny_unet, tiny_vae, timesteps=(901,), seeds=2)  # seeded
    with pytest.raises(InputError, match="known_rows"):
        colour_source(tiny_unet, tiny_vae, known_rows=(0, 64))
    with pytest.raises(InputError, match="timesteps"):
        colour_source(tiny_unet, tiny_vae, timesteps=(1000,))
    with pytest.raises(InputError, match="pick two colours that differ"):
        colour_source(tiny_unet, tiny_vae, pairs=[((9, 9, 9), (9, 9, 9))], timesteps=(500,), seeds=1)
