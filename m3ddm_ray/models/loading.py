"""Load the M3DDM UNet and the Stable Diffusion 1.5 VAE from a folder, an fsspec URL or the hub.

Sources, in the order they are recognised:

* a local folder (``/models/m3ddm``; a ``unet/`` or ``vae/`` subfolder is found by itself);
* an fsspec URL (``s3://bucket/models/m3ddm``, ``gs://…``, ``memory://…``): the few needed files are
  copied once into ``$M3DDM_RAY_CACHE`` (default ``~/.cache/m3ddm_ray/models``) and loaded from there;
* a Hugging Face hub id (``alimama-creative/M3DDM-Video-Outpainting``,
  ``MurakawaTakuya/M3DDM-Plus``, ``stable-diffusion-v1-5/stable-diffusion-v1-5``), optionally pinned as
  ``ID@REVISION`` (branch, tag or commit, passed on as ``revision=``), fetched with ``huggingface_hub``
  into its normal cache. Offline, this fails with a :class:`ModelLoadError` that names the id and how
  to pass a local folder instead.

The rules of what a source names and where its files are live in :mod:`.sources` (torch-free, shared
with :mod:`.identity`, which names outputs by the weights).

Checkpoints are read with safetensors, or with ``torch.load(weights_only=True)`` for ``.bin`` files:
nothing is ever unpickled beyond tensors. The UNet load is strict: any missing or unexpected key
is an error naming the file.

Quiet loading: diffusers logs three misleading warnings on every load (each model actor printed
them): "accelerate was not found" (we pass ``low_cpu_mem_usage=False`` ourselves when accelerate is
absent -- what diffusers falls back to anyway), "An error occurred ... Defaulting to unsafe
serialization" (we tell ``from_pretrained`` which weight file the folder has, and a ``.bin`` file is
read with ``weights_only=True``), and "modules ... should be kept in float32: []" (our UNet keeps no
module in float32; :func:`_cast` uses ``torch.nn.Module.to``). They are avoided where they arise, so
diffusers' real warnings and errors still show.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, ModelLoadError
from .identity import file_stamp
from .sources import HUB_SUBFOLDER, WEIGHT_NAMES, component_folder, is_hub_id, is_url, local_path, split_revision
from .init import UNET_INITS, official_init
from .unet import DOWN_BLOCK_TYPES, UP_BLOCK_TYPES, UNet3DConditionModel

#: Hub id of the released M3DDM weights (Fan et al. 2023).
DEFAULT_UNET = "alimama-creative/M3DDM-Video-Outpainting"
#: Hub id of the community fine-tune M3DDM+ (same architecture, same config).
M3DDM_PLUS_UNET = "MurakawaTakuya/M3DDM-Plus"
#: Hub id of Stable Diffusion 1.5, whose ``vae/`` M3DDM uses.
DEFAULT_VAE = "stable-diffusion-v1-5/stable-diffusion-v1-5"



def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """Map ``"fp32"|"float32"|"fp16"|"float16"|"bf16"|"bfloat16"|"auto"|None`` to a torch dtype.

    ``"auto"``/None: float16 on CUDA, float32 elsewhere (half precision on CPU is slow and lossy).

    Raises:
        InputError: for an unknown name.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    name = (dtype or "auto").lower()
    if name == "auto":
        return torch.float16 if torch.device(resolve_device(device)).type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise InputError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16, auto")
    return table[name]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else is passed to torch."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _cache_root() -> Path:
    return Path(os.environ.get("M3DDM_RAY_CACHE", Path.home() / ".cache" / "m3ddm_ray" / "models"))


