"""Overlapping tiles that reproduce the untiled result, and the tile loop with OOM fallback.

Strategy
--------
A convolutional network with zero ("same") padding computes an output pixel from the
input pixels within ``context = receptive_field // 2`` of it. A tile's outputs that lie
at least ``context`` pixels from an *artificial* tile edge (one that is not an image edge)
are therefore exactly the untiled outputs. Neighbouring tiles overlap by at least
``2 * context`` and every output pixel is taken from a tile where it is that far from
the tile's artificial edges: the stitched image equals the untiled one up to float
rounding.

The seam between two tiles sits in the middle of their overlap. When the overlap is
larger than needed, the two tiles are blended with a linear ramp inside the zone where
both are exact (weights sum to 1); when a caller asks for an overlap smaller than
``2 * context`` the ramp spans the whole overlap, which hides seams but is no longer
exact.

Models that down-sample (``size_multiple > 1``) are only translation-equivariant on
their pooling grid: tile origins and seams are aligned to ``size_multiple``, margins are
rounded up to it, and only the last tile of a row may have a size that is not a
multiple, exactly like the untiled image (which the model pads at its far end). With that,
pooling models are also reproduced up to float rounding.

Tiles along an axis are evenly spaced and as small as the tile limit allows, so the
extra work is ``2 * context`` per seam rather than a whole tile. The limit is an area
(``tile * tile`` pixels, what memory depends on); among the layouts within it the one
with the least total work is used, so a 1024 x 1024 plane with 752 x 752 tiles becomes two
1024 x 533 strips with one seam instead of four tiles with two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import numpy as np
import torch

MIN_TILE = 32
CPU_TILE_BUDGET = 1024 * 2**20
"""Estimated bytes of activations one CPU tile may use (:func:`estimate_bytes_per_pixel`).

About 1280 x 1280 px for the bundled denoiser (a 1024 x 1024 plane runs as one tile) and
1168 x 1168 px for the default AddUNet (``default_tile_size`` on the CPU). The estimate matched the real growth of the resident
set in the engine's layout (``benchmarks/activation_memory.py``), so a tile adds about 1 GiB
at most; up to 1.5x that in the contiguous layout."""
MPS_TILE_BUDGET = 1024 * 2**20
CUDA_FREE_FRACTION = 0.5
MAX_TILE = {"cpu": 2048, "mps": 2048, "cuda": 4096}
MAX_BATCH = 64


class TileError(ValueError):
    """Tile settings that cannot work (tile too small for the overlap, ...)."""


class TileMemoryError(RuntimeError):
    """Out of device memory even with the smallest allowed tile and a batch of one."""


def _ceil_to(v: int, m: int) -> int:
    return -(-int(v) // m) * m


def _floor_to(v: int, m: int) -> int:
    return int(v) // m * m


# -- planning -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AxisSpan:
    """One tile along one axis.

    Attributes
    ----------
    start, stop
        Input range the tile reads (absolute pixel indices).
    lo, hi
        Output range the tile owns (its seams); the spans' ``[lo, hi)`` partition the axis.
    ramp_lo, ramp_hi
        Half-width of the linear blend at the ``lo`` and ``hi`` seams (0: hard seam).
    """

    start: int
    stop: int
    lo: int
    hi: int
    ramp_lo: int = 0
    ramp_hi: int = 0

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def support(self) -> tuple[int, int]:
        """Absolute range where this tile's weight is non-zero."""
        return self.lo - self.ramp_lo, self.hi + self.ramp_hi

    def weights(self) -> np.ndarray:
        """Blend weights over :attr:`support` (float32, 1 inside, ramps at blended seams)."""
        a, b = self.support
        p = np.arange(a, b, dtype=np.float64) + 0.5
        w = np.ones(b - a, dtype=np.float64)
        if self.ramp_lo:
            w *= np.clip((p - (self.lo - self.ramp_lo)) / (2 * self.ramp_lo), 0.0, 1.0)
        if self.ramp_hi:
            w *= np.clip(((self.hi + self.ramp_hi) - p) / (2 * self.ramp_hi), 0.0, 1.0)
        return w.astype(np.float32)


