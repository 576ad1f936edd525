"""One registry of architectures, by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import ModelConfig

if TYPE_CHECKING:
    from .base import DenoiserModel

_REGISTRY: dict[str, tuple[type[ModelConfig], type[DenoiserModel], str]] = {}


class UnknownModelError(KeyError):
    """No architecture of that name is registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def register_model(
    name: str, config_cls: type[ModelConfig], summary: str = ""
) -> Callable[[type[DenoiserModel]], type[DenoiserModel]]:
    """Class decorator that registers an architecture under ``name``.

    Parameters
    ----------
    name
        Registry key, lower case (e.g. ``"addunet"``).
    config_cls
        The architecture's :class:`ModelConfig` subclass.
    summary
        One line shown by ``model_summaries()`` and the ``info`` command.
    """

    def decorate(model_cls: type[DenoiserModel]) -> type[DenoiserModel]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        config_cls.architecture = name
        model_cls.architecture = name
        model_cls.config_class = config_cls
        _REGISTRY[name] = (config_cls, model_cls, summary or (model_cls.__doc__ or "").strip().split("\n")[0])
        return model_cls

    return decorate


def _ensure_loaded() -> None:
    # Importing the zoo registers every architecture.
    from . import zoo  # noqa: F401


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def model_summaries() -> dict[str, str]:
    """One-line description of each registered architecture."""
    _ensure_loaded()
    return {k: _REGISTRY[k][2] for k in sorted(_REGISTRY)}


def _lookup(name: str) -> tuple[type[ModelConfig], type[DenoiserModel], str]:
    _ensure_loaded()
    key = str(name).lower().replace("-", "_")
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(
            f"unknown architecture {name!r}.{hint} Known architectures: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[key]


def get_config_class(name: str) -> type[ModelConfig]:
    """The configuration class of architecture ``name``."""
    return _lookup(name)[0]


def make_config(name: str, values: dict[str, Any] | None = None, **overrides: Any) -> ModelConfig:
    """A validated configuration of architecture ``name``."""
    return get_config_class(name).from_dict(values, **overrides)


def create_model(name: str, **config: Any) -> DenoiserModel:
    """Build a freshly initialised model of a registered architecture.

    Parameters
    ----------
    name
        A name from :func:`list_models`.
    **config
        Settings of that architecture's config (see ``get_config_class(name).describe()``).

    Returns
    -------
    DenoiserModel
        A ``torch.nn.Module`` whose call returns a :class:`ModelOutput`.

    Raises
    ------
    UnknownModelError
        If no architecture has that name.
    ConfigError
        If a setting is unknown or out of range.
    """
    config_cls, model_cls, _ = _lookup(name)
    cfg = config_cls.from_dict(config)
    return model_cls(cfg)


def create_model_from_config(cfg: ModelConfig) -> DenoiserModel:
    """Build a model from an already validated config."""
    _, model_cls, _ = _lookup(cfg.architecture)
    return model_cls(cfg)
