"""Model loading is quiet (issue 13, item 8): diffusers' misleading load warnings are avoided where
they arise, while real diffusers errors still show and the dtype / weights are what was asked for."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from m3ddm_ray.errors import ModelLoadError
from m3ddm_ray.models.loading import load_unet, load_vae, make_tiny_models

from conftest import GOLDEN

NOISE = ("accelerate", "unsafe serialization", "should be kept in float32", "An error occurred")


@pytest.mark.parametrize("dtype, expected", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_loading_the_models_prints_no_third_party_warning(dtype, expected):
    from diffusers.utils import logging as diffusers_logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # every record of diffusers' loggers, whatever their handlers do
    root = logging.getLogger("diffusers")
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_warning()  # diffusers' default: warnings shown
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            unet = load_unet(GOLDEN / "models" / "unet", dtype, "cpu")
            vae = load_vae(GOLDEN / "models" / "vae", dtype, "cpu")  # this folder holds a .bin file only
            make_tiny_models(dtype=expected)
    finally:
        root.removeHandler(handler)
        diffusers_logging.set_verbosity(level)
    said = [r.getMessage() for r in records if r.levelno >= logging.WARNING] + [str(w.message) for w in caught]
    assert not [m for m in said if any(n in m for n in NOISE)], said
    assert {p.dtype for p in unet.parameters()} == {expected} and {p.dtype for p in vae.parameters()} == {expected}
    assert not unet.training and not any(p.requires_grad for p in vae.parameters())


def test_a_real_load_failure_still_raises(tmp_path):
    bad = tmp_path / "vae"
    bad.mkdir()
    (bad / "config.json").write_text('{"_class_name": "AutoencoderKL"}')  # no weights at all
    with pytest.raises(ModelLoadError, match="cannot load the VAE"):
        load_vae(bad, "fp32", "cpu")
