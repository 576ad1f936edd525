"""Dask input: a lazy result computed block by block.

The input is rechunked to one T/Z plane per block (all channels in a block when the model
takes them together, one channel per block otherwise). Y and X stay whole when they
already are; otherwise blocks are enlarged to at least one tile, aligned to the model's
``size_multiple``, and extended by ``context`` pixels (rounded up to ``size_multiple``)
from their neighbours with ``map_overlap``, so each block sees everything its pixels
depend on and the result equals the numpy path up to float rounding. The normalisation is
computed once beforehand (see :mod:`~napari_addunet.engine.normalization`), never per
block. Each block runs the same tile loop as numpy input.

The block function holds the model and is picklable, so the graph also runs on a
``dask.distributed`` cluster; a worker process moves its copy of the model to the device
it resolves itself.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import numpy as np

from .axes import PlaneLayout
from .normalization import Normalizer, format_index, nonfinite_in, nonfinite_message
from .runtime import Settings, plane_loop


def is_dask_array(data: Any) -> bool:
    """Whether ``data`` is a dask array (without importing dask when it is not)."""
    return type(data).__module__.startswith("dask.") and hasattr(data, "dask") and hasattr(data, "chunks")


class _Sliced:
    """An array that ``dask.array.from_array`` reads by slicing, never copying it whole.

    dask (since 2024.12) copies every array-like it is given, so ``da.from_array`` on a memory
    map reads the whole file into memory at once. This wrapper has no ``copy`` and no array
    protocol, so dask takes it as a sliceable source: each block is ``np.asarray(array[index])``,
    a view of the map that the plane loop copies and then gives back (``engine/mapped.py``).
    """

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = array.ndim

    def __getitem__(self, index: Any) -> np.ndarray:
        return self._array[index]


def lazy_source(data: Any, chunks: tuple[int, ...]) -> Any:
    """A dask array over a numpy array or memory map, read block by block (not copied whole)."""
    import dask.array as da

    source = _Sliced(data) if isinstance(data, np.ndarray) else data
    return da.from_array(
        source,
        chunks=chunks,
        name=f"addunet-input-{uuid.uuid4().hex}",
        meta=np.empty((0,) * len(chunks), dtype=data.dtype),
    )


def _check_finite_block(block: np.ndarray, axes: str = "", block_info: Any = None) -> np.ndarray:
    count, first = nonfinite_in(block)
    if count:
        origin = [0] * block.ndim
        if block_info and 0 in block_info:
            origin = [lo for lo, _ in block_info[0]["array-location"]]
        where = tuple(o + i for o, i in zip(origin, first, strict=True))
        region = ", ".join(
            f"{a.lower()}={lo}:{lo + n}" for a, lo, n in zip(axes, origin, block.shape, strict=True)
        )
        from .normalization import NonFiniteError

        raise NonFiniteError(
            nonfinite_message(count, block.size, axes, where, where=f" (dask block {region})")
            + f"; found while computing the lazy result, first at {format_index(axes, where)}"
        )
    return block


@dataclasses.dataclass
class BlockDenoiser:
    """The function mapped over dask blocks: denoise one block of planes.

    Attributes
    ----------
    settings
        Model and tile settings.
    axes
        Axes of the blocks (without ``C`` when channels were split).
    joint_channels
        Whether blocks carry all channels to the model together.
    normalizer
        One-group normaliser of this array (or this channel).
    token
        Unique name used by dask instead of hashing the model.
    """

    settings: Settings
    axes: str
    joint_channels: bool
    normalizer: Normalizer
    token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

    def __dask_tokenize__(self) -> str:
        return self.token

    def __call__(self, block: np.ndarray, block_info: Any = None) -> np.ndarray:
        block = np.asarray(block)
        layout = PlaneLayout(self.axes, tuple(block.shape), self.joint_channels)
        out = np.empty(block.shape, dtype=np.float32)
        runner = self.settings.make_runner(tail=_tail(self.axes, block_info))
        for _ in plane_loop(self.settings, runner, block, layout, self.normalizer, out):
            pass
        return out


def _tail(axes: str, block_info: Any) -> tuple[int, int]:
    """Pixels of the whole array beyond this block's bottom and right edges (0 if unknown)."""
    if not block_info or 0 not in block_info:
        return (0, 0)
    info = block_info[0]
    ends = [stop for _, stop in info["array-location"]]
    shape = info["shape"]
    return (shape[axes.index("Y")] - ends[axes.index("Y")], shape[axes.index("X")] - ends[axes.index("X")])