def _fetch_from_fsspec(url: str, subfolder: str | None, storage_options: dict | None) -> Path:
    import fsspec

    base = url.rstrip("/") + (f"/{subfolder}" if subfolder else "")
    fs, root = fsspec.core.url_to_fs(base, **(storage_options or {}))
    if not fs.exists(f"{root}/config.json"):
        raise ModelLoadError(f"{base}: no config.json there; point to the model folder (the one holding "
                             f"config.json and diffusion_pytorch_model.safetensors or .bin)")
    local = _cache_root() / hashlib.sha256(base.encode()).hexdigest()[:16]
    names = ["config.json"] + [n for n in WEIGHT_NAMES if fs.exists(f"{root}/{n}")][:1]
    for name in names:
        # the copy is renewed when the remote file's identity (size + ETag / mtime) changed
        target, mark = local / name, local / f".{name}.stamp"
        stamp = json.dumps(file_stamp(fs.info(f"{root}/{name}"), f"{base}/{name}"), sort_keys=True)
        if not target.exists() or not mark.is_file() or mark.read_text() != stamp:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{name}.{os.getpid()}.part")
            fs.get_file(f"{root}/{name}", str(partial))
            os.replace(partial, target)  # never a half-copied checkpoint at the final name
            partial.write_text(stamp)
            os.replace(partial, mark)
    return local


def _fetch_from_hub(repo_id: str, subfolder: str | None, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    def get(name: str) -> str:
        return hf_hub_download(repo_id, name, subfolder=subfolder, revision=revision)

    where = repo_id + (f" (subfolder {subfolder})" if subfolder else "")
    try:
        config = get("config.json")
    except Exception as exc:  # offline, no such repo, no such file, HTTP errors...
        raise ModelLoadError(
            f"could not fetch {where} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            f"Without internet, download it elsewhere (`huggingface-cli download {repo_id} --local-dir DIR`), "
            f"copy DIR here and pass the local folder (or an s3:// URL) instead of the hub id"
        ) from exc
    last: Exception | None = None
    for name in WEIGHT_NAMES:
        try:
            get(name)
            return Path(config).parent
        except Exception as exc:  # try the next weight format
            last = exc
    raise ModelLoadError(f"{where}: found config.json but no {' or '.join(WEIGHT_NAMES)} ({last})")


def resolve_model_dir(source: str | os.PathLike, subfolder: str | None = None, *,
                      revision: str | None = None, storage_options: dict | None = None) -> Path:
    """Turn a folder, fsspec URL or hub id (``ID`` or ``ID@REVISION``) into a local folder holding
    ``config.json`` and weights.

    Raises:
        InputError: a malformed ``ID@REVISION``, or a pin that contradicts ``revision``.
        ModelLoadError: the source does not exist, is offline, or holds no model files.
    """
    text, pinned = split_revision(source)
    if pinned is not None and revision not in (None, pinned):
        raise InputError(f"{source}: pinned to revision {pinned!r} but revision={revision!r} was also given; pass one")
    revision = pinned or revision
    if is_url(text):
        return _fetch_from_fsspec(text, subfolder, storage_options)
    path = local_path(text)
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path}: is a file; pass the model folder that holds config.json and the weights")
        return path / subfolder if subfolder else path
    if is_hub_id(text):
        return _fetch_from_hub(text, subfolder, revision)
    raise ModelLoadError(f"{text}: no such folder, and not an fsspec URL or a hub id (owner/name)")


def read_config(folder: Path) -> dict[str, Any]:
    """Read ``folder/config.json``; errors name the file."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no config.json in this folder; a diffusers model folder holds "
                             f"config.json and diffusion_pytorch_model.safetensors or .bin")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not readable JSON ({exc})") from exc


def read_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Read the weights of ``folder``: safetensors first, else ``.bin`` with ``weights_only=True``."""
    for name in WEIGHT_NAMES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path), device="cpu"), path
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True), path
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0][:160]
            raise ModelLoadError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {first_line}); "
                                 f"only tensors are accepted (safetensors, or torch.save of a state dict)") from exc
    raise ModelLoadError(f"{folder}: no weights; expected {' or '.join(WEIGHT_NAMES)}")


def _find_unet_folder(folder: Path) -> Path:
    return Path(component_folder(os.path.isfile, str(folder), "unet"))




