"""napari-addunet: Additive U-Net denoising and classification, for napari and for scripts.

Importing this package is cheap: torch, Qt and napari are imported only when a function
that needs them is first called.

Examples
--------
>>> import napari_addunet as na
>>> na.list_models()                          # doctest: +SKIP
>>> model = na.create_model("addunet", width=32, kernels=(9, 7, 5, 3, 1))  # doctest: +SKIP
>>> model.gates                               # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> module that defines it (imported on first access)
_LAZY = {
    "list_models": ".models.registry",
    "create_model": ".models.registry",
    "get_config_class": ".models.registry",
    "model_summaries": ".models.registry",
    "ModelOutput": ".models.outputs",
    "ConfigError": ".models.config",
    "UnknownModelError": ".models.registry",
    "InputShapeError": ".models.base",
    "GateError": ".models.addunet",
    "save_model": ".engine.checkpoint",
    "load_model": ".engine.checkpoint",
    "read_header": ".engine.checkpoint",
    "bundled_models": ".engine.checkpoint",
    "import_torch_weights": ".engine.checkpoint",
    "CheckpointError": ".engine.checkpoint",
    "receptive_field": ".engine.receptive_field",
    "denoise": ".engine.inference",
    "predict": ".engine.inference",
    "iter_denoise": ".engine.inference",
    "PredictResult": ".engine.inference",
    "Progress": ".engine.inference",
    "InferenceCancelled": ".engine.inference",
    "macs_per_pixel": ".engine.complexity",
    "train": ".engine.training",
    "train_events": ".engine.training",
    "TrainingResult": ".engine.training",
    "TrainingConfig": ".engine.training_config",
    "clean_data": ".engine.datasets",
    "noisy_data": ".engine.datasets",
    "paired_data": ".engine.datasets",
    "class_folder_data": ".engine.datasets",
    "DataError": ".engine.datasets",
    "evaluate": ".engine.evaluation",
    "resolve_device": ".engine.devices",
    "available_devices": ".engine.devices",
    "DeviceError": ".engine.devices",
    "session": ".session",
}

__all__ = ["__version__", *sorted(_LAZY)]


#: sub-packages reachable as attributes (``napari_addunet.engine.readout.compare``), imported
#: on first access like the names above
_SUBPACKAGES = ("engine", "models")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_addunet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .engine.checkpoint import (
        CheckpointError,
        bundled_models,
        import_torch_weights,
        load_model,
        read_header,
        save_model,
    )
    from .engine.complexity import macs_per_pixel
    from .engine.datasets import DataError, class_folder_data, clean_data, noisy_data, paired_data
    from .engine.devices import DeviceError, available_devices, resolve_device
    from .engine.evaluation import evaluate
    from .engine.inference import InferenceCancelled, PredictResult, Progress, denoise, iter_denoise, predict
    from .engine.receptive_field import receptive_field
    from .engine.training import TrainingResult, train, train_events
    from .engine.training_config import TrainingConfig
    from .models.addunet import GateError
    from .models.base import InputShapeError
    from .models.config import ConfigError
    from .models.outputs import ModelOutput
    from .models.registry import (
        UnknownModelError,
        create_model,
        get_config_class,
        list_models,
        model_summaries,
    )
