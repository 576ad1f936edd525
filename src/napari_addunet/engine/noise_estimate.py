"""Blind estimate of the noise level of an image or a stack, in the data's own units.

Method: the robust median estimator of Donoho and Johnstone (1994) on the finest diagonal
wavelet band. The orthonormal Haar diagonal coefficient of each non-overlapping 2x2 block,
``d = (a - b - c + e) / 2``, has exactly the variance ``sigma**2`` of white noise, and
varies little on smooth image content, so

    sigma = median(|d|) / 0.6745

(0.6745 is the median of ``|N(0, 1)|``). Edges and fine texture raise the estimate a little;
for signal-dependent noise (Poisson-Gaussian) it is an overall level, close to the noise of
the typical pixel. The Readout widget shows it for a layer before and after denoising.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .axes import resolve_axes

MAD_TO_SIGMA = 0.6744897501960817
"""Median of ``|N(0, 1)|``: divides a median absolute deviation to give a standard deviation."""

MAX_PLANES = 32
"""Planes read at most (evenly spaced) from a stack, so a large stack costs a small read."""


def plane_sigma(plane: Any) -> float:
    """Noise standard deviation of one 2-D plane (NaN when it has fewer than 2x2 finite pixels).

    Blocks whose four pixels all equal the plane's minimum or maximum (padding, clipped
    background, saturation) carry no noise and are left out, unless nothing else is left.
    On quantised data (integers, or e.g. 8-bit values scaled to [0, 1]), whose coefficients
    are multiples of half a grey level, the median is interpolated within its bin, so the
    estimate is not stuck on a few values at low noise.

    Parameters
    ----------
    plane
        A 2-D array of any real dtype.
    """
    raw = np.asarray(plane)
    if raw.ndim != 2:
        raise ValueError(f"plane_sigma takes a 2-D plane, got shape {raw.shape}")
    h, w = (raw.shape[0] // 2) * 2, (raw.shape[1] // 2) * 2
    if h == 0 or w == 0:
        return math.nan
    x = raw[:h, :w].astype(np.float64)
    blocks = (x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2])
    d = (blocks[0] - blocks[1] - blocks[2] + blocks[3]) / 2.0
    keep = np.isfinite(d)
    if not keep.any():
        return math.nan
    finite = x[np.isfinite(x)]
    lo, hi = finite.min(), finite.max()
    flat = (blocks[0] == blocks[1]) & (blocks[0] == blocks[2]) & (blocks[0] == blocks[3])
    clipped = flat & ((blocks[0] == lo) | (blocks[0] == hi))
    if (keep & ~clipped).any():
        keep &= ~clipped
    d = np.abs(d[keep])
    if not d.any():
        return 0.0  # no variation at all
    step = 1.0 if raw.dtype.kind in "uib" else _quantum(finite)
    return float((_binned_median(d, step / 2) if step else np.median(d)) / MAD_TO_SIGMA)


MAX_LEVELS = 1 << 18
"""Most grey levels a float image may span and still count as quantised (e.g. uint8 / 255)."""


def _quantum(values: np.ndarray) -> float | None:
    """The step every value is a whole multiple of (1 for integers, 1/255 for 8-bit data
    scaled to [0, 1], ...), or None for data that are not on such a grid."""
    if np.all(values == np.round(values)):
        return 1.0
    levels = np.unique(values[:: max(1, values.size // (1 << 20))])
    if levels.size < 2:
        return None
    step = float(np.min(np.diff(levels)))
    span = float(levels[-1] - levels[0])
    if not step > 0 or span / step > MAX_LEVELS:
        return None
    k = values / step
    return step if bool(np.allclose(k, np.round(k), rtol=0, atol=1e-3)) else None


def _binned_median(values: np.ndarray, step: float) -> float:
    """Median of values on a grid of ``step``, each spread over its bin (a grouped median)."""
    # only the bins that hold values: memory follows the number of values, not the largest
    # one (a single saturated pixel of an int32 image would ask for 2^31 empty bins)
    bins, counts = np.unique(np.round(values / step).astype(np.int64), return_counts=True)
    # bin 0 holds |d| < step/2 (width step/2); bin k > 0 holds [(k - 1/2) step, (k + 1/2) step)
    edges_low = np.maximum((bins - 0.5) * step, 0.0)
    widths = np.where(bins == 0, step / 2, step)
    upto = np.cumsum(counts)
    below = upto - counts
    half = values.size / 2.0
    b = int(np.searchsorted(upto, half, side="left"))
    return float(edges_low[b] + (half - below[b]) / counts[b] * widths[b])


def estimate_sigma(data: Any, axes: str | None = None, rgb: bool | None = None) -> float:
    """Noise standard deviation of an image or stack, in the data's units.

    Parameters
    ----------
    data
        A numpy (or numpy-indexable) array: 2-D image, stack, RGB image...
    axes
        Its axis letters (``"YX"``, ``"ZYX"``, ``"YXC"`` ...); None infers them as the
        inference engine does (see :func:`~napari_addunet.engine.axes.infer_axes`).
    rgb
        napari's ``rgb`` flag, used only when ``axes`` is None.

    Returns
    -------
    float
        The median of the per-plane (and per-channel) estimates over at most
        :data:`MAX_PLANES` evenly spaced planes; NaN for an image with no finite 2x2 block.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> round(estimate_sigma(rng.normal(0.5, 0.1, (256, 256))), 2)
    0.1
    """
    planes = estimate_sigma_planes(data, axes, rgb)
    finite = planes[np.isfinite(planes)]
    return float(np.median(finite)) if finite.size else math.nan


def estimate_sigma_planes(data: Any, axes: str | None = None, rgb: bool | None = None) -> np.ndarray:
    """Per-plane noise estimates (flattened over T, Z and C), sampling at most :data:`MAX_PLANES` planes."""
    shape = tuple(int(s) for s in data.shape)
    if 0 in shape:
        raise ValueError(f"cannot estimate the noise of an empty array (shape {shape})")
    ax = resolve_axes(shape, axes, rgb)
    others = [a for a in ax if a not in "YX"]
    grid = [shape[ax.index(a)] for a in others]
    total = math.prod(grid)
    picks = _evenly_spaced(total, MAX_PLANES)
    out = np.empty(len(picks), dtype=np.float64)
    for k, flat in enumerate(picks):
        position = dict(zip(others, np.unravel_index(flat, grid) if grid else (), strict=True))
        index = tuple(int(position[a]) if a in position else slice(None) for a in ax)
        plane = np.asarray(data[index])
        if ax.index("Y") > ax.index("X"):
            plane = plane.T
        out[k] = plane_sigma(plane)
    return out


def _evenly_spaced(n: int, count: int) -> Sequence[int]:
    if n <= count:
        return range(n)
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, count)})