def unet_from_config(config: dict[str, Any], where: str = "config", *, init: str = "official") -> UNet3DConditionModel:
    """Build a new UNet from a released-format config dict.

    Args:
        config: the keys of a released ``config.json`` (``_class_name`` ``"UNet3DConditionModel"``).
        where: names the config in error messages.
        init: ``"official"`` (default): the official initialisation, under which the new network
            starts as a per-frame 2-D network (identity temporal convolutions and temporal
            projections, zero attention output weights; :func:`m3ddm_ray.models.init.official_init`);
            ``"random"``: torch's default initialisation of every layer. Built on the ``meta``
            device (``load_unet``), both cost nothing and the checkpoint provides every value.

    Raises:
        ModelLoadError: the config is of another class or uses unsupported block types.
        InputError: ``init`` is not one of :data:`UNET_INITS`.
    """
    if init not in UNET_INITS:
        raise InputError(f"init={init!r}: use one of {', '.join(UNET_INITS)}")
    cls = config.get("_class_name")
    if cls != "UNet3DConditionModel":
        raise ModelLoadError(f"{where}: _class_name is {cls!r}, expected 'UNet3DConditionModel' (an M3DDM UNet "
                             f"config); is this the VAE or another model's folder?")
    bad = [b for b in config.get("down_block_types", []) if b not in DOWN_BLOCK_TYPES]
    bad += [b for b in config.get("up_block_types", []) if b not in UP_BLOCK_TYPES]
    if bad:
        raise ModelLoadError(f"{where}: block types {bad} are not M3DDM's ({DOWN_BLOCK_TYPES + UP_BLOCK_TYPES})")
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        model = UNet3DConditionModel(**kwargs)
    except TypeError as exc:
        raise ModelLoadError(f"{where}: config has keys this UNet does not know ({exc})") from exc
    return official_init(model) if init == "official" else model


def load_unet(
    source: str | os.PathLike = DEFAULT_UNET,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = "auto",
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    storage_options: dict | None = None,
) -> UNet3DConditionModel:
    """Load the M3DDM UNet strictly from a folder, fsspec URL or hub id, in eval mode.

    The model is built on the ``meta`` device and the checkpoint tensors are assigned to it, so no
    memory or time is spent on a random initialisation of 1.3 B parameters.

    Args:
        source: local folder, fsspec URL or hub id (default: the released M3DDM weights).
        dtype: ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"auto"`` (fp16 on CUDA, fp32 on CPU).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        subfolder: e.g. ``"unet"``; found automatically for local folders.

    Raises:
        ModelLoadError: missing folder/config/weights, a config of another class, missing or
            unexpected state-dict keys, shape mismatches, offline hub access.
    """
    device, dtype = resolve_device(device), resolve_dtype(dtype, device)
    folder = resolve_model_dir(source, subfolder, revision=revision, storage_options=storage_options)
    folder = _find_unet_folder(folder)
    config = read_config(folder)
    with torch.device("meta"):
        model = unet_from_config(config, str(folder / "config.json"))
    state, path = read_state_dict(folder)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(
            f"{path}: state dict does not match the config ({len(missing)} missing keys, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}); is this the M3DDM checkpoint for this config?"
        )
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: tensor shapes do not match the config ({exc})") from exc
    return _cast(model, device, dtype).eval().requires_grad_(False)


def _cast(model: torch.nn.Module, device: torch.device | None, dtype: torch.dtype):
    """``model`` moved to ``device`` and cast to ``dtype`` with ``torch.nn.Module.to``.

    diffusers' ``ModelMixin.to`` warns "modules ... should be kept in float32: []" on every dtype
    cast, even for models that keep none in float32 (``_keep_in_fp32_modules`` is None for ours and
    for ``AutoencoderKL``); only such models are cast here.
    """
    if getattr(model, "_keep_in_fp32_modules", None):
        return model.to(device=device, dtype=dtype)  # keep diffusers' handling (and its warning)
    return torch.nn.Module.to(model, device=device, dtype=dtype)


def _from_pretrained_kwargs(folder: Path) -> dict[str, Any]:
    """``from_pretrained`` arguments that load ``folder`` the way diffusers would, without its
    misleading warnings: the weight format present (safetensors when there, else the ``.bin``, read
    with ``weights_only=True`` by diffusers), and ``low_cpu_mem_usage=False`` when accelerate is not
    installed (diffusers' own fallback, which it announces as a warning on every load)."""
    from diffusers.utils import is_accelerate_available

    kwargs: dict[str, Any] = {"use_safetensors": (folder / WEIGHT_NAMES[0]).is_file()}
    if not is_accelerate_available():
        kwargs["low_cpu_mem_usage"] = False
    return kwargs


