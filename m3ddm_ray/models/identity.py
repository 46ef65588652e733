"""Weights identity of a model source: what tells two sets of weights apart without reading them.

:func:`~m3ddm_ray.distributed.config.config_hash` hashes this identity of the UNet and of the VAE
(not their URIs) into every output name, so a job never skips an output made by other weights and
never recomputes one made by the same weights. The rule, per source kind (:mod:`.sources`):

* **hub id** (``owner/name`` or ``owner/name@REVISION``): the repository id, the component's
  subfolder (``vae`` for the VAE) and the commit hash the revision (default ``main``) resolves to.
  A 40-hex pin is that commit as is. Otherwise, online: ``HfApi.model_info(id, revision=...).sha``;
  offline (``HF_HUB_OFFLINE`` set, or the hub not reachable): the local Hugging Face cache
  (``models--owner--name/refs/<revision>`` -> ``snapshots/<commit>``, read with
  ``huggingface_hub.try_to_load_from_cache``). When neither answers, :class:`ModelLoadError` names the
  model and the two fixes (pin ``ID@COMMIT``, or download it to a folder) -- a bare id is never hashed.
* **local folder or fsspec URL**: ``config.json`` and the weight file the loaders read (the first of
  :data:`.sources.WEIGHT_NAMES`, in the folder :func:`.sources.component_folder` finds), each by its
  size and its ETag when the filesystem reports one (object stores; ``blob_id`` on ``hf://``), else
  its modification time. One ``fs.info`` per file; no byte of a weight file is read. For local files
  the modification time is the identity: a copy that keeps it (``cp -p``, ``rsync -a``) keeps the
  output names, a copy or ``touch`` that changes it gives new ones (the outputs are recomputed once).
  The folder's path is not part of the identity.

Torch-free: the job's driver computes it once per job (:func:`~m3ddm_ray.distributed.config.with_weights`).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import ModelLoadError
from .sources import (
    COMMIT,
    HUB_SUBFOLDER,
    WEIGHT_NAMES,
    component_folder,
    is_hub_id,
    is_url,
    local_path,
    split_revision,
)

#: ``fs.info`` keys of a content tag, in the order they are used (S3 / HTTP, GCS / Azure, ``hf://``).
ETAG_KEYS = ("ETag", "etag", "blob_id")
#: ``fs.info`` keys of a modification time (local, S3, Azure, GCS, the in-memory filesystem).
MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "created")


def file_stamp(info: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{"size": bytes, "etag": str}`` or ``{"size": bytes, "mtime": number or ISO time}`` of one
    ``fs.info`` answer: the content tag when there is one (:data:`ETAG_KEYS`), else the modification
    time (:data:`MTIME_KEYS`).

    Raises:
        ModelLoadError: the filesystem reports neither (``where`` names the file), since a replaced
            file of the same size could then not be told apart.
    """
    stamp: dict[str, Any] = {"size": int(info.get("size") or 0)}
    for key in ETAG_KEYS:
        if info.get(key):
            stamp["etag"] = str(info[key])
            return stamp
    for key in MTIME_KEYS:
        value = info.get(key)
        if value is not None and value != "":
            stamp["mtime"] = value.isoformat() if isinstance(value, datetime.datetime) else value
            return stamp
    raise ModelLoadError(f"{where}: the filesystem reports neither an ETag nor a modification time for this "
                         f"file, so new weights there could not be told from the old ones; copy the model folder "
                         f"to a local path or an object store (s3://, gs://), or pin a hub model as ID@COMMIT")


