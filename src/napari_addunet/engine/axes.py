"""Axis names of an image array and the mapping of its data to 2-D planes.

The engine works on 2-D planes: every array is seen through the axis letters

``T`` (time), ``Z`` (depth), ``C`` (channels), ``Y`` and ``X``,

in any order and any subset that contains ``Y`` and ``X``. ``T`` and ``Z`` are always
processed plane by plane (the network is 2-D). ``C`` is either fed to the network as its
input channels (when the model was trained on exactly that many channels) or processed
channel by channel.

Inference policy (:func:`infer_axes`), following napari's conventions
---------------------------------------------------------------------
* 2-D arrays are ``YX``.
* A last axis of length 3 or 4 is RGB(A) (``YXC``, ``ZYXC``) unless ``rgb=False``; this is
  napari's own guess for ``rgb=None``.
* Other 3-D arrays are a stack ``ZYX`` when the first axis has length 1 or at least 5.
  A first axis of length 2, 3 or 4 could be slices or channels; that is refused with a
  message asking for ``axes="ZYX"`` or ``axes="CYX"``. (Time and depth are processed
  identically, plane by plane with one intensity normalisation for the whole stack, so a
  time series called ``ZYX`` gives exactly the ``TYX`` result; channels are normalised per
  channel, which is why ``C`` is never guessed.)
* 4-D and 5-D arrays that are not RGB(A) are ambiguous (``TZYX``, ``CZYX``, ``ZCYX`` ...)
  and need ``axes=``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np

LETTERS = "TZCYX"
"""Allowed axis letters, in the engine's canonical order."""

_NAMES = {"T": "time", "Z": "depth", "C": "channel", "Y": "height", "X": "width"}


class AxesError(ValueError):
    """Axis names are missing, invalid or ambiguous for an array's shape."""


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def parse_axes(axes: str, shape: Sequence[int]) -> str:
    """Validate axis letters against an array shape.

    Parameters
    ----------
    axes
        One letter per array dimension from ``T``, ``Z``, ``C``, ``Y``, ``X`` (any case, any
        order), e.g. ``"ZYX"``, ``"YXC"``, ``"TZCYX"``.
    shape
        The array's shape.

    Returns
    -------
    str
        The axes in upper case.

    Raises
    ------
    AxesError
        If a letter is unknown or repeated, ``Y`` or ``X`` is missing, or the number of
        letters differs from the number of dimensions.
    """
    if not isinstance(axes, str):
        raise AxesError(f"axes must be a string such as 'ZYX', got {type(axes).__name__}")
    ax = axes.strip().upper()
    shape = tuple(int(s) for s in shape)
    bad = sorted({a for a in ax if a not in LETTERS})
    if bad:
        hint = " ('S' for samples/RGB is called 'C' here)" if "S" in bad else ""
        raise AxesError(
            f"axes {axes!r} has unknown letter(s) {', '.join(repr(b) for b in bad)}; "
            f"use T (time), Z (depth), C (channel), Y and X{hint}"
        )
    repeated = sorted({a for a in ax if ax.count(a) > 1})
    if repeated:
        raise AxesError(
            f"axes {axes!r} repeats {', '.join(repr(r) for r in repeated)}; each axis appears once"
        )
    missing = [a for a in "YX" if a not in ax]
    if missing:
        raise AxesError(f"axes {axes!r} must contain Y and X (missing {' and '.join(missing)})")
    if len(ax) != len(shape):
        raise AxesError(
            f"axes {axes!r} names {len(ax)} dimension(s) but the array has {len(shape)}, shape "
            f"{_shape_text(shape)}; give one letter per dimension"
        )
    return ax


