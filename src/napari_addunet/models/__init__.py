"""Pure-torch model zoo: registry, configs and architectures.

Each architecture's module is also reachable as an attribute (``napari_addunet.models.addunet``).
"""

from napari_addunet._lazy import submodule_loader

from .base import DenoiserModel, InputShapeError
from .config import ConfigError, ModelConfig
from .outputs import ModelOutput
from .registry import (
    UnknownModelError,
    create_model,
    create_model_from_config,
    get_config_class,
    list_models,
    make_config,
    model_summaries,
    register_model,
)

__all__ = [
    "ConfigError",
    "DenoiserModel",
    "InputShapeError",
    "ModelConfig",
    "ModelOutput",
    "UnknownModelError",
    "create_model",
    "create_model_from_config",
    "get_config_class",
    "list_models",
    "make_config",
    "model_summaries",
    "register_model",
]

__getattr__ = submodule_loader(__name__)
