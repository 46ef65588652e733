"""Training checkpoints on any fsspec URL, in the released format plus the training state.

Layout of ``OUTPUT`` (a local folder or ``s3://…``/``gs://…``/``memory://…``)::

    OUTPUT/checkpoints/step-000250/unet/config.json                          released UNet format,
    OUTPUT/checkpoints/step-000250/unet/diffusion_pytorch_model.safetensors   strict ``load_unet``
    OUTPUT/checkpoints/step-000250/unet_ema/...                               (with EMA only)
    OUTPUT/checkpoints/step-000250/training_state.pt   optimizer, LR scheduler, EMA, RNG, step
    OUTPUT/checkpoints/latest                          text: name of the last complete checkpoint
    OUTPUT/unet/, OUTPUT/vae/                          the final model (EMA weights if enabled)
    OUTPUT/metrics.jsonl                               one JSON object per logged step

A checkpoint is written to its folder first and ``latest`` is updated last, so a crash mid-write
leaves the previous checkpoint as the one ``--resume`` takes. ``training_state.pt`` is read with
``torch.load(weights_only=True)`` (tensors, numbers and strings only).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError


def _fs(uri: str):
    import fsspec

    return fsspec.core.url_to_fs(uri)


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = _fs(uri)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def read_bytes(uri: str) -> bytes:
    fs, path = _fs(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.exists(path)


def save_model_folder(model, uri: str, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` of a diffusers model to ``uri``.

    ``state_dict`` replaces the model's own weights (e.g. EMA weights); tensors are saved as float32
    contiguous CPU copies.
    """
    from safetensors.torch import save

    sd = state_dict if state_dict is not None else model.state_dict()
    sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sd.items()}
    config = dict(model.config)
    config["_class_name"] = type(model).__name__
    write_bytes(join(uri, "config.json"), json.dumps(config, indent=2, sort_keys=True, default=list).encode())
    write_bytes(join(uri, "diffusion_pytorch_model.safetensors"), save(sd))


def save_checkpoint(output: str, step: int, unet, state: dict[str, Any], ema_state: dict | None = None) -> str:
    """Write checkpoint ``step`` under ``output/checkpoints`` and point ``latest`` at it; returns its URL."""
    name = f"step-{step:06d}"
    where = join(output, "checkpoints", name)
    save_model_folder(unet, join(where, "unet"))
    if ema_state is not None:
        save_model_folder(unet, join(where, "unet_ema"), ema_state)
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(join(where, "training_state.pt"), buf.getvalue())
    write_bytes(join(output, "checkpoints", "latest"), name.encode())
    return where


def latest_checkpoint(output: str) -> str | None:
    """URL of the last complete checkpoint of ``output``, or None."""
    marker = join(output, "checkpoints", "latest")
    if not exists(marker):
        return None
    return join(output, "checkpoints", read_bytes(marker).decode().strip())


def load_state(checkpoint: str) -> dict[str, Any]:
    """``training_state.pt`` of a checkpoint (``weights_only=True``)."""
    data = read_bytes(join(checkpoint, "training_state.pt"))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def local_copy(uri: str) -> str:
    """A local folder holding the model files of ``uri`` (itself when local)."""
    if "://" not in uri or uri.startswith("file://"):
        return uri[len("file://"):] if uri.startswith("file://") else uri
    fs, path = _fs(uri)
    if not fs.exists(f"{path}/config.json"):
        raise InputError(f"{uri}: no config.json there")
    tmp = tempfile.mkdtemp(prefix="m3ddm-ckpt-")
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        fs.get_file(f"{path}/{name}", os.path.join(tmp, name))
    return tmp


def append_metrics(output: str, rows: list[dict]) -> None:
    """Append rows to ``output/metrics.jsonl`` (rewrites the file on object stores)."""
    uri = join(output, "metrics.jsonl")
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    if "://" not in output:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        with open(uri, "a") as f:
            f.write(text)
        return
    old = read_bytes(uri).decode() if exists(uri) else ""
    write_bytes(uri, (old + text).encode())
