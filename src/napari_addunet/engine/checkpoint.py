"""One checkpoint format: a single ``.safetensors`` file that rebuilds its model alone.

The file holds the weights as tensors and, in its string metadata, the architecture name,
the full config, the learned gates, the normalisation, class names, the package version
and free-form training metadata (all JSON). Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from napari_addunet._version import __version__
from napari_addunet.models import (
    ConfigError,
    DenoiserModel,
    UnknownModelError,
    create_model_from_config,
    make_config,
)

from .atomic import atomic_write

FORMAT = "napari-addunet/1"
SUFFIX = ".safetensors"
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin"}
DEFAULT_MODEL = "addunet-gray-blind"


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read (foreign, corrupted, truncated or inconsistent)."""


# -- bundled models ------------------------------------------------------------------------------
def _weights_dir() -> Path:
    return Path(str(resources.files("napari_addunet") / "weights"))


def bundled_models() -> dict[str, Path]:
    """Names and files of the models shipped inside the package."""
    folder = _weights_dir()
    if not folder.is_dir():
        return {}
    return {p.name[: -len(SUFFIX)]: p for p in sorted(folder.glob(f"*{SUFFIX}"))}


# -- saving ---------------------------------------------------------------------------------------
_LOCAL_PATH = re.compile(r"(^|[\s=:\"'])(/[A-Za-z][\w.-]*(/|$)|[A-Za-z]:\\)")


