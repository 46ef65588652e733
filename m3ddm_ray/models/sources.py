"""What a model source string names and where its files are (torch-free; shared by loading and identity).

A ``model`` / ``vae`` source is, in the order it is recognised:

* an fsspec URL (``s3://bucket/models/m3ddm``, ``gs://…``, ``memory://…``; ``file://`` is a local path);
* a local folder (``/models/m3ddm``);
* a Hugging Face hub id (``owner/name``), optionally pinned to a revision as ``owner/name@REVISION``
  (a branch, a tag or a 40-hex commit hash; the revision is passed to the hub as ``revision=``).

A diffusers model folder holds ``config.json`` and one of :data:`WEIGHT_NAMES`. A Stable Diffusion
folder keeps its VAE in ``vae/`` (and an M3DDM folder may keep its UNet in ``unet/``):
:func:`component_folder` finds it. On the hub the VAE is always read from the ``vae/`` subfolder of
the repository (:data:`HUB_SUBFOLDER`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from ..errors import InputError

#: Weight files of a diffusers model folder, in the order they are looked for (safetensors first).
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
#: Hub repository id: ``owner/name``.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: A hub revision: branch, tag (``v1.0``), PR ref (``refs/pr/3``) or commit hash.
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
#: A full hub commit hash (what a revision resolves to).
COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: Subfolder of a hub repository holding each component (None: the repository root).
HUB_SUBFOLDER: dict[str, str | None] = {"unet": None, "vae": "vae"}


def is_url(text: str) -> bool:
    """True for an fsspec URL other than ``file://`` (which is a local path)."""
    return "://" in text and not text.startswith("file://")


def local_path(text: str) -> Path:
    """The local path of ``text`` (``file://`` stripped, ``~`` expanded); it may not exist."""
    return Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()


def is_hub_id(text: str) -> bool:
    """True when ``text`` has the form of a hub repository id (``owner/name``, no revision)."""
    return bool(HUB_ID.match(text)) and not text.startswith((".", "/"))


def split_revision(source: object) -> tuple[str, str | None]:
    """``"owner/name@REVISION"`` -> ``("owner/name", "REVISION")``; any other source -> ``(source, None)``.

    An ``@`` in an fsspec URL or in an existing local path is part of that path, not a pin.

    Raises:
        InputError: an ``@`` pin on something that is not a hub id, or an empty / malformed revision,
            naming the source and the accepted form.
    """
    text = str(source)
    if "@" not in text or is_url(text) or local_path(text).exists():
        return text, None
    repo, revision = text.split("@", 1)
    if not is_hub_id(repo) or not _REVISION.match(revision) or ".." in revision:
        raise InputError(
            f"model source {text!r}: not a folder, an fsspec URL or a hub id; a pinned hub model is written "
            f"ID@REVISION with ID = owner/name and REVISION a branch, tag or commit hash, e.g. "
            f"alimama-creative/M3DDM-Video-Outpainting@<40-hex commit>")
    return repo, revision


def component_folder(is_file: Callable[[str], bool], folder: str, component: str) -> str:
    """The folder holding a component's files: ``folder`` when it has ``config.json``, else
    ``folder/<component>`` (``unet`` / ``vae``) when that has one, else ``folder`` (whose missing
    ``config.json`` the caller reports). ``is_file(path)`` tells whether a file exists."""
    root = folder.rstrip("/")
    if not is_file(f"{root}/config.json") and is_file(f"{root}/{component}/config.json"):
        return f"{root}/{component}"
    return folder
