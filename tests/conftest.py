"""Shared fixtures: paths of the golden reference data, the tiny golden models, one Ray session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "golden"
#: The default hub models pinned to made-up commits: configs whose hash needs neither the hub nor an HF cache.
PINNED_HUB = {"model": "alimama-creative/M3DDM-Video-Outpainting@" + "1" * 40,
              "vae": "stable-diffusion-v1-5/stable-diffusion-v1-5@" + "2" * 40}

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


@pytest.fixture(scope="session")
def ray_session():
    """One embedded local Ray for the whole test run (starting Ray costs ~5 s).

    ``num_cpus=4`` logical CPUs on a 2-core machine, so the prepare tasks, both model actor pools
    and the finalize tasks can all hold a slot at once (no actor-pool deadlock).
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray


@pytest.fixture(scope="session")
def s3_options():
    """A bucket ``bkt`` on a moto S3 server on 127.0.0.1; yields s3fs storage_options."""
    pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
        ).create_bucket(Bucket="bkt")
        yield {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    finally:
        server.stop()