def local_paths(value: Any, where: str = "metadata") -> list[str]:
    """Strings in ``value`` (nested dicts and lists) that look like absolute file paths.

    A model meant for others (a bundled one) should not carry the paths of the machine that
    made it; the scripts that make bundled models refuse to write metadata where this finds any.

    Returns
    -------
    list of str
        ``"<where>.<key>[i] = '<text>'"`` for each offending string, empty if there is none.
    """
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in local_paths(v, f"{where}.{k}")]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in local_paths(v, f"{where}[{i}]")]
    if isinstance(value, str) and _LOCAL_PATH.search(value):
        return [f"{where} = {value[:80]!r}"]
    return []


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{what} must be JSON-serialisable: {exc}") from exc


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""How :func:`save_model` may store floating-point weights (they always load as float32)."""


def storage_dtype(name: str | None) -> torch.dtype:
    """The torch dtype for a ``weights_dtype`` name; ``None`` means float32."""
    if name is None:
        return torch.float32
    if name not in STORAGE_DTYPES:
        raise CheckpointError(f"weights_dtype must be one of {sorted(STORAGE_DTYPES)}; got {name!r}")
    return STORAGE_DTYPES[name]


def round_weights(model: DenoiserModel, weights_dtype: str | None) -> DenoiserModel:
    """Round ``model``'s floating-point weights in place as storing them in ``weights_dtype`` would.

    After this, the model computes exactly what the file written with that ``weights_dtype``
    will compute once loaded, so a self-check measured on it holds for the file.

    Raises :class:`CheckpointError`, changing nothing, when a weight is NaN or does not fit
    in ``weights_dtype``.
    """
    dtype = storage_dtype(weights_dtype)
    named = [*model.named_parameters(), *model.named_buffers()]
    for name, tensor in named:  # check all before changing any
        _check_storable(name, tensor.detach(), dtype)
    with torch.no_grad():
        for _, tensor in named:
            if tensor.is_floating_point() and tensor.dtype != dtype:
                tensor.copy_(tensor.to(dtype))
    return model


def _check_storable(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
    if not tensor.is_floating_point():
        return
    nan = torch.isnan(tensor)
    if nan.any():  # (an infinite gate parameter is a closed gate, and fine)
        raise CheckpointError(
            f"weight {name!r} holds {int(nan.sum())} NaN value(s); the model is broken "
            "(a diverged training?) and is not saved"
        )
    if dtype != tensor.dtype and (torch.isfinite(tensor) & ~torch.isfinite(tensor.to(dtype))).any():
        raise CheckpointError(
            f"weight {name!r} does not fit in {str(dtype).removeprefix('torch.')} "
            f"(largest magnitude {tensor.abs().max().item():.3g}); save it as float32"
        )


def _stored(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    tensor = tensor.detach().to("cpu").contiguous()
    _check_storable(name, tensor, dtype)
    if not tensor.is_floating_point() or dtype == tensor.dtype:
        return tensor
    return tensor.to(dtype)


_SAVE_OPTIONS = ("overwrite", "weights_dtype")


def _refuse_misspelt_options(metadata: dict[str, Any]) -> None:
    """Raise TypeError for a metadata key that looks like a misspelt option of :func:`save_model`."""
    import difflib

    for key in metadata:
        close = difflib.get_close_matches(key, _SAVE_OPTIONS, n=1, cutoff=0.8)
        if close:
            raise TypeError(
                f"save_model() got {key}={metadata[key]!r}, which would be stored as metadata; "
                f"did you mean {close[0]}=? (nothing was written)"
            )


def _check_known_metadata(metadata: dict[str, Any], num_classes: int) -> None:
    """Refuse the metadata keys the engine reads back when they are malformed, before a write."""
    from .normalization import NormalizationError, parse_normalization

    if metadata.get("normalization") is not None:
        try:
            parse_normalization(metadata["normalization"])
        except NormalizationError as exc:
            raise CheckpointError(f"metadata 'normalization': {exc} (nothing was written)") from None
    names = metadata.get("class_names")
    if names is not None:
        if isinstance(names, str | bytes) or not isinstance(names, list | tuple):
            raise CheckpointError(
                f"metadata 'class_names' must be a list of names, got {type(names).__name__} (nothing was written)"
            )
        if not all(isinstance(n, str) for n in names):
            raise CheckpointError("metadata 'class_names' must hold strings (nothing was written)")
        if names and len(names) != num_classes:
            raise CheckpointError(
                f"metadata 'class_names' has {len(names)} names but the model has {num_classes} "
                "classes (nothing was written)"
            )


def save_model(
    model: DenoiserModel,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    weights_dtype: str | None = None,
    **metadata: Any,
) -> Path:
    """Save a model with everything needed to rebuild it into one ``.safetensors`` file.

    Parameters
    ----------
    model
        A model built by :func:`napari_addunet.create_model` (or loaded).
    path
        Target file; must end in ``.safetensors``. Written atomically (temporary file, then rename).
    overwrite
        Replace an existing file (atomically). By default an existing file is refused
        (:class:`FileExistsError`) and left as it is.
    weights_dtype
        ``None`` or ``"float32"`` (default) stores the weights as they are; ``"float16"`` or
        ``"bfloat16"`` stores floating-point weights at half the size (integer buffers are kept).
        Loading always gives float32 weights; the rounding changes outputs slightly (see
        :func:`round_weights`). Refused if a weight overflows the smaller type.
    **metadata
        Extra information stored with the model and merged into ``model.metadata``
        (e.g. ``normalization={...}``, ``class_names=[...]``, ``training={...}``).
        Values must be JSON-serialisable. A key that is a near-miss of a parameter name
        (``weight_dtype``, ``overwrites``) is refused as a likely typo.

    Returns
    -------
    Path
        The written file.
    """
    from safetensors.torch import save_file

    if not isinstance(model, DenoiserModel):
        raise TypeError(f"save_model expects a napari-addunet model, got {type(model).__name__}")
    _refuse_misspelt_options(metadata)
    path = Path(path)
    if path.suffix != SUFFIX:
        raise CheckpointError(f"checkpoint files end in {SUFFIX!r}; got {path.name!r}")
    dtype = storage_dtype(weights_dtype)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a file name ending in {SUFFIX!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise CheckpointError(f"folder {path.parent} does not exist")
    tensors = {k: _stored(k, v, dtype) for k, v in model.state_dict().items()}
    merged = {**model.metadata, **metadata}
    _check_known_metadata(merged, model.num_classes)
    header = {
        "format": FORMAT,
        "architecture": model.architecture,
        "config": _json(model.config.to_dict(), "config"),
        "metadata": _json(merged, "metadata"),
        "package_version": __version__,
        "torch_version": torch.__version__,
    }
    from napari_addunet.models.addunet import AddUNet

    if isinstance(model, AddUNet):  # as the file's (possibly rounded) weights give them
        stored = torch.nn.functional.softplus(tensors["beta"].float())
        header["gates"] = _json([float(a) for a in stored], "gates")
    if dtype != torch.float32:
        header["weights_dtype"] = str(dtype).removeprefix("torch.")
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    model.metadata = merged
    return path


# -- loading --------------------------------------------------------------------------------------
def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint's metadata (architecture, config, gates, metadata, weights_dtype) without its weights."""
    path = _check_path(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(
            f"{path.name} is not a readable safetensors file (truncated or corrupted?): {exc}"
        ) from exc
    return _decode_header(path, raw)


def _check_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path.name}: pickle-based files ({path.suffix}) are never loaded as models because "
            "unpickling can run code. Convert a plain state dict with "
            "napari_addunet.import_torch_weights(path, architecture, **config), which reads it "
            "with weights_only=True, then save it as .safetensors."
        )
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    return path