def infer_axes(shape: Sequence[int], rgb: bool | None = None) -> str:
    """Guess the axes of an array from its shape, the way napari reads layers.

    Parameters
    ----------
    shape
        The array's shape.
    rgb
        napari's ``rgb`` flag of the layer: True (last axis is RGB/RGBA), False (it is not),
        or None (guess: last axis of length 3 or 4 is RGB/RGBA).

    Returns
    -------
    str
        Axis letters, e.g. ``"YX"``, ``"ZYX"``, ``"YXC"``, ``"ZYXC"``.

    Raises
    ------
    AxesError
        If the shape is ambiguous; the message says which ``axes=`` values fit. See the
        module documentation for the policy.
    """
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd < 2:
        raise AxesError(f"an image needs at least 2 dimensions (Y, X); got shape {_shape_text(shape)}")
    if nd > 5:
        raise AxesError(
            f"arrays with more than 5 dimensions are not supported (shape {_shape_text(shape)}); "
            "the engine knows T, Z, C, Y and X"
        )
    colour = shape[-1] in (3, 4) and nd >= 3
    if rgb is True and not colour:
        raise AxesError(
            f"rgb=True needs a last axis of length 3 (RGB) or 4 (RGBA) and at least 3 dimensions; "
            f"shape is {_shape_text(shape)}"
        )
    is_rgb = colour and rgb is not False
    if nd == 2:
        return "YX"
    if nd == 3:
        if is_rgb:
            return "YXC"
        n = shape[0]
        if n == 1 or n >= 5:
            return "ZYX"
        return _ambiguous(
            shape,
            f"the first axis has length {n}: slices (axes='ZYX' or 'TYX') or channels (axes='CYX')?",
        )
    if nd == 4 and is_rgb:
        n = shape[0]
        if n == 1 or n >= 5:
            return "ZYXC"
        return _ambiguous(
            shape, f"the first axis has length {n}: slices (axes='ZYXC' or 'TYXC') or something else?"
        )
    options = {4: "'TZYX', 'CZYX', 'ZCYX' or 'TCYX'", 5: "'TZCYX', 'TCZYX' or 'CTZYX'"}[nd]
    return _ambiguous(shape, f"{nd}-D data could be {options}")


def _ambiguous(shape: tuple[int, ...], why: str) -> str:
    raise AxesError(
        f"cannot tell the axes of an array of shape {_shape_text(shape)}: {why}"
        f"{'' if why.endswith(('.', '?')) else '.'} Pass axes= explicitly (letters T, Z, C, Y, X, one per dimension)."
    )


def resolve_axes(shape: Sequence[int], axes: str | None = None, rgb: bool | None = None) -> str:
    """:func:`parse_axes` when ``axes`` is given, else :func:`infer_axes`."""
    if axes is None:
        return infer_axes(shape, rgb=rgb)
    return parse_axes(axes, shape)


