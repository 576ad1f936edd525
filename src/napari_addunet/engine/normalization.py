"""Intensity normalisation: the way the checkpoint says it was trained, then back.

A model's ``metadata["normalization"]`` is a dict with a ``"method"``:

``{"method": "percentile", "low": 0.1, "high": 99.9}``
    The ``low`` and ``high`` percentiles of the input map to 0 and 1.
``{"method": "range", "low": 0, "high": 255}``
    A fixed input range maps to 0 and 1. Without ``low``/``high`` the dtype's range is used
    (integers: their full range, floats: 0..1).
``{"method": "none"}``
    Values go to the network unchanged.

Without that metadata the default is :data:`DEFAULT_NORMALIZATION`, percentiles 0.1 and
99.9: robust to a few hot or dead pixels, unlike the plain minimum and maximum.

The mapping is affine (``(x - offset) / scale``), values are not clipped, and the
network's output is mapped back with the same numbers, so the result is in the input's
intensity units. The result is always float32.

Statistics are computed once per call, over the whole stack (all T and Z planes pooled),
per channel when channels are processed one by one and jointly when the model takes all
channels together. Arrays of up to :data:`SAMPLE_SIZE` values per channel are used in
full; larger ones through a deterministic strided subsample (at most 32 evenly spaced
planes, every ``s``-th row and column), so the statistics of a stack larger than memory
cost a small read and numpy and dask inputs get identical numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .axes import PlaneLayout
from .mapped import release_mapped_pages

DEFAULT_NORMALIZATION: dict[str, Any] = {"method": "percentile", "low": 0.1, "high": 99.9}
"""Used when neither the caller nor the model's metadata says otherwise."""

METHODS = ("percentile", "range", "none")
NAN_POLICIES = ("raise", "fill", "mask")
SAMPLE_SIZE = 2**22
"""Values per channel above which percentiles come from a strided subsample."""
SAMPLE_PLANES = 32


#: The largest finite float32, the type of every result.
F32_MAX = float(np.finfo(np.float32).max)


class NormalizationError(ValueError):
    """A normalisation setting is invalid, or the data cannot be normalised."""


class NonFiniteError(ValueError):
    """The input holds NaN or infinite values and ``nan_policy="raise"``."""


class DTypeError(TypeError):
    """The input's dtype cannot be denoised (bool, complex, non-numeric)."""


# -- dtypes -----------------------------------------------------------------------------------
def check_dtype(dtype: Any) -> np.dtype:
    """Return ``dtype`` as a numpy dtype, or raise :class:`DTypeError` if it is not a real number type."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        raise DTypeError(
            "boolean arrays (masks) cannot be denoised; convert first if that is really "
            "meant, e.g. data.astype('uint8')"
        )
    if dt.kind == "c":
        raise DTypeError(
            f"complex arrays ({dt}) are not supported; denoise the magnitude (np.abs) or the "
            "real and imaginary parts separately"
        )
    if dt.kind not in "uif":
        raise DTypeError(f"arrays of dtype {dt} cannot be denoised; use a numeric (integer or float) array")
    return dt


def work_dtype(dtype: np.dtype) -> type[np.floating]:
    """float64 for float64 and integers wider than 16 bits (exact), float32 otherwise."""
    dt = np.dtype(dtype)
    if (dt.kind == "f" and dt.itemsize >= 8) or (dt.kind in "ui" and dt.itemsize > 2):
        return np.float64  # (any byte order: a big-endian float64 is float64 too)
    return np.float32


# -- settings ---------------------------------------------------------------------------------
def parse_normalization(spec: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Validate a normalisation setting and fill in defaults.

    Parameters
    ----------
    spec
        A dict as described in the module documentation, a method name (``"percentile"``,
        ``"range"``, ``"none"``), or None for :data:`DEFAULT_NORMALIZATION`.

    Returns
    -------
    dict
        ``{"method": ..., "low": ..., "high": ...}`` (``low``/``high`` None where unused).

    Raises
    ------
    NormalizationError
        For an unknown method or invalid bounds.
    """
    if spec is None:
        spec = DEFAULT_NORMALIZATION
    if isinstance(spec, str):
        spec = {"method": spec}
    if not isinstance(spec, Mapping):
        raise NormalizationError(
            f"normalization must be a dict such as {DEFAULT_NORMALIZATION} or a method name, "
            f"got {type(spec).__name__}"
        )
    unknown = [str(k) for k in spec if k not in ("method", "low", "high")]
    if unknown:
        raise NormalizationError(
            f"unknown normalization key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            "the keys are 'method', 'low' and 'high'"
        )
    method = str(spec.get("method", "percentile")).lower()
    if method not in METHODS:
        raise NormalizationError(f"unknown normalization method {method!r}; use one of {', '.join(METHODS)}")
    low, high = spec.get("low"), spec.get("high")
    if method == "none":
        return {"method": "none", "low": None, "high": None}
    if method == "percentile":
        low = DEFAULT_NORMALIZATION["low"] if low is None else low
        high = DEFAULT_NORMALIZATION["high"] if high is None else high
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, np.generic) and np.dtype(type(v)).kind in "uif":
            v = v.item()  # numpy scalars (np.float32(1)) are numbers too
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise NormalizationError(f"normalization {name!r} must be a finite number, got {v!r}")
        low, high = (v, high) if name == "low" else (low, v)
    if method == "percentile":
        if not 0 <= low < high <= 100:
            raise NormalizationError(
                f"percentile normalization needs 0 <= low < high <= 100, got low={low}, high={high}"
            )
    elif low is not None and high is not None and not low < high:
        raise NormalizationError(f"range normalization needs low < high, got low={low}, high={high}")
    return {
        "method": method,
        "low": None if low is None else float(low),
        "high": None if high is None else float(high),
    }