def load_vae(
    source: str | os.PathLike = DEFAULT_VAE,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = "auto",
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    storage_options: dict | None = None,
):
    """Load the Stable Diffusion 1.5 VAE (``diffusers.AutoencoderKL``), in eval mode.

    ``source`` may be the SD folder (its ``vae/`` subfolder is used), the VAE folder itself, an fsspec
    URL of either, or a hub id (``subfolder`` defaults to ``"vae"`` for hub ids).

    Raises:
        ModelLoadError: as :func:`load_unet`, or when the folder holds no AutoencoderKL.
    """
    from diffusers import AutoencoderKL

    device, dtype = resolve_device(device), resolve_dtype(dtype, device)
    text = str(source)
    if subfolder is None and is_hub_id(split_revision(text)[0]) and not local_path(text).exists():
        subfolder = HUB_SUBFOLDER["vae"]  # hub id of a full Stable Diffusion repo
    try:
        folder = resolve_model_dir(source, subfolder, revision=revision, storage_options=storage_options)
    except ModelLoadError:
        if subfolder is None and "://" in text:
            folder = resolve_model_dir(source, "vae", storage_options=storage_options)
        else:
            raise
    folder = Path(component_folder(os.path.isfile, str(folder), "vae"))
    config = read_config(folder)
    if config.get("_class_name") != "AutoencoderKL":
        raise ModelLoadError(f"{folder / 'config.json'}: _class_name is {config.get('_class_name')!r}, expected "
                             f"'AutoencoderKL' (the vae/ folder of Stable Diffusion 1.5)")
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True,
                                            **_from_pretrained_kwargs(folder))
    except Exception as exc:
        raise ModelLoadError(f"{folder}: cannot load the VAE ({type(exc).__name__}: {exc})") from exc
    return vae.to(device).eval().requires_grad_(False)


def default_scheduler_config() -> dict[str, Any]:
    """The Stable Diffusion 1.5 PNDM scheduler config (shipped, so no SD folder is needed for it)."""
    path = Path(__file__).resolve().parent.parent / "assets" / "scheduler_config.json"
    return json.loads(path.read_text())


def tiny_unet_config() -> dict[str, Any]:
    """Config of the tiny test UNet (the golden data's): 1.7 M parameters, same block types as released."""
    return {
        "_class_name": "UNet3DConditionModel", "in_channels": 9, "out_channels": 4,
        "block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock3D", "DownBlockP3D"],
        "up_block_types": ["UpBlockP3D", "CrossAttnUpBlock3D"], "layers_per_block": 1,
        "cross_attention_dim": 320, "attention_head_dim": 8, "norm_num_groups": 32, "sample_size": 8,
    }


def tiny_vae_config() -> dict[str, Any]:
    """Config of the tiny test VAE (the golden data's): 8x downsampling like SD's, 81 k parameters."""
    return {
        "block_out_channels": [8, 16, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 1, "latent_channels": 4,
        "norm_num_groups": 8, "sample_size": 64, "scaling_factor": 0.18215,
    }


def make_tiny_models(seed: int = 0, dtype: torch.dtype = torch.float32):
    """Random tiny UNet + VAE for tests and demos (no download). Returns ``(unet, vae)`` in eval mode.

    The UNet keeps torch's default initialisation in every layer (``init="random"``), not the
    official one: under the official initialisation the attentions' outputs would not depend on
    their inputs and the temporal convolutions would be identities, so tests of those layers (caching,
    batching, frame order) would pass whatever the layers compute.
    """
    from diffusers import AutoencoderKL

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = unet_from_config(tiny_unet_config(), "tiny config", init="random")
        vae = AutoencoderKL(**tiny_vae_config())
    finally:
        torch.random.set_rng_state(gen_state)
    return _cast(unet, None, dtype).eval().requires_grad_(False), _cast(vae, None, dtype).eval().requires_grad_(False)
