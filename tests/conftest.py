"""Shared fixtures: paths of the golden reference data, the tiny golden models, one Ray session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "golden"

# Torch on a 2-core machine: keep the intra-op pool at the golden recording's 2 threads.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def golden() -> Path:
    return GOLDEN


@pytest.fixture(scope="session")
def tiny_unet():
    from m3ddm_ray.models.loading import load_unet

    return load_unet(GOLDEN / "models" / "unet", "fp32", "cpu")


@pytest.fixture(scope="session")
def tiny_vae():
    from m3ddm_ray.models.loading import load_vae

    return load_vae(GOLDEN / "models" / "vae", "fp32", "cpu")