def _group_normalizer(normalizer: Normalizer, group: int) -> Normalizer:
    return Normalizer(
        normalizer.method, (normalizer.offset[group],), (normalizer.scale[group],), (normalizer.fill[group],)
    )


def denoise_lazy(data: Any, layout: PlaneLayout, normalizer: Normalizer, settings: Settings) -> Any:
    """Build the lazy, block-wise denoised dask array (float32, the input's shape and axes)."""
    import dask.array as da

    axes = layout.axes
    if settings.nan_policy == "raise" and np.dtype(data.dtype).kind == "f":
        data = data.map_blocks(
            _check_finite_block, axes=axes, dtype=data.dtype, name=f"check-finite-{uuid.uuid4().hex}"
        )
    if "C" in axes and not layout.joint_channels:
        c = axes.index("C")
        sub_axes = axes.replace("C", "")
        parts = []
        for ch in range(layout.channels):
            index = tuple(ch if i == c else slice(None) for i in range(len(axes)))
            parts.append(_lazy_one(data[index], sub_axes, False, _group_normalizer(normalizer, ch), settings))
        return da.stack(parts, axis=c)
    return _lazy_one(data, axes, layout.joint_channels, _group_normalizer(normalizer, 0), settings)


def _aligned_chunks(n: int, size: int, depth: int) -> tuple[int, ...]:
    """Chunks of ``size`` (a multiple of the pooling grid) over ``n`` pixels; a last chunk
    thinner than ``depth`` is merged into the one before it, since ``map_overlap`` would
    otherwise re-chunk the axis itself and move block edges off the pooling grid."""
    sizes = [size] * (n // size)
    rest = n - size * len(sizes)
    if rest and rest < depth:
        sizes[-1] += rest
    elif rest:
        sizes.append(rest)
    return tuple(sizes)


def _lazy_one(data: Any, axes: str, joint: bool, normalizer: Normalizer, settings: Settings) -> Any:
    import dask.array as da

    m = max(1, settings.multiple)
    depth_px = -(-settings.context // m) * m
    chunks: list[Any] = []
    depth: dict[int, int] = {}
    for i, a in enumerate(axes):
        n = data.shape[i]
        if a in "TZ":
            chunks.append(1)
        elif a == "C":
            chunks.append(-1)
        elif len(data.chunks[i]) == 1:
            chunks.append(-1)
        else:
            target = max(max(data.chunks[i]), settings.tile if settings.tile > 0 else n, 2 * depth_px, m)
            size = min(n, -(-target // m) * m)
            if size < n:
                chunks.append(_aligned_chunks(n, size, depth_px))
                depth[i] = depth_px
            else:
                chunks.append(-1)
    data = data.rechunk(tuple(chunks))
    fn = BlockDenoiser(settings, axes, joint, normalizer)
    meta = np.empty((0,) * data.ndim, dtype=np.float32)
    name = f"addunet-denoise-{fn.token}"
    if not depth:
        return data.map_blocks(fn, dtype=np.float32, meta=meta, name=name)
    full_depth = {i: depth.get(i, 0) for i in range(data.ndim)}
    return da.map_overlap(
        fn, data, depth=full_depth, boundary="none", trim=True, dtype=np.float32, meta=meta, name=name
    )