@dataclasses.dataclass(frozen=True)
class PlaneLayout:
    """How an array with named axes is cut into the 2-D planes the network sees.

    Build it with :func:`plane_layout`. A *plane* is one ``(channels, Y, X)`` input of the
    network: ``channels`` is the array's channel count when the model takes them together
    (:attr:`joint_channels`) and 1 otherwise.

    Attributes
    ----------
    axes
        The array's axes, e.g. ``"TZYX"``.
    shape
        The array's shape.
    joint_channels
        True when all channels go through the network together.
    """

    axes: str
    shape: tuple[int, ...]
    joint_channels: bool

    def size(self, letter: str) -> int:
        """Length of axis ``letter`` (1 if absent)."""
        return self.shape[self.axes.index(letter)] if letter in self.axes else 1

    @property
    def height(self) -> int:
        return self.size("Y")

    @property
    def width(self) -> int:
        return self.size("X")

    @property
    def channels(self) -> int:
        """Number of channels in the data (1 without a ``C`` axis)."""
        return self.size("C")

    @property
    def plane_channels(self) -> int:
        """Channels of one network input."""
        return self.channels if self.joint_channels else 1

    @property
    def plane_axes(self) -> str:
        """Axes enumerating the planes, canonical order (e.g. ``"TZ"`` or ``"TZC"``)."""
        letters = "TZ" if self.joint_channels else "TZC"
        return "".join(a for a in letters if a in self.axes)

    @property
    def plane_grid(self) -> tuple[int, ...]:
        """Lengths of :attr:`plane_axes`; ``probabilities.reshape(plane_grid + (k,))`` works."""
        return tuple(self.size(a) for a in self.plane_axes)

    @property
    def num_planes(self) -> int:
        return math.prod(self.plane_grid)

    @property
    def stack_axes(self) -> str:
        """Axes over which intensities are pooled for normalisation (all but channels)."""
        return "".join(a for a in "TZ" if a in self.axes)

    def plane_positions(self) -> Iterator[dict[str, int]]:
        """Positions ``{"T": t, "Z": z, "C": c}`` of every plane, in C order of :attr:`plane_axes`."""
        letters = self.plane_axes
        for idx in itertools.product(*(range(n) for n in self.plane_grid)):
            yield dict(zip(letters, idx, strict=True))

    def index(self, position: dict[str, int]) -> tuple[int | slice, ...]:
        """Index into the array (its own axis order) selecting one plane's data."""
        return tuple(position[a] if a in position else slice(None) for a in self.axes)

    def _kept_axes(self, position: dict[str, int]) -> str:
        return "".join(a for a in self.axes if a not in position)

    def to_plane(self, block: np.ndarray, position: dict[str, int]) -> np.ndarray:
        """Reorder ``data[index(position)]`` to ``(plane_channels, Y, X)``."""
        kept = self._kept_axes(position)
        target = "CYX" if "C" in kept else "YX"
        arr = np.transpose(block, [kept.index(a) for a in target])
        return arr if "C" in kept else arr[None]

    def from_plane(self, plane: np.ndarray, position: dict[str, int]) -> np.ndarray:
        """Inverse of :meth:`to_plane`: ``(plane_channels, Y, X)`` to the order of ``data[index]``."""
        kept = self._kept_axes(position)
        source = "CYX" if "C" in kept else "YX"
        arr = plane if "C" in kept else plane[0]
        return np.transpose(arr, [source.index(a) for a in kept])

    def describe(self, position: dict[str, int]) -> str:
        """Human-readable plane name, e.g. ``"t=2 z=5"``."""
        return " ".join(f"{a.lower()}={position[a]}" for a in self.plane_axes) or "image"


def plane_layout(
    shape: Sequence[int], axes: str, model_in_channels: int = 1, model_out_channels: int | None = None
) -> PlaneLayout:
    """Decide how channels are fed to a model and return the :class:`PlaneLayout`.

    Parameters
    ----------
    shape
        The array's shape.
    axes
        Validated axes (see :func:`parse_axes`).
    model_in_channels, model_out_channels
        The model's input and output channels (``out`` defaults to ``in``).

    Raises
    ------
    AxesError
        If the model needs several channels and the data has a different number, or the
        model's output cannot be put back in the input's layout.
    """
    shape = tuple(int(s) for s in shape)
    axes = parse_axes(axes, shape)
    out_ch = model_in_channels if model_out_channels is None else model_out_channels
    channels = shape[axes.index("C")] if "C" in axes else 1
    if model_in_channels == 1:
        joint = False
    elif channels == model_in_channels:
        joint = True
    else:
        where = f"axis C of axes {axes!r}" if "C" in axes else f"no C axis in axes {axes!r}"
        raise AxesError(
            f"the model takes {model_in_channels} input channels but the data has {channels} "
            f"({where}, shape {_shape_text(shape)}); give data with {model_in_channels} channels "
            "or use a single-channel model"
        )
    if out_ch != (model_in_channels if joint else 1):
        raise AxesError(
            f"the model maps {model_in_channels} channel(s) to {out_ch}; the engine returns "
            "arrays shaped like the input and needs as many output as input channels"
        )
    return PlaneLayout(axes=axes, shape=shape, joint_channels=joint)