def weights_identity(source: str | os.PathLike, component: str,
                     storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The identity of the ``component`` (``"unet"`` or ``"vae"``) weights of ``source``:
    ``{"hub": id, "subfolder": str | None, "commit": 40-hex}`` for a hub id, or
    ``{"files": {name: file_stamp}}`` for a folder / fsspec URL (module docstring for the rule).

    Raises:
        InputError: a malformed ``ID@REVISION`` pin.
        ModelLoadError: a missing folder, ``config.json`` or weight file, unreadable metadata, or a
            hub id whose commit cannot be resolved (the message names the source and the fix).
    """
    text, revision = split_revision(source)
    if is_url(text):
        import fsspec

        fs, root = fsspec.core.url_to_fs(text, **dict(storage_options or {}))
        return {"files": _folder_stamps(fs, root.rstrip("/"), text.rstrip("/"), component)}
    path = local_path(text)
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path}: is a file; pass the model folder that holds config.json and the weights")
        import fsspec

        root = str(path.resolve())
        return {"files": _folder_stamps(fsspec.filesystem("file"), root, root, component)}
    if is_hub_id(text):
        subfolder = HUB_SUBFOLDER[component]
        return {"hub": text, "subfolder": subfolder, "commit": hub_commit(text, revision, subfolder)}
    raise ModelLoadError(f"{text}: no such folder, and not an fsspec URL or a hub id (owner/name)")


def pinned_source(source: str | os.PathLike, identity: Mapping[str, Any]) -> str:
    """``source`` as the loaders should read it: a hub id pinned to its resolved commit
    (``owner/name@<commit>``), so that the weights loaded are the weights hashed; other sources as given."""
    if "commit" in identity:
        return f"{identity['hub']}@{identity['commit']}"
    return str(source)


def _folder_stamps(fs, root: str, shown: str, component: str) -> dict[str, dict[str, Any]]:
    """``{"config.json": stamp, <weight file>: stamp}`` of the component folder under ``root``."""
    infos: dict[str, Mapping[str, Any] | None] = {}

    def name_of(path: str) -> str:
        return shown + path[len(root):]

    def info(path: str) -> Mapping[str, Any] | None:
        if path not in infos:
            try:
                infos[path] = fs.info(path)
            except FileNotFoundError:
                infos[path] = None
            except Exception as exc:  # permissions, credentials, network: name the file
                raise ModelLoadError(f"{name_of(path)}: cannot read its metadata ({type(exc).__name__}: {exc}); "
                                     f"check the path and the storage_options credentials") from exc
        return infos[path]

    def is_file(path: str) -> bool:
        found = info(path)
        return found is not None and found.get("type", "file") == "file"

    folder = component_folder(is_file, root, component)
    if not is_file(f"{folder}/config.json"):
        raise ModelLoadError(f"{name_of(folder)}: no config.json in this folder; a diffusers model folder holds "
                             f"config.json and {' or '.join(WEIGHT_NAMES)}")
    weights = next((n for n in WEIGHT_NAMES if is_file(f"{folder}/{n}")), None)
    if weights is None:
        raise ModelLoadError(f"{name_of(folder)}: no weights; expected {' or '.join(WEIGHT_NAMES)}")
    return {name: file_stamp(info(f"{folder}/{name}"), name_of(f"{folder}/{name}"))
            for name in ("config.json", weights)}


def _hub_offline() -> bool:
    import huggingface_hub.constants as hc

    return bool(hc.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _hub_cache() -> str:
    import huggingface_hub.constants as hc

    return os.environ.get("HF_HUB_CACHE") or hc.HF_HUB_CACHE


def hub_commit(repo_id: str, revision: str | None = None, subfolder: str | None = None) -> str:
    """The 40-hex commit ``revision`` (default ``main``) of hub repository ``repo_id`` resolves to:
    a commit pin as is, else the hub's answer (``model_info``) when online, else the snapshot of the
    local Hugging Face cache (``HF_HUB_CACHE``) that holds ``[subfolder/]config.json``.

    Raises:
        ModelLoadError: neither the hub nor the cache knows it; names the model and the fixes.
    """
    if revision and COMMIT.match(revision):
        return revision
    reasons = []
    if _hub_offline():
        reasons.append("HF_HUB_OFFLINE is set")
    else:
        try:
            from huggingface_hub import HfApi

            sha = HfApi().model_info(repo_id, revision=revision, timeout=10).sha
            if sha:
                return sha
            reasons.append("the hub gave no commit")
        except Exception as exc:  # no network, unknown repo, gated repo, HTTP errors...
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            reasons.append(f"the hub did not answer ({type(exc).__name__}: {first})")
    from huggingface_hub import try_to_load_from_cache

    filename = f"{subfolder}/config.json" if subfolder else "config.json"
    cache = _hub_cache()
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
    if isinstance(cached, str):
        return Path(cached).parents[filename.count("/")].name  # .../snapshots/<commit>/[subfolder/]config.json
    reasons.append(f"the Hugging Face cache {cache} holds no snapshot of it")
    name = f"{repo_id}@{revision}" if revision else repo_id
    raise ModelLoadError(
        f"{name}: cannot tell which commit of this hub model would be loaded ({'; '.join(reasons)}), so its "
        f"outputs cannot be named by their weights. Pin it as {repo_id}@<40-hex commit> in the model / vae "
        f"setting (--set model=... / --model), or download it (`huggingface-cli download {repo_id} --local-dir DIR`) "
        f"and pass the folder DIR")
