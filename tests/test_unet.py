"""The M3DDM UNet: strict load of the golden checkpoint, forward parity, released-config layout."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from m3ddm_ray.errors import ModelLoadError
from m3ddm_ray.models.loading import load_unet, make_tiny_models, read_state_dict, unet_from_config
from m3ddm_ray.models.unet import UNet3DConditionModel

from conftest import GOLDEN

UNET_DIR = GOLDEN / "models" / "unet"


def _golden_forward():
    return {k: torch.from_numpy(v) for k, v in np.load(GOLDEN / "unet_forward.npz").items()}


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_strict_load_of_each_checkpoint_format(tmp_path, fmt):
    folder = tmp_path / "unet"
    folder.mkdir()
    shutil.copy(UNET_DIR / "config.json", folder)
    shutil.copy(UNET_DIR / f"diffusion_pytorch_model.{fmt}", folder)
    model = load_unet(folder, "fp32", "cpu")
    state, path = read_state_dict(folder)
    assert path.suffix == f".{fmt}"
    loaded = model.state_dict()
    assert set(loaded) == set(state) and len(state) == 594
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == 1_748_408


def test_forward_parity_four_branch_and_single_branch(tiny_unet):
    g = _golden_forward()
    ehs = g["c4_encoder_hidden_states"]
    zeros = torch.zeros_like(ehs)
    with torch.no_grad():
        out4 = tiny_unet(g["c4_sample"], g["c4_timestep"], torch.cat([zeros, zeros, ehs, ehs]), fps=24.0).sample
        out1 = tiny_unet(g["c1_sample"], g["c1_timestep"], ehs, fps=24.0).sample
        tokens = tiny_unet.global_img_encoder(torch.cat([zeros, zeros, ehs, ehs]))
    assert out4.shape == (4, 4, 16, 8, 8) and out1.shape == (1, 4, 16, 8, 8)
    assert (out4 - g["c4_out"]).abs().max() <= 1e-4
    assert (out1 - g["c1_out"]).abs().max() <= 1e-4
    assert (tokens - g["c4_global_tokens"]).abs().max() <= 1e-5


def test_precomputed_global_tokens_equal_latent_path(tiny_unet):
    g = _golden_forward()
    ehs = g["c1_encoder_hidden_states"]
    tokens = tiny_unet.encode_global_frames(ehs, batch=1)
    assert tokens.shape == (1, 16 * 2 * 2, 320)  # (ceil(8/2) - 2)^2 = 4 tokens per global frame
    with torch.no_grad():
        a = tiny_unet(g["c1_sample"], 961, ehs, fps=24).sample
        b = tiny_unet(g["c1_sample"], 961, fps=24, global_tokens=tokens).sample
    assert torch.equal(a, b)


def test_released_config_on_meta_matches_checkpoint_layout():
    config = json.loads((GOLDEN / "full_config.json").read_text())
    with torch.device("meta"):
        model = unet_from_config(config)
    expected = {}
    for line in (GOLDEN / "full_model_keys.txt").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        expected[key] = (shape, dtype)
    state = model.state_dict()
    mine = {k: (str(tuple(v.shape)), str(v.dtype)) for k, v in state.items()}
    assert len(expected) == 1516
    assert mine == expected
    params = sum(p.numel() for p in model.parameters())
    running_stats = sum(v.numel() for k, v in state.items() if k.endswith(("running_mean", "running_var")))
    # 1,299,281,304 counts every float tensor of the checkpoint (parameters + BatchNorm running stats)
    assert params + running_stats == 1_299_281_304
    assert params == 1_299_279_320
    # 256 canvas -> 32x32 latents -> 14x14 tokens per global frame -> 3136 context tokens for 16 frames
    enc = model.global_img_encoder
    assert enc(torch.empty(16, 4, 32, 32, device="meta")).shape == (16, 320, 14, 14)


def test_latent_side_not_multiple_of_upsampling_factor(tiny_unet):
    # 10x6 latents (80x48 canvas): upsampling must follow the skip sizes, not a fixed 2x
    x = torch.randn(1, 9, 4, 10, 6)
    ehs = torch.randn(16, 4, 10, 6)
    with torch.no_grad():
        out = tiny_unet(x, 500, ehs, fps=5).sample
    assert out.shape == (1, 4, 4, 10, 6)


def test_tiny_model_factory_is_deterministic():
    a, _ = make_tiny_models(seed=3)
    b, _ = make_tiny_models(seed=3)
    c, _ = make_tiny_models(seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert isinstance(a, UNet3DConditionModel)


# ----------------------------------------------------------------------------- loading errors
def test_error_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match=rf"{tmp_path}.*no config.json"):
        load_unet(tmp_path, "fp32", "cpu")


def test_error_config_of_another_class(tmp_path):
    shutil.copy(GOLDEN / "models" / "vae" / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match=r"config.json.*AutoencoderKL.*expected 'UNet3DConditionModel'"):
        load_unet(tmp_path, "fp32", "cpu")


def test_error_missing_and_unexpected_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    shutil.copy(UNET_DIR / "config.json", tmp_path)
    state = load_file(str(UNET_DIR / "diffusion_pytorch_model.safetensors"))
    state.pop("conv_in.weight")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"safetensors.*1 missing keys.*conv_in.weight.*1 unexpected keys.*extra.weight"):
        load_unet(tmp_path, "fp32", "cpu")


def test_error_no_weights(tmp_path):
    shutil.copy(UNET_DIR / "config.json", tmp_path)
    with pytest.raises(ModelLoadError, match=r"no weights"):
        load_unet(tmp_path, "fp32", "cpu")


def test_bin_with_pickled_objects_is_refused(tmp_path):
    shutil.copy(UNET_DIR / "config.json", tmp_path)
    torch.save({"conv_in.weight": torch.zeros(1), "evil": object()}, tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"cannot read the checkpoint.*only tensors"):
        load_unet(tmp_path, "fp32", "cpu")


def test_error_hub_id_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(ModelLoadError, match=r"alimama-creative/M3DDM-Video-Outpainting.*local folder"):
        load_unet("alimama-creative/M3DDM-Video-Outpainting", "fp32", "cpu")


def test_error_nonexistent_local_path():
    with pytest.raises(ModelLoadError, match=r"no such folder"):
        load_unet("./does/not/exist", "fp32", "cpu")


def test_load_from_fsspec_url(tmp_path, monkeypatch):
    import fsspec

    monkeypatch.setenv("M3DDM_RAY_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        fs.pipe(f"/models/m3ddm/{name}", (UNET_DIR / name).read_bytes())
    model = load_unet("memory://models/m3ddm", "fp32", "cpu")
    ref = load_unet(UNET_DIR, "fp32", "cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_half_precision_load_keeps_int_buffers(tmp_path):
    model = load_unet(UNET_DIR, "bf16", "cpu")
    assert model.dtype == torch.bfloat16
    bn = model.global_img_encoder.resnet_layer[0].layers[0].shortcut.normalization
    assert bn.num_batches_tracked.dtype == torch.int64
    with torch.no_grad():
        out = model(torch.randn(1, 9, 2, 8, 8), 10, torch.randn(16, 4, 8, 8), fps=3).sample
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
