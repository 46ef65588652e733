"""Refitting a VAE with fewer GroupNorm groups (m3ddm_ray.training.vae.refit_vae, `m3ddm-ray refit-vae`)
and the flat-colour fields it trains on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m3ddm_ray.errors import InputError
from m3ddm_ray.models.loading import load_vae
from m3ddm_ray.training.sources import Source, read_sources, sample_example, synthetic_photo
from m3ddm_ray.training.synthetic import COLOUR_FIELDS_URI, colour_fields
from m3ddm_ray.training.vae import refit_vae

DATA = Path(__file__).parent / "data"
VAE = DATA / "trained" / "vae"
MANIFEST = DATA / "train_manifest.jsonl"


def test_colour_fields_are_flat_gradients_and_rectangles_deterministically():
    a, b = colour_fields(9, 5, 32), colour_fields(9, 5, 32)
    assert a.shape == (9, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, colour_fields(9, 6, 32))
    for i in range(0, 9, 3):  # one flat colour
        assert len(np.unique(a[i].reshape(-1, 3), axis=0)) == 1
    for i in range(1, 9, 3):  # a gradient: many colours, every pixel between the two end colours
        assert len(np.unique(a[i].reshape(-1, 3), axis=0)) > 8
    for i in range(2, 9, 3):  # a flat background and rectangles: a few colours, one of them dominant or not
        assert 2 <= len(np.unique(a[i].reshape(-1, 3), axis=0)) <= 5


def test_smooth_colour_fields_vary_slowly_and_never_repeat():
    from m3ddm_ray.training.synthetic import KINDS, colour_field

    a, b = (colour_field(np.random.default_rng(s), 64, 3) for s in (1, 2))
    assert KINDS == 4 and a.shape == (64, 64, 3) and a.dtype == np.uint8 and not np.array_equal(a, b)
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 50  # a field, not a few flat colours
    step = np.abs(np.diff(a.astype(int), axis=0)).max(), np.abs(np.diff(a.astype(int), axis=1)).max()
    assert max(step) <= 30  # at most two periods across the image: neighbouring pixels stay close


def test_the_synthetic_photo_source_gives_flat_colour_examples(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"image_uri": "synthetic://colour-fields"}\n{"image_uri": "skimage://coffee.png"}\n')
    assert read_sources(m)[0] == Source("photo", COLOUR_FIELDS_URI)
    # one photograph per example seed, 256 px, from the three kinds
    kinds = {len(np.unique(synthetic_photo(s).reshape(-1, 3), axis=0)) > 1 for s in range(12)}
    assert synthetic_photo(3).shape == (256, 256, 3) and kinds == {False, True}
    assert np.array_equal(synthetic_photo(3), synthetic_photo(3))
    flat = next(s for s in range(50) if len(np.unique(synthetic_photo(s).reshape(-1, 3), axis=0)) == 1)
    e = sample_example(Source("photo", COLOUR_FIELDS_URI), flat)
    assert e["frames"].shape == (16, 64, 64, 3)  # a flat photograph stays flat through the moving window
    assert np.array_equal(e["frames"].reshape(-1, 3).min(0), e["frames"].reshape(-1, 3).max(0))
    m.write_text('{"image_uri": "synthetic://noise"}\n')
    with pytest.raises(InputError, match="the one synthetic source is 'synthetic://colour-fields'"):
        read_sources(m)


def test_refit_changes_the_grouping_only_and_keeps_the_old_vae():
    old = load_vae(str(VAE), "fp32", "cpu")
    before = {k: v.clone() for k, v in old.state_dict().items()}
    rows = []
    groups = 8 if old.config.norm_num_groups != 8 else 4  # another grouping than the shipped VAE's
    new = refit_vae(old, read_sources(str(MANIFEST)), groups, steps=2, batch_size=2, pool_size=4, log=rows.append)
    assert new.config.norm_num_groups == groups and old.config.norm_num_groups != groups
    assert {k: v for k, v in new.config.items() if not k.startswith("_") and k != "norm_num_groups"} == \
        {k: v for k, v in old.config.items() if not k.startswith("_") and k != "norm_num_groups"}
    assert all(torch.equal(before[k], v) for k, v in old.state_dict().items())  # the old VAE is not modified
    assert set(new.state_dict()) == set(before) and not new.training
    assert [r["vae_step"] for r in rows] == [0, 1] and all(np.isfinite(r["vae_latent"]) for r in rows)


def test_refit_names_a_grouping_that_does_not_divide_the_channels():
    old = load_vae(str(VAE), "fp32", "cpu")
    with pytest.raises(InputError, match="norm_num_groups=3 must divide every block_out_channels"):
        refit_vae(old, [], 3, steps=1)


def test_refit_vae_command_writes_a_loadable_vae(tmp_path, capsys):
    from m3ddm_ray.cli import main

    out = tmp_path / "vae"
    assert main(["refit-vae", "--vae", str(VAE), "--data", str(MANIFEST), "--output", str(out), "--steps", "1",
                 "--batch-size", "2", "--pool-size", "4", "--norm-groups", "8"]) == 0
    assert '"norm_num_groups": 8' in capsys.readouterr().out
    vae = load_vae(str(out), "fp32", "cpu")
    assert vae.config.norm_num_groups == 8
    x = torch.zeros(1, 3, 64, 64)
    assert vae.decode(vae.encode(x).latent_dist.mean).sample.shape == (1, 3, 64, 64)


def test_refit_with_the_consistency_term_pulls_masked_canvases_to_the_clean_latents():
    """With ``consistency_weight`` the known cells of black-bordered canvases are pulled to the old
    VAE's clean latents: the logged term is finite and falls over a few steps on a tiny pool. (From the
    golden random VAE: the shipped one was refit with this term, so it starts near its floor.)"""
    old = load_vae(str(DATA / "golden" / "models" / "vae"), "fp32", "cpu")
    rows = []
    refit_vae(old, read_sources(str(MANIFEST)), 4, steps=30, batch_size=4, pool_size=4, lr=2e-3,
              consistency_weight=1.0, log=rows.append)
    cons = [r["vae_consistency"] for r in rows]
    assert [r["vae_step"] for r in rows] == [0, 29] and all(np.isfinite(cons))
    assert cons[1] < 0.7 * cons[0]
    rows.clear()
    refit_vae(old, read_sources(str(MANIFEST)), 4, steps=1, batch_size=2, pool_size=4, log=rows.append)
    assert np.isnan(rows[0]["vae_consistency"])  # off by default


def test_a_decoder_only_refit_keeps_every_encoder_weight_and_the_latent_cache_key():
    """``decoder_only``: the encoder side is the old VAE's bit for bit (so are its latents and the
    latent cache's key), the decoder side moves; it refuses another grouping or a consistency term."""
    from m3ddm_ray.training.latent_cache import vae_fingerprint

    old = load_vae(str(VAE), "fp32", "cpu")
    groups = int(old.config.norm_num_groups)
    new = refit_vae(old, read_sources(str(MANIFEST)), groups, steps=3, batch_size=2, pool_size=4, lr=1e-2,
                    decoder_only=True)
    before, after = old.state_dict(), new.state_dict()
    enc = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    dec = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert enc and dec and len(enc) + len(dec) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in dec)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(old.encode(x).latent_dist.mean, new.encode(x).latent_dist.mean)
    assert vae_fingerprint(new) == vae_fingerprint(old)
    with pytest.raises(InputError, match="decoder_only keeps the encoder"):
        refit_vae(old, [], 4 if groups != 4 else 2, steps=1, decoder_only=True)
    with pytest.raises(InputError, match="consistency_weight=1.0 must be 0"):
        refit_vae(old, [], groups, steps=1, decoder_only=True, consistency_weight=1.0)