def plan_axis(
    length: int, tile: int, overlap: int, multiple: int = 1, context: int | None = None
) -> list[AxisSpan]:
    """Split one axis into evenly spaced overlapping tiles.

    Parameters
    ----------
    length
        Axis length in pixels.
    tile
        Largest tile size; ``0`` or ``>= length`` gives one tile.
    overlap
        Smallest overlap between neighbouring tiles.
    multiple
        Tile starts and seams are multiples of this (the model's ``size_multiple``).
    context
        Pixels a tile needs beyond a seam to be exact (default ``overlap // 2``); seams
        are blended only where both tiles are exact, or across the whole overlap when
        the overlap is smaller than ``2 * context``.

    Returns
    -------
    list of AxisSpan
    """
    length, tile, overlap, m = int(length), int(tile), int(overlap), max(1, int(multiple))
    if length < 1:
        raise TileError(f"cannot tile an empty axis (length {length})")
    if tile <= 0 or length <= tile:
        return [AxisSpan(0, length, 0, length)]
    context = overlap // 2 if context is None else int(context)
    t = _floor_to(tile, m)
    ov = _ceil_to(max(overlap, 0), m)
    slack = m if m > 1 else 0
    if t - ov - slack < m:
        raise TileError(
            f"tile size {tile} is too small for an overlap of {overlap} px"
            + (f" with tiles aligned to {m} px" if m > 1 else "")
            + f"; use tiles of at least {ov + slack + m} px"
        )
    n = max(2, math.ceil((length - ov) / (t - ov - slack)))
    while n <= length:
        size = _ceil_to(math.ceil((length + (n - 1) * (ov + slack)) / n), m)
        if size > t:
            n += 1
            continue
        spacing = (length - size) / (n - 1)
        starts = [_floor_to(int(math.floor(i * spacing + 1e-9)), m) for i in range(n - 1)]
        starts.append(_ceil_to(length - size, m))
        starts = sorted(set(starts))  # alignment can merge neighbours on short axes
        stops = [min(length, s + size) for s in starts]
        k = len(starts)
        ok = k > 1 and stops[-1] == length
        ok = ok and all(stops[i] - starts[i + 1] >= ov for i in range(k - 1))
        if ok:
            return _spans(starts, stops, length, m, context)
        n += 1
    raise TileError(
        f"no tiling of {length} px with tiles of {tile} px and overlap {overlap} px"
    )  # pragma: no cover