def model_normalization(model: Any) -> dict[str, Any]:
    """The normalisation recorded in a model's metadata, or the default."""
    meta = getattr(model, "metadata", None) or {}
    return parse_normalization(meta.get("normalization"))


# -- the affine map ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Normalizer:
    """Affine intensity map, one ``(offset, scale)`` per group.

    A group is one channel when channels are processed one by one, else the whole array
    (one group). ``fill`` holds the median of finite values per group (used by
    ``nan_policy="fill"``/``"mask"``).
    """

    method: str
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    fill: tuple[float, ...]

    def forward(self, x: np.ndarray, group: int = 0) -> np.ndarray:
        """``(x - offset) / scale`` as float32 (computed in float64 for wide input types)."""
        wd = work_dtype(x.dtype)
        if self.method != "none" and self._extreme(group):
            wd = np.float64  # float32 numbers near its range (or subnormal spreads) would overflow
        y = np.asarray(x, dtype=wd)
        if self.method != "none":
            y = (y - wd(self.offset[group])) * wd(1.0 / self.scale[group])
        elif wd is np.float64 and y.size and np.nanmax(np.abs(np.where(np.isfinite(y), y, 0))) > F32_MAX:
            raise NormalizationError(
                f"the input reaches values beyond float32's range ({F32_MAX:.3g}), which the model "
                "computes in, and normalization is 'none'; scale the input down or normalise it"
            )
        return y.astype(np.float32, copy=False)

    def _extreme(self, group: int) -> bool:
        """Whether this group's numbers overflow float32 arithmetic (range near 3.4e38, or a
        spread so small that its inverse exceeds it)."""
        scale, offset = float(self.scale[group]), float(self.offset[group])
        return scale > F32_MAX / 4 or abs(offset) > F32_MAX / 4 or 1.0 / scale > F32_MAX / 4

    def inverse(self, y: np.ndarray, group: int = 0, wide: bool = False) -> np.ndarray:
        """Map network output back to input units, float32."""
        if self.method == "none":
            return np.asarray(y, dtype=np.float32)
        wd = np.float64 if wide or self._extreme(group) else np.float32
        out = np.asarray(y, dtype=wd) * wd(self.scale[group]) + wd(self.offset[group])
        if wd is np.float64 and out.size and np.nanmax(np.abs(out)) > F32_MAX:
            raise NormalizationError(
                f"the result reaches {np.nanmax(np.abs(out)):.3g}, beyond float32's range "
                f"({F32_MAX:.3g}), which the result is stored in; scale the input down first"
            )
        return out.astype(np.float32, copy=False)