def _decode_header(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    if raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path.name} is a safetensors file but not a napari-addunet checkpoint "
            f"(metadata 'format' is {raw.get('format')!r}, expected {FORMAT!r})"
        )
    out: dict[str, Any] = {"architecture": raw.get("architecture", "")}
    for key in ("config", "metadata", "gates"):
        if key in raw:
            try:
                out[key] = json.loads(raw[key])
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{path.name}: metadata field {key!r} is not valid JSON") from exc
    out.setdefault("metadata", {})
    for key in ("package_version", "torch_version"):
        out[key] = raw.get(key, "")
    out["weights_dtype"] = raw.get("weights_dtype", "float32")
    if "config" not in out:
        raise CheckpointError(f"{path.name}: the checkpoint holds no model config")
    return out


def load_model(
    path: str | os.PathLike | None = None, *, device: str | torch.device | None = "cpu"
) -> DenoiserModel:
    """Rebuild a model from a checkpoint file or a bundled model's name.

    Parameters
    ----------
    path
        A ``.safetensors`` file written by :func:`save_model`, or the name of a bundled model
        (see :func:`bundled_models`). ``None`` loads the bundled default denoiser.
    device
        Where to put the model (``"cpu"`` by default; ``"auto"`` picks the best device).

    Returns
    -------
    DenoiserModel
        The model in eval mode, with ``metadata`` restored.

    Raises
    ------
    CheckpointError
        For a foreign, truncated or corrupted file, an unknown architecture, an invalid config
        or weights that do not match the architecture exactly.
    """
    from safetensors.torch import load_file

    from .devices import resolve_device

    if path is None:
        path = DEFAULT_MODEL
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"load_model takes a .safetensors file or a bundled model's name, got {type(path).__name__}"
        )
    bundled = bundled_models()
    if isinstance(path, str) and path in bundled:
        path = bundled[path]
    elif isinstance(path, str) and not Path(path).exists() and Path(path).suffix == "":
        names = ", ".join(bundled) or "none installed"
        raise CheckpointError(f"no checkpoint file and no bundled model named {path!r} (bundled: {names})")
    file = _check_path(path)
    header = read_header(file)
    try:
        cfg = make_config(header["architecture"], header["config"])
    except UnknownModelError as exc:
        raise CheckpointError(f"{file.name}: {exc}") from exc
    except ConfigError as exc:
        raise CheckpointError(f"{file.name}: invalid model config: {exc}") from exc
    model = create_model_from_config(cfg)
    try:
        tensors = load_file(str(file))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{file.name}: cannot read weights (truncated or corrupted?): {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in expected if k in tensors and tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if wrong:
            parts.append(f"wrong shape {wrong[:5]}")
        raise CheckpointError(
            f"{file.name}: weights do not match architecture {cfg.architecture!r}: " + "; ".join(parts)
        )
    model.load_state_dict(tensors, strict=True)
    model.metadata = dict(header["metadata"])
    model.source_path = str(file)
    model.eval()
    return model.to(resolve_device(device))


def import_torch_weights(path: str | os.PathLike, architecture: str, **config: Any) -> DenoiserModel:
    """Build a model from a plain PyTorch state-dict file, read with ``weights_only=True``.

    Use this once to convert third-party ``.pt``/``.pth`` weights, then :func:`save_model`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path.name}: not a plain tensor state dict loadable safely: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name}: expected a dict of tensors (a state dict)")
    model = create_model_from_config(make_config(architecture, config))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path.name}: weights do not match {architecture!r}: {exc}") from exc
    return model.eval()


def resolve_model(model: DenoiserModel | str | os.PathLike | None) -> DenoiserModel:
    """A model object from a model, a checkpoint path, a bundled name or None (the default)."""
    if isinstance(model, DenoiserModel):
        return model
    if isinstance(model, torch.nn.Module):
        raise TypeError(
            f"{type(model).__name__} is not a napari-addunet model; build one with create_model "
            "or load a checkpoint"
        )
    return load_model(model)


def resolve_module(model: torch.nn.Module | str | os.PathLike) -> torch.nn.Module:
    """Any torch module as it is, or a model loaded from a checkpoint file or a bundled name
    (for measurements that work on plain modules too: receptive field, MACs per pixel)."""
    if isinstance(model, torch.nn.Module):
        return model
    if isinstance(model, str | os.PathLike):
        return load_model(model)
    raise TypeError(
        f"expected a model, a .safetensors file or a bundled model's name, got {type(model).__name__}"
    )