def _spans(starts: list[int], stops: list[int], length: int, m: int, context: int) -> list[AxisSpan]:
    n = len(starts)
    seams = (
        [0] + [starts[i + 1] + _floor_to((stops[i] - starts[i + 1]) // 2, m) for i in range(n - 1)] + [length]
    )
    ramps = [0] * (n + 1)
    for i in range(1, n):
        b, s, e = seams[i], starts[i], stops[i - 1]
        exact = min(b - (s + context), (e - context) - b)
        half = exact if exact >= 0 else min(b - s, e - b)
        half = min(half, (b - seams[i - 1]) // 2, (seams[i + 1] - b) // 2)
        ramps[i] = max(0, half)
    return [AxisSpan(starts[i], stops[i], seams[i], seams[i + 1], ramps[i], ramps[i + 1]) for i in range(n)]


@dataclasses.dataclass(frozen=True)
class Tile:
    """One 2-D tile: its Y and X spans."""

    y: AxisSpan
    x: AxisSpan

    @property
    def shape(self) -> tuple[int, int]:
        return self.y.size, self.x.size

    @property
    def read(self) -> tuple[slice, slice]:
        """Slices of the plane this tile reads."""
        return slice(self.y.start, self.y.stop), slice(self.x.start, self.x.stop)

    @property
    def owned(self) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)``: the output region this tile owns, relative to the tile."""
        return (
            self.y.lo - self.y.start,
            self.y.hi - self.y.start,
            self.x.lo - self.x.start,
            self.x.hi - self.x.start,
        )


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """The tiles of a plane of ``shape`` (height, width)."""

    shape: tuple[int, int]
    rows: tuple[AxisSpan, ...]
    cols: tuple[AxisSpan, ...]
    exact: bool = True
    """Whether every seam has the full context (the result equals the untiled one)."""

    @property
    def tiles(self) -> list[Tile]:
        return [Tile(r, c) for r in self.rows for c in self.cols]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)


def plan_tiles(
    shape: Sequence[int], tile: int, overlap: int, multiple: int = 1, context: int | None = None
) -> TilePlan:
    """Tiles of a ``(height, width)`` plane, each holding at most ``tile * tile`` pixels.

    Memory follows a tile's area, so tiles may be rectangular: among the layouts whose
    tiles fit in ``tile * tile`` pixels, the one computing the fewest pixels in total (the
    least overlap) wins, ties going to fewer tiles. A plane within that area is one tile.
    ``tile=0`` never tiles. See :func:`plan_axis` for the other parameters.
    """
    return _plan_tiles(
        int(shape[-2]), int(shape[-1]), int(tile), int(overlap), max(1, int(multiple)), context
    )


@functools.lru_cache(maxsize=256)
def _plan_tiles(h: int, w: int, tile: int, overlap: int, m: int, context: int | None) -> TilePlan:
    ctx = overlap // 2 if context is None else context
    if tile <= 0 or h * w <= tile * tile:
        rows, cols = (AxisSpan(0, h, 0, h),), (AxisSpan(0, w, 0, w),)
        return TilePlan((h, w), rows, cols, True)
    area = tile * tile
    ov = _ceil_to(max(overlap, 0), m)
    slack = m if m > 1 else 0
    candidates = {tile, h}
    for n in range(2, min(h, 512) + 1):
        side = _ceil_to(math.ceil((h + (n - 1) * (ov + slack)) / n), m)
        if side < ov + slack + m:
            break
        candidates.add(side)
    best: tuple[tuple[int, int], tuple[AxisSpan, ...], tuple[AxisSpan, ...]] | None = None
    for side in sorted(candidates, reverse=True):
        if side > area:
            continue
        try:
            rows = tuple(plan_axis(h, side, overlap, m, context))
            cols = tuple(plan_axis(w, area // max(r.size for r in rows), overlap, m, context))
        except TileError:
            continue
        key = (sum(r.size for r in rows) * sum(c.size for c in cols), len(rows) * len(cols))
        if best is None or key < best[0]:
            best = (key, rows, cols)
    if best is None:
        plan_axis(max(h, w), tile, overlap, m, context)  # raises the explanatory TileError
        raise TileError(f"no tiling of a {h} x {w} plane in tiles of {tile} x {tile} px")  # pragma: no cover
    _, rows, cols = best
    exact = all(
        (a.stop - b.lo >= ctx and b.lo - b.start >= ctx)
        for spans in (rows, cols)
        for a, b in zip(spans, spans[1:], strict=False)
    )
    return TilePlan((h, w), rows, cols, exact)


def default_overlap(receptive_field: int, multiple: int = 1) -> int:
    """Smallest overlap that makes tiling exact: twice the context, aligned to ``multiple``."""
    return 2 * _ceil_to(max(0, int(receptive_field) // 2), max(1, int(multiple)))


def tile_floor(receptive_field: int, overlap: int, multiple: int = 1) -> int:
    """Smallest tile the OOM fallback goes down to: at least twice the receptive field."""
    m = max(1, int(multiple))
    slack = m if m > 1 else 0
    return _ceil_to(max(2 * int(receptive_field), int(overlap) + slack + m, MIN_TILE), m)


# -- default size -------------------------------------------------------------------------------
_ESTIMATES: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[str, int], float]] = (
    weakref.WeakKeyDictionary()
)


def estimate_bytes_per_pixel(model: torch.nn.Module, probe: int = 64) -> float:
    """Activation memory per input pixel of one forward pass without gradients.

    Measured on one forward pass under ``torch.no_grad()`` over a strip ``8 * probe`` rows tall
    and ``probe`` wide (tall enough that passes computed in bands of rows, like AddUNet's
    residual branches, show what they hold on a large image): the peak of
    the bytes held at once by the tensors the pass creates (not the weights or the input),
    followed operation by operation, so that feature maps at lower resolution (multi-scale
    models) count at their real size and tensors count only while they are alive. On the CPU
    it matched the growth of the process's resident set in a fresh process to within 1 % for
    the bundled denoiser and the default AddUNet in the engine's layout (channels-last); the
    contiguous layout, whose convolutions reorder their data, used up to 1.5x as much
    (``benchmarks/activation_memory.py``). Where that tracking is unavailable, it is
    :func:`bound_bytes_per_pixel`. The result depends on the architecture only, so it is
    computed once per model object (every tiled call asks for it).
    """
    return _cached(model, ("live", probe), lambda: _probe_bytes_per_pixel(model, probe, live=True))


def bound_bytes_per_pixel(model: torch.nn.Module, probe: int = 64) -> float:
    """A cheaper, looser estimate than :func:`estimate_bytes_per_pixel`: the bytes of every conv
    layer's output on one ``probe`` x ``probe`` pass, as if all were alive at once.

    Above the live peak for every registered architecture (1.0-4.0x). Models the probe cannot
    run count every conv output channel at full resolution. Cached per model object.
    """
    return _cached(model, ("bound", probe), lambda: _probe_bytes_per_pixel(model, probe, live=False))


def _cached(model: torch.nn.Module, key: tuple[str, int], compute: Callable[[], float]) -> float:
    known = _ESTIMATES.setdefault(model, {})
    if key not in known:
        known[key] = compute()
    return known[key]


def _probe_bytes_per_pixel(model: torch.nn.Module, probe: int, live: bool) -> float:
    convs = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    layers = [mod for mod in model.modules() if isinstance(mod, convs)]
    full_resolution = 4.0 * max(sum(mod.out_channels for mod in layers), 16)
    multiple = max(1, int(getattr(model, "size_multiple", 1)))
    side = _ceil_to(max(probe, 4 * multiple), multiple)
    rows = 8 * side if live else side
    in_channels = int(getattr(model, "in_channels", layers[0].in_channels if layers else 1))
    outputs = [0]

    def count(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        outputs[0] += output.numel()

    hooks = [] if live else [mod.register_forward_hook(count) for mod in layers]
    tracker = None
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        x = torch.zeros(1, in_channels, rows, side, device=param.device if param is not None else "cpu")
        model.eval()
        if live:
            owned = {_storage_key(t) for t in (*model.parameters(), *model.buffers(), x)}
            tracker = _live_bytes_tracker(owned)
            if tracker is None:  # pragma: no cover - torch without dispatch modes
                return bound_bytes_per_pixel(model, probe)
        # The bound counts every layer module's output: a whole-map pass (gradients on), as a
        # no-gradient pass may run in bands without calling the modules.
        grad = torch.no_grad() if live else torch.enable_grad()
        with grad, tracker if tracker is not None else contextlib.nullcontext():
            model(x)
    except Exception:  # noqa: BLE001 - exotic models: the full-resolution bound
        return full_resolution
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    counted = tracker.peak if tracker is not None else 4.0 * outputs[0]
    return max(counted / (rows * side), 64.0)


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (t.device.type, t.untyped_storage().data_ptr())


def _live_bytes_tracker(owned: set[tuple[str, int]]) -> Any:
    """A dispatch mode that follows the bytes of the tensors created under it (``peak``).

    A storage counts from the first operation that returns it until the last tensor object
    on it is freed; storages in ``owned`` (weights, buffers, the input) never count. ``None``
    where torch offers no dispatch modes.
    """
    try:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves
    except ImportError:  # pragma: no cover - torch without dispatch modes
        return None

    class LiveBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live = 0
            self.peak = 0
            self._views: dict[tuple[str, int], int] = {}
            self._bytes: dict[tuple[str, int], int] = {}

        def _release(self, key: tuple[str, int]) -> None:
            self._views[key] -= 1
            if not self._views[key]:
                del self._views[key]
                self.live -= self._bytes.pop(key)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if not isinstance(t, torch.Tensor):
                    continue
                key = _storage_key(t)
                nbytes = t.untyped_storage().nbytes()
                if key in owned or not nbytes:
                    continue
                if key not in self._views:
                    self._views[key] = 0
                    self._bytes[key] = nbytes
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                self._views[key] += 1
                weakref.finalize(t, self._release, key)
            return out

    return LiveBytes()


def default_tile_size(
    model: torch.nn.Module,
    device: torch.device,
    receptive_field: int,
    multiple: int = 1,
    bound: bool = False,
) -> int:
    """Default tile side for ``model`` on ``device``.

    CPU: activations within :data:`CPU_TILE_BUDGET`; CUDA: half of the free memory
    reported by ``torch.cuda.mem_get_info``; MPS: :data:`MPS_TILE_BUDGET`, by
    :func:`estimate_bytes_per_pixel` (``bound=True``: by the cheaper, larger
    :func:`bound_bytes_per_pixel`, which gives smaller tiles; enough to tell that an image
    fits in one). Tiles then hold at most ``side * side`` pixels (see :func:`plan_tiles`).
    The side is a multiple of 16 (and of ``multiple``), at least :func:`tile_floor` and at
    most :data:`MAX_TILE` for the device type.
    """
    kind = device.type
    if kind == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except Exception:  # noqa: BLE001 - fall back to total memory
            free = torch.cuda.get_device_properties(device).total_memory
        budget = CUDA_FREE_FRACTION * free
    elif kind == "mps":
        budget = MPS_TILE_BUDGET
    else:
        budget = CPU_TILE_BUDGET
    per_pixel = bound_bytes_per_pixel(model) if bound else estimate_bytes_per_pixel(model)
    side = int(math.sqrt(budget / per_pixel))
    side = min(_floor_to(side, 16), MAX_TILE.get(kind, 2048))
    ov = default_overlap(receptive_field, multiple)
    side = max(side, tile_floor(receptive_field, ov, multiple))
    return _ceil_to(side, max(1, multiple))


# -- out of memory ------------------------------------------------------------------------------
def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is a device out-of-memory error (CUDA or MPS)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_device_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and hasattr(mps, "empty_cache"):
        try:
            mps.empty_cache()
        except Exception:  # noqa: BLE001 - not on this platform
            pass


# -- the tile loop ------------------------------------------------------------------------------
Forward = Callable[[np.ndarray, Sequence[tuple[int, int, int, int]], tuple[int, int]], tuple[np.ndarray, Any]]
"""``forward(batch, owned, far) -> (images, feature_sums)``.

``batch`` is float32 ``(B, C, h, w)``; ``owned`` gives each item's owned region in tile
coordinates; ``far`` is ``(dy, dx)``, the pixels from the tiles' far (bottom, right) edges to
the image's far edges modulo the model's ``size_multiple`` (the same for every tile of a
batch). A model run on a flipped tile needs it to pool on the grid of the flipped image.
``images`` must have the batch's shape; ``feature_sums`` is None or a pair
``(sums (B, F), counts (B,))`` of the deep features summed over the owned regions.
"""


@dataclasses.dataclass
class TilesDone:
    """Event: ``count`` more tiles finished (``planes`` planes in flight)."""

    count: int


@dataclasses.dataclass
class Replanned:
    """Event: out of memory; ``undone`` finished tiles are redone with ``tile`` px tiles."""

    undone: int
    tile: int
    batch_size: int | None
    tiles_per_plane: int


@dataclasses.dataclass
class PlaneDone:
    """Event: a plane is complete. ``features`` is the mean deep-feature vector or None."""

    key: Any
    image: np.ndarray
    features: np.ndarray | None


class TiledRunner:
    """Runs a forward function over the tiles of many planes, batching and stitching.

    Parameters
    ----------
    forward
        See :data:`Forward`.
    tile
        Tiles hold at most ``tile * tile`` pixels (0: whole planes, no tiling).
    overlap
        Smallest overlap between neighbouring tiles.
    context
        Pixels needed beyond a seam for exactness (``receptive_field // 2``).
    multiple
        Alignment of tile origins (the model's ``size_multiple``).
    floor
        Smallest tile side the out-of-memory fallback may use.
    batch_size
        Tiles per forward call; None chooses as many as fit in one full tile's pixels
        (1 for planes that need tiling, several for small planes).
    on_oom
        Called after an out-of-memory error before retrying (e.g. to free the cache).

    Notes
    -----
    On an out-of-memory error from ``forward`` the batch size is halved first, then the
    tile side, down to ``floor``; the planes in flight are restarted. Below the floor a
    :class:`TileMemoryError` is raised.
    """

    def __init__(
        self,
        forward: Forward,
        *,
        tile: int,
        overlap: int,
        context: int,
        multiple: int = 1,
        floor: int = MIN_TILE,
        batch_size: int | None = None,
        on_oom: Callable[[], None] | None = _free_device_memory,
        tail: tuple[int, int] = (0, 0),
    ) -> None:
        self.forward = forward
        self.tail = (int(tail[0]), int(tail[1]))
        """Pixels of the image beyond the planes' far edges (for a block of a larger image)."""
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.context = int(context)
        self.multiple = max(1, int(multiple))
        self.floor = int(floor)
        self.batch_size = batch_size
        self.on_oom = on_oom
        self._batch_cap: int | None = None
        self._in_flight = 1  # the batch of the last forward call
        self.oom_events: list[str] = []
        self.tiles_run = 0
        self.seconds = 0.0

    def plan(self, shape: Sequence[int]) -> TilePlan:
        return plan_tiles(shape, self.tile, self.overlap, self.multiple, self.context)

    def _batch_for(self, shape: tuple[int, int]) -> int:
        if self.batch_size is not None:
            b = max(1, int(self.batch_size))
        else:
            ref = self.tile if self.tile > 0 else max(shape)
            b = max(1, min(MAX_BATCH, (ref * ref) // max(1, shape[0] * shape[1])))
        if self._batch_cap is not None:
            b = min(b, self._batch_cap)
        return b

    def run(
        self, planes: Iterable[tuple[Any, np.ndarray]]
    ) -> Generator[TilesDone | Replanned | PlaneDone, None, None]:
        """Process ``(key, plane)`` pairs (plane float32 ``(C, H, W)``), yielding events.

        :class:`TilesDone` after every forward call, :class:`Replanned` after an
        out-of-memory retry, and :class:`PlaneDone` for each finished plane, in input order.
        """
        source = iter(planes)
        ahead: list[tuple[Any, np.ndarray]] = []

        def pull() -> tuple[Any, np.ndarray] | None:
            if ahead:
                return ahead.pop()
            return next(source, None)

        while True:
            first = pull()
            if first is None:
                return
            chunk = [first]
            plan = self.plan(first[1].shape)
            if len(plan) == 1:
                limit = self._batch_for(plan.shape)
                while len(chunk) < limit:
                    nxt = pull()
                    if nxt is None:
                        break
                    if nxt[1].shape != first[1].shape:
                        ahead.append(nxt)
                        break
                    chunk.append(nxt)
            while True:
                done_here = 0
                try:
                    results = None
                    for event in self._run_chunk(chunk, plan):
                        if isinstance(event, TilesDone):
                            done_here += event.count
                            yield event
                        else:
                            results = event
                    break
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    self._shrink(exc, plan)
                    plan = self.plan(first[1].shape)
                    yield Replanned(done_here, self.tile, self._batch_cap, len(plan))
            assert results is not None
            for key, image, feats in results:
                yield PlaneDone(key, image, feats)

    def _shrink(self, exc: BaseException, plan: TilePlan) -> None:
        if self.on_oom is not None:
            self.on_oom()
        batch = self._in_flight  # what was sent, not the batch the tile size would allow
        if batch > 1:
            self._batch_cap = max(1, batch // 2)
            self.oom_events.append(f"batch size {batch} -> {self._batch_cap}")
            return
        # tiles are planned by area: halve the side of a square of the largest tile's area,
        # so that the new plan has smaller tiles (a 2000 x 100 plane is not cut by a 1000 px side)
        largest = math.isqrt(max(t.shape[0] * t.shape[1] for t in plan.tiles))
        setting = self.tile if self.tile > 0 else largest
        current = min(setting, largest)
        new = _floor_to(current // 2, self.multiple)
        if new < self.floor:
            if setting > self.floor:
                new = self.floor
            else:
                current = setting
                last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise TileMemoryError(
                    f"out of device memory even with {current} px tiles and a batch of 1 (the "
                    f"smallest tile for this model is {self.floor} px, twice its receptive field); "
                    "free device memory (close other programs), use a smaller model, or run on "
                    f"device='cpu'. Last error: {last}"
                ) from exc
        self.oom_events.append(f"tile {current} -> {new}")
        self.tile = new

    def _run_chunk(self, chunk: list[tuple[Any, np.ndarray]], plan: TilePlan) -> Generator[Any, None, None]:
        tiles = plan.tiles
        h, w = plan.shape
        channels = chunk[0][1].shape[0]
        accs = [np.zeros((channels, h, w), dtype=np.float32) for _ in chunk]
        fsums: list[Any] = [None] * len(chunk)
        fcount = [0.0] * len(chunk)
        weights = {t: (t.y.weights(), t.x.weights()) for t in tiles}
        m = self.multiple
        far = {t: ((self.tail[0] + h - t.y.stop) % m, (self.tail[1] + w - t.x.stop) % m) for t in tiles}
        # Work items: (plane index, tile); group tiles of one shape (and one pooling grid) into batches.
        items = [(p, t) for p in range(len(chunk)) for t in tiles]
        groups: dict[tuple[tuple[int, int], tuple[int, int]], list[tuple[int, Tile]]] = {}
        for it in items:
            groups.setdefault((it[1].shape, far[it[1]]), []).append(it)
        for (shape, grid), group in groups.items():
            bs = self._batch_for(shape)
            for i in range(0, len(group), bs):
                part = group[i : i + bs]
                self._in_flight = len(part)
                batch = np.stack([chunk[p][1][(slice(None), *t.read)] for p, t in part])
                t0 = time.perf_counter()
                images, feats = self.forward(
                    np.ascontiguousarray(batch, dtype=np.float32), [t.owned for _, t in part], grid
                )
                self.seconds += time.perf_counter() - t0
                images = np.asarray(images, dtype=np.float32)
                if images.shape != batch.shape:
                    raise RuntimeError(
                        f"the model returned shape {images.shape} for a batch of shape {batch.shape}"
                    )
                for j, (p, t) in enumerate(part):
                    wy, wx = weights[t]
                    ya, yb = t.y.support
                    xa, xb = t.x.support
                    piece = images[j, :, ya - t.y.start : yb - t.y.start, xa - t.x.start : xb - t.x.start]
                    if t.y.ramp_lo or t.y.ramp_hi or t.x.ramp_lo or t.x.ramp_hi:
                        piece = piece * (wy[:, None] * wx[None, :])
                    accs[p][:, ya:yb, xa:xb] += piece
                    if feats is not None:
                        sums, counts = feats
                        fsums[p] = sums[j].astype(np.float64) + (0.0 if fsums[p] is None else fsums[p])
                        fcount[p] += float(counts[j])
                self.tiles_run += len(part)
                yield TilesDone(len(part))
        out = []
        for p, (key, _) in enumerate(chunk):
            mean = None if fsums[p] is None else (fsums[p] / max(fcount[p], 1.0)).astype(np.float32)
            out.append((key, accs[p], mean))
        yield out