def group_of(layout: PlaneLayout, position: dict[str, int]) -> int:
    """The normaliser group of a plane position."""
    return 0 if layout.joint_channels or "C" not in layout.axes else position["C"]


def num_groups(layout: PlaneLayout) -> int:
    return 1 if layout.joint_channels or "C" not in layout.axes else layout.channels


# -- statistics -------------------------------------------------------------------------------
def _stack_positions(layout: PlaneLayout) -> list[dict[str, int]]:
    letters = layout.stack_axes
    grid = [layout.size(a) for a in letters]
    out = []
    for flat in range(math.prod(grid)):
        pos = dict(zip(letters, np.unravel_index(flat, grid) if grid else (), strict=True))
        out.append({k: int(v) for k, v in pos.items()})
    return out


def sample_plan(layout: PlaneLayout, budget: int = SAMPLE_SIZE) -> tuple[list[dict[str, int]], int]:
    """Which T/Z planes and which pixel step the statistics read (deterministic from the shape)."""
    positions = _stack_positions(layout)
    n, px = len(positions), layout.height * layout.width
    if n * px <= budget:
        return positions, 1
    count = min(n, SAMPLE_PLANES)
    chosen = sorted({int(round(v)) for v in np.linspace(0, n - 1, count)})
    per_plane = budget / len(chosen)
    step = max(1, math.ceil(math.sqrt(px / per_plane)))
    return [positions[i] for i in chosen], step


def _sample_index(layout: PlaneLayout, pos: dict[str, int], channel: int | None, step: int) -> tuple:
    idx: list[Any] = []
    for a in layout.axes:
        if a in pos:
            idx.append(pos[a])
        elif a == "C":
            idx.append(slice(None) if channel is None else channel)
        else:
            idx.append(slice(None, None, step))
    return tuple(idx)


def read_sample(data: Any, layout: PlaneLayout, budget: int = SAMPLE_SIZE) -> list[np.ndarray]:
    """Flat float64 samples of the data, one array per normaliser group."""
    positions, step = sample_plan(layout, budget)
    groups = num_groups(layout)
    pieces: list[Any] = []
    for g in range(groups):
        channel = None if groups == 1 else g
        for pos in positions:
            pieces.append(data[_sample_index(layout, pos, channel, step)])
    if _is_dask(data):
        import dask

        pieces = list(dask.compute(*pieces))
    values = [np.asarray(p) for p in pieces]
    per = len(positions)
    samples = [
        np.concatenate([v.ravel().astype(np.float64, copy=False) for v in values[g * per : (g + 1) * per]])
        for g in range(groups)
    ]
    for v in values:  # the samples are copies: a memory-mapped input's pages can go
        release_mapped_pages(v)
    return samples