def test_perturbed_latents_have_a_per_image_noise_std_uniform_up_to_sigma_max(monkeypatch):
    """``latent_noise``: each image's decoder input gets noise of one std drawn uniformly in
    ``[0, σ_max]`` scaled-latent units (``σ_max / scaling_factor`` raw); 0 returns the latents unchanged,
    a negative value is refused, and the refit passes its ``latent_noise`` to every step."""
    import m3ddm_ray.training.vae as vae_mod
    from m3ddm_ray.training.vae import perturb_latents

    z = torch.randn(400, 4, 8, 8)
    assert perturb_latents(z, 0.0, 0.18215) is z
    gen = torch.Generator().manual_seed(0)
    noisy = perturb_latents(z, 0.5, 0.18215, gen)
    std = ((noisy - z) * 0.18215).flatten(1).std(dim=1)  # per image, scaled units
    assert float(std.max()) < 0.5 * 1.1 and float(std.min()) < 0.05
    assert abs(float(std.mean()) - 0.25) < 0.03  # uniform on [0, 0.5]: mean 0.25
    assert torch.equal(noisy, perturb_latents(z, 0.5, 0.18215, torch.Generator().manual_seed(0)))
    seen = []
    monkeypatch.setattr(vae_mod, "perturb_latents", lambda z, s, k, g: seen.append((s, k)) or z)
    old = load_vae(str(VAE), "fp32", "cpu")
    refit_vae(old, read_sources(str(MANIFEST)), int(old.config.norm_num_groups), steps=2, batch_size=2, pool_size=4,
              decoder_only=True, latent_noise=0.3)
    assert seen == [(0.3, float(old.config.scaling_factor))] * 2
    with pytest.raises(InputError, match="latent_noise=-0.1 must be >= 0"):
        refit_vae(old, [], int(old.config.norm_num_groups), steps=1, latent_noise=-0.1)
