"""Typed, bounded configuration objects for the model zoo.

Every architecture has one frozen dataclass of settings. Each field carries its
bounds in ``dataclasses.field(metadata=...)`` so that validation, command-line
help and the widgets' forms all read one source of truth.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A configuration field is unknown, of the wrong type or out of range."""


def setting(
    default: Any,
    *,
    ge: float | None = None,
    le: float | None = None,
    choices: Sequence[Any] | None = None,
    item_ge: float | None = None,
    item_le: float | None = None,
    item_odd: bool = False,
    min_len: int | None = None,
    max_len: int | None = None,
    doc: str = "",
) -> Any:
    """Declare a configuration field with its bounds.

    Parameters
    ----------
    default
        Default value (tuples for sequence fields).
    ge, le
        Inclusive lower and upper bounds of a numeric field.
    choices
        Allowed values of a categorical field.
    item_ge, item_le, item_odd
        Bounds applied to every item of a tuple field; ``item_odd`` requires odd items.
    min_len, max_len
        Length bounds of a tuple field.
    doc
        One-line description shown in help texts and widget tooltips.
    """
    meta = {
        "ge": ge,
        "le": le,
        "choices": tuple(choices) if choices is not None else None,
        "item_ge": item_ge,
        "item_le": item_le,
        "item_odd": item_odd,
        "min_len": min_len,
        "max_len": max_len,
        "doc": doc,
    }
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base class of every architecture's configuration.

    Subclasses are frozen dataclasses whose fields are declared with :func:`setting`.
    Instances are validated on construction; use :meth:`from_dict` to build one from
    user input with a clear message for unknown fields.
    """

    architecture: ClassVar[str] = ""

    in_channels: int = setting(1, ge=1, le=64, doc="number of input image channels")
    out_channels: int = setting(0, ge=0, le=64, doc="number of output channels (0: same as in_channels)")
    num_classes: int = setting(
        0, ge=0, le=10000, doc="classes of the optional classification head (0: no head)"
    )
    head_hidden: int = setting(64, ge=1, le=4096, doc="hidden units of the classification head")
    head_dropout: float = setting(0.0, ge=0.0, le=0.9, doc="dropout before the head's last layer")

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, _check_field(type(self), f, hints[f.name], value))
        self.check()

    # -- hooks -------------------------------------------------------------------------
    def check(self) -> None:
        """Cross-field validation; subclasses raise :class:`ConfigError`."""

    # -- derived -----------------------------------------------------------------------
    @property
    def output_channels(self) -> int:
        """Resolved number of output channels."""
        return self.out_channels or self.in_channels

    # -- conversion --------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> ModelConfig:
        """Build a validated config from a mapping and keyword overrides.

        Raises
        ------
        ConfigError
            For an unknown field (with the closest valid names) or an invalid value.
        """
        merged = {**(values or {}), **overrides}
        check_known(merged, cls.field_names(), f"setting {{key!r}} for architecture {cls.architecture!r}")
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> ModelConfig:
        """A validated copy with some fields changed."""
        return type(self).from_dict(self.to_dict(), **changes)

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Field descriptions (name, type, default, bounds, doc) for forms and help."""
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            row = {"name": f.name, "type": _type_name(hints[f.name]), "default": f.default}
            row.update({k: v for k, v in f.metadata.items() if v is not None and v is not False and v != ""})
            row.setdefault("doc", "")
            rows.append(row)
        return rows


def check_known(values: Mapping[str, Any], names: Sequence[str], what: str) -> None:
    """Raise :class:`ConfigError` for the first key of ``values`` not in ``names``.

    ``what`` describes the key in the message; ``{key!r}`` in it is filled in.
    """
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, list(names), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown {what.format(key=key)}.{hint} Valid settings: {', '.join(names)}.")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "choice"
    if origin is tuple:
        return "tuple[int]"
    return getattr(tp, "__name__", str(tp))


def _check_field(cls: type, f: dataclasses.Field, tp: Any, value: Any) -> Any:
    where = f"{cls.architecture}.{f.name}"
    meta = f.metadata
    origin = typing.get_origin(tp)
    if origin is tuple:
        if isinstance(value, str):
            try:
                # "9,7,5", "9 7 5" or the schedule notation "9-7-5" (a dash between digits only)
                parts = re.split(r"\s*,\s*|\s+|(?<=\d)-(?=\d)", value.strip())
                value = tuple(int(v) for v in parts if v.strip())
            except ValueError as exc:
                raise ConfigError(f"{where} must be a sequence of integers, got {value!r}") from exc
        if not isinstance(value, Sequence):
            raise ConfigError(f"{where} must be a sequence of integers, got {value!r}")
        items = []
        for v in value:
            if isinstance(v, bool) or not _is_int(v):
                raise ConfigError(f"{where} must hold integers, got {v!r}")
            items.append(int(v))
        value = tuple(items)
        if meta.get("min_len") is not None and len(value) < meta["min_len"]:
            raise ConfigError(f"{where} needs at least {meta['min_len']} items, got {len(value)}")
        if meta.get("max_len") is not None and len(value) > meta["max_len"]:
            raise ConfigError(f"{where} allows at most {meta['max_len']} items, got {len(value)}")
        for v in value:
            if meta.get("item_ge") is not None and v < meta["item_ge"]:
                raise ConfigError(f"{where} items must be >= {meta['item_ge']}, got {v}")
            if meta.get("item_le") is not None and v > meta["item_le"]:
                raise ConfigError(f"{where} items must be <= {meta['item_le']}, got {v}")
            if meta.get("item_odd") and v % 2 == 0:
                raise ConfigError(f"{where} items must be odd (symmetric 'same' padding), got {v}")
        return value
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be True or False, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not _is_int(value):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        value = int(value)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy reals too
            raise ConfigError(f"{where} must be a number, got {value!r}")
        value = float(value)
        if value != value:
            raise ConfigError(f"{where} must be a number, got NaN")
    if meta.get("ge") is not None and value < meta["ge"]:
        raise ConfigError(f"{where} must be >= {meta['ge']}, got {value}")
    if meta.get("le") is not None and value > meta["le"]:
        raise ConfigError(f"{where} must be <= {meta['le']}, got {value}")
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ConfigError(f"{where} must be one of {meta['choices']}, got {value!r}")
    return value


def _is_int(v: Any) -> bool:
    try:
        import numpy as np

        if isinstance(v, np.integer):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())