def percentile_bounds(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of finite ``values``; the minimum and maximum when
    those coincide (fewer than ``100 - high`` percent of the values stand out: sparse spots on
    a flat background, a mostly saturated frame), so that the spots still map into [0, 1]."""
    return percentiles_and_bounds(values, low, high)[1]


def percentiles_and_bounds(
    values: np.ndarray, low: float, high: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The percentiles themselves and the bounds :func:`percentile_bounds` maps by."""
    p = tuple(float(v) for v in np.percentile(values, [low, high]))
    bounds = p if p[1] > p[0] else (float(np.min(values)), float(np.max(values)))
    return (p[0], p[1]), (bounds[0], bounds[1])


def _is_dask(data: Any) -> bool:
    return type(data).__module__.startswith("dask.") and hasattr(data, "dask")


def compute_normalizer(
    data: Any, layout: PlaneLayout, spec: Mapping[str, Any] | str | None, need_fill: bool = False
) -> Normalizer:
    """Compute the :class:`Normalizer` of an array.

    Parameters
    ----------
    data
        numpy, memory-mapped, zarr or dask array.
    layout
        Its :class:`~napari_addunet.engine.axes.PlaneLayout`.
    spec
        Normalisation setting (see :func:`parse_normalization`).
    need_fill
        Also compute the median of finite values (for ``nan_policy="fill"``/``"mask"``).
    """
    cfg = parse_normalization(spec)
    dtype = check_dtype(data.dtype)
    groups = num_groups(layout)
    needs_sample = cfg["method"] == "percentile" or need_fill
    samples: list[np.ndarray] = read_sample(data, layout) if needs_sample else []
    finite = [s[np.isfinite(s)] for s in samples]
    if needs_sample:
        for g, f in enumerate(finite):
            if f.size == 0:
                which = f" of channel {g}" if groups > 1 else ""
                raise NonFiniteError(
                    f"the input{which} holds no finite values (all NaN or Inf); nothing to denoise"
                )
    fill = tuple(float(np.median(f)) for f in finite) if need_fill else (0.0,) * groups
    if cfg["method"] == "none":
        return Normalizer("none", (0.0,) * groups, (1.0,) * groups, fill)
    if cfg["method"] == "range":
        low, high = cfg["low"], cfg["high"]
        defaulted = [n for n in ("low", "high") if cfg[n] is None]
        if low is None or high is None:
            if dtype.kind in "ui":
                info = np.iinfo(dtype)
                dlow, dhigh = float(info.min), float(info.max)
            else:
                dlow, dhigh = 0.0, 1.0
            low = dlow if low is None else low
            high = dhigh if high is None else high
        if not low < high:
            note = (
                f" ({' and '.join(defaulted)} not given: the {dtype} range, 0..1 for floats, was used)"
                if defaulted
                else ""
            )
            raise NormalizationError(
                f"range normalization needs low < high, got low={low}, high={high}{note}"
            )
        return Normalizer("range", (low,) * groups, (high - low,) * groups, fill)
    offsets, scales = [], []
    for f in finite:
        lo, hi = percentile_bounds(f, cfg["low"], cfg["high"])
        offsets.append(lo)
        # A constant image has no spread: shift only, so the output is still exact.
        scales.append(hi - lo if hi > lo else 1.0)
    return Normalizer("percentile", tuple(offsets), tuple(scales), fill)


# -- NaN / Inf --------------------------------------------------------------------------------
def nonfinite_in(block: np.ndarray) -> tuple[int, tuple[int, ...] | None]:
    """Number of NaN/Inf values in a block and the index of the first one."""
    if block.dtype.kind != "f":
        return 0, None
    bad = ~np.isfinite(block)
    count = int(np.count_nonzero(bad))
    if count == 0:
        return 0, None
    first = np.unravel_index(int(np.argmax(bad.ravel())), block.shape)
    return count, tuple(int(i) for i in first)


def format_index(axes: str, index: tuple[int, ...]) -> str:
    return "(" + ", ".join(f"{a.lower()}={i}" for a, i in zip(axes, index, strict=True)) + ")"


def nonfinite_message(
    count: int, total: int | None, axes: str, first: tuple[int, ...], where: str = ""
) -> str:
    of = f" of {total}" if total else ""
    return (
        f"the input{where} holds {count}{of} NaN/Inf value(s), the first at {format_index(axes, first)}; "
        "clean the data, or pass nan_policy='fill' (replace them by the median of the finite "
        "values before denoising) or nan_policy='mask' (the same, then NaN again at those "
        "pixels in the result)"
    )


def scan_nonfinite(data: Any, layout: PlaneLayout) -> Iterator[tuple[int, int, tuple[int, ...] | None]]:
    """Scan an array plane by plane for NaN/Inf.

    Yields ``(planes_done, count_so_far, first_index_so_far)`` after each T/Z plane so a
    caller can report progress; the first index is in the array's own axis order.
    """
    if np.dtype(data.dtype).kind != "f":
        return
    axes = layout.axes
    count, first = 0, None
    for done, pos in enumerate(_stack_positions(layout), start=1):
        block = np.asarray(data[tuple(pos.get(a, slice(None)) for a in axes)])
        c, f = nonfinite_in(block)
        release_mapped_pages(block)  # read once here; the plane loop maps it again when needed
        if c and first is None:
            kept = iter(f)
            first = tuple(pos[a] if a in pos else next(kept) for a in axes)
        count += c
        yield done, count, first


def fill_nonfinite(x: np.ndarray, value: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Replace NaN/Inf by ``value``; return the filled copy and the mask (None if all finite)."""
    if x.dtype.kind != "f":
        return x, None
    bad = ~np.isfinite(x)
    if not bad.any():
        return x, None
    out = np.array(x, copy=True)
    out[bad] = value
    return out, bad
