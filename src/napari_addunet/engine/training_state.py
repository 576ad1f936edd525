"""The resumable training state kept beside a model: ``model.safetensors`` + ``model.state.pt``.

The state file is written with ``torch.save`` and read back with
``torch.load(weights_only=True)``: it holds only tensors, numbers, strings and plain
lists/dicts (random generator states and configs are JSON strings), never pickled
objects, so reading it cannot run code.

Contents (format ``napari-addunet-train-state/1``):

``model``
    The weights of the *last* step (the ``.safetensors`` beside it holds the *best* ones).
``optimizer``, ``grad_scaler``
    AdamW's state dict and the AMP gradient scaler's (empty on the CPU).
``step``, ``epoch``, ``step_in_epoch``
    Where the run stands; the learning rate is a pure function of ``step``.
``epoch_sums``
    Running sums of the current epoch's losses (for a resume in the middle of an epoch).
``rng``
    JSON of the numpy patch generator, plus the torch CPU/noise/CUDA generator states as tensors.
``best``, ``history``, ``since_best``, ``elapsed``
    Best-so-far record (JSON), per-epoch history (JSON), epochs without improvement, seconds.
``architecture``, ``model_config``, ``metadata``, ``config``, ``data``
    How to rebuild the model and the run (JSON).
``command``
    How the run was started (kept by a resume that is not given a new one).
``started_from``
    The training record of the model this run started from (JSON; ``null`` for a new model);
    absent in states written before it existed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .atomic import durable_replace, mode_for

STATE_FORMAT = "napari-addunet-train-state/1"
STATE_SUFFIX = ".state.pt"


class TrainingStateError(ValueError):
    """A training-state file is missing, foreign or unreadable."""


def state_path_for(model_path: str | os.PathLike) -> Path:
    """The state file beside a model file: ``x.safetensors`` -> ``x.state.pt``."""
    p = Path(model_path)
    if p.name.endswith(STATE_SUFFIX):
        return p
    return (
        p.with_name(p.stem + STATE_SUFFIX)
        if p.suffix == ".safetensors"
        else p.with_name(p.name + STATE_SUFFIX)
    )


def model_path_for(state_path: str | os.PathLike) -> Path:
    """The model file beside a state file: ``x.state.pt`` -> ``x.safetensors``."""
    p = Path(state_path)
    if p.name.endswith(STATE_SUFFIX):
        return p.with_name(p.name[: -len(STATE_SUFFIX)] + ".safetensors")
    return p


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a state dict atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    payload = {"format": STATE_FORMAT, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, mode_for(path))  # as the model file beside it, not the private 0o600 of mkstemp
        durable_replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state file safely (``weights_only=True``).

    Parameters
    ----------
    path
        The state file, or the model file it sits beside.

    Raises
    ------
    TrainingStateError
        If the file does not exist, is not a napari-addunet training state or cannot be read.
    """
    p = state_path_for(path)
    if not p.is_file():
        raise TrainingStateError(
            f"cannot resume: no training state {p.name} beside {model_path_for(p).name} "
            "(it is written during training next to the model)"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types
        raise TrainingStateError(
            f"{p.name}: not a readable training state ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingStateError(f"{p.name} is not a napari-addunet training state (format {STATE_FORMAT})")
    return state


def dumps(value: Any) -> str:
    """JSON text for values kept in the state file."""
    return json.dumps(value, sort_keys=True)


def loads(text: str) -> Any:
    return json.loads(text)
