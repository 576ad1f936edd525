"""Denoise (and classify) arrays of any layout, size and dtype on any device.

The work is a generator, :func:`iter_denoise`, that yields :class:`Progress` events and
*returns* a :class:`PredictResult` (the ``StopIteration`` value, which is what
``yield from`` gives and what napari's ``thread_worker`` emits as ``returned``).
:func:`denoise` and :func:`predict` drive it and return the array or the result.

Cancelling: close the generator (``gen.close()``, which napari's ``worker.quit()`` does), or
set the ``threading.Event`` passed as ``cancel=``; the loop stops before the next forward
call (within one tile) and raises :class:`InferenceCancelled`. No partial result is
returned either way.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
import torch

from napari_addunet.models import DenoiserModel

from .axes import plane_layout, resolve_axes
from .devices import resolve_device, use_fast_layout
from .ensemble import check_ensemble
from .lazy import denoise_lazy, is_dask_array, lazy_source
from .normalization import (
    NAN_POLICIES,
    NonFiniteError,
    check_dtype,
    compute_normalizer,
    model_normalization,
    nonfinite_message,
    parse_normalization,
    scan_nonfinite,
)
from .runtime import PlaneFinished, Settings, plane_loop
from .tiling import (
    Replanned,
    TileError,
    TilesDone,
    default_overlap,
    default_tile_size,
    plan_tiles,
    tile_floor,
)

PRECISIONS = ("auto", "float32", "float16", "bfloat16")


class InferenceCancelled(RuntimeError):
    """The caller cancelled the run; no result is returned."""


class EmptyInputError(ValueError):
    """The input array has no pixels."""


@dataclasses.dataclass(frozen=True)
class Progress:
    """A progress event of :func:`iter_denoise`.

    Attributes
    ----------
    done, total
        Units of work finished and planned (tiles while denoising; planes while checking
        the input). ``total`` may change after an out-of-memory retry.
    eta_seconds
        Estimated seconds left, or None before the first tile finished.
    message
        What is happening, e.g. ``"denoising z=3 (tile 4/9)"``.
    """

    done: int
    total: int
    eta_seconds: float | None
    message: str

    @property
    def fraction(self) -> float:
        """``done / total`` in [0, 1] (1 when there is nothing to do)."""
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


@dataclasses.dataclass(frozen=True)
class PredictResult:
    """Result of :func:`predict` (and the return value of :func:`iter_denoise`).

    Attributes
    ----------
    denoised
        float32 array shaped like the input, in the input's intensity units (a lazy dask
        array for dask input unless ``lazy=False``; the ``out`` array, of its own
        floating-point dtype, when one is given).
    probabilities
        ``(n_planes, num_classes)`` class probabilities, one row per plane in C order of
        :attr:`plane_axes`, or None when the model has no classification head or
        classification was not asked for.
    class_names
        Names of the classes, or None.
    axes
        Axes of the input and of :attr:`denoised`.
    plane_axes
        Axes enumerating the planes (e.g. ``"TZ"``; ``""`` for a single image).
    plane_grid
        Their lengths: ``probabilities.reshape(plane_grid + (num_classes,))``.
    details
        Settings used: device, tile, overlap, receptive field, normalisation, OOM retries.
    """

    denoised: Any
    probabilities: np.ndarray | None
    class_names: list[str] | None
    axes: str
    plane_axes: str = ""
    plane_grid: tuple[int, ...] = ()
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def labels(self) -> list[str] | None:
        """Most probable class name per plane, or None."""
        if self.probabilities is None or self.class_names is None:
            return None
        return [self.class_names[int(i)] for i in np.argmax(self.probabilities, axis=1)]


# -- helpers ------------------------------------------------------------------------------------
_RF_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()


def model_receptive_field(model: torch.nn.Module) -> int:
    """Receptive field of ``model`` (computed once per model object)."""
    rf = _RF_CACHE.get(model)
    if rf is None:
        from .receptive_field import receptive_field

        rf = int(receptive_field(model))
        _RF_CACHE[model] = rf
    return rf


def _as_array(data: Any) -> Any:
    if isinstance(data, np.ndarray) or is_dask_array(data):
        return data
    if isinstance(data, torch.Tensor):
        tensor = data.detach().cpu()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            tensor = tensor.float()
        return tensor.numpy()
    if all(hasattr(data, a) for a in ("shape", "dtype", "ndim", "__getitem__")):
        return data  # zarr, h5py and other lazily indexed arrays
    if isinstance(data, (list, tuple)):
        try:
            return np.asarray(data)
        except ValueError as exc:  # rows of different lengths
            raise TypeError(
                f"data is a nested list that is not a rectangular array ({exc}); pass a numpy array"
            ) from None
    raise TypeError(
        f"data must be a numpy, dask or zarr array (or anything with shape, dtype and "
        f"indexing), got {type(data).__name__}"
    )


def check_gates(model: DenoiserModel, gates: Sequence[float] | None) -> tuple[float, ...] | None:
    """``gates`` as a tuple of floats, checked against ``model`` (None stays None).

    Raises
    ------
    GateError
        The model has no skip gates, or the values are of the wrong count, negative, not
        finite or not numbers.
    """
    if gates is None:
        return None
    from napari_addunet.models.addunet import AddUNet

    if not isinstance(model, AddUNet):
        from napari_addunet.models.addunet import GateError

        raise GateError(
            f"gates= applies to AddUNet models only; this model is {model.architecture!r}, "
            "which has no skip gates"
        )
    return tuple(model._check_gates(gates))


def _amp_dtype(model: DenoiserModel, device: torch.device, precision: str) -> str | None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return None
    if precision in ("float16", "bfloat16"):
        return precision
    if device.type != "cuda" or not model.metadata.get("autocast", True):
        return None
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def _int_setting(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# -- the generator ------------------------------------------------------------------------------
def _check_out(out: Any, shape: tuple[int, ...], lazy: bool) -> None:
    """Refuse an ``out=`` that the result cannot be written into as it is."""
    if lazy:
        raise ValueError(
            "out= needs a result computed now, but this one is lazy (dask); pass lazy=False to "
            "write it into out, or leave out unset"
        )
    if not (hasattr(out, "shape") and hasattr(out, "dtype") and hasattr(out, "__setitem__")):
        raise TypeError(f"out must be a writable array (numpy, memmap, zarr), got {type(out).__name__}")
    if tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)} but the input has shape {shape}")
    if np.dtype(out.dtype).kind != "f" or np.dtype(out.dtype).itemsize < 4:
        raise ValueError(
            f"out must be a float32 or float64 array (results are float32), got {np.dtype(out.dtype)}: "
            + (
                "float16 overflows to inf above 65504 and keeps 3 significant digits"
                if np.dtype(out.dtype).kind == "f"
                else "integers would wrap or lose the values"
            )
        )
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("out is read-only; pass a writable array")


def iter_denoise(
    model: DenoiserModel | str | Any,
    data: Any,
    axes: str | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    gates: Sequence[float] | None = None,
    normalization: dict[str, Any] | str | None = None,
    nan_policy: str = "raise",
    classify: bool = False,
    *,
    rgb: bool | None = None,
    cancel: threading.Event | None = None,
    lazy: bool | None = None,
    out: Any = None,
    precision: str = "auto",
    ensemble: int = 1,
) -> Generator[Progress, None, PredictResult]:
    """Denoise ``data`` step by step, yielding :class:`Progress`; return a :class:`PredictResult`.

    Parameters
    ----------
    model
        A model object, a ``.safetensors`` checkpoint path, a bundled model's name, or None
        for the bundled default.
    data
        numpy array (also ``np.memmap``/``tifffile.memmap``), zarr array, dask array, or
        anything with ``shape``, ``dtype`` and numpy-style indexing. Any real numeric dtype.
    axes
        Letters from ``TZCYX``, one per dimension (e.g. ``"ZYX"``, ``"YXC"``); None infers
        them (see :func:`~napari_addunet.engine.axes.infer_axes`).
    tile
        Tile size: tiles hold at most ``tile * tile`` pixels (they may be rectangular when
        that means fewer seams). None picks it from the model and the device's memory; 0
        processes whole planes without tiling.
    overlap
        Smallest overlap between tiles; None uses twice the model's receptive-field radius,
        which makes the result identical to untiled processing. Smaller values are faster
        but seams are then only blended, not exact (a warning says so).
    batch_size
        Tiles per forward call; None fits as many small planes as one tile's pixels.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``. The
        model is moved there, put in eval mode, and stays there for the next call.
    gates
        AddUNet skip gates for this call only (one non-negative value per level); the
        model's own gates are not changed. An error for other architectures.
    normalization
        Overrides the model's recorded normalisation (see
        :mod:`~napari_addunet.engine.normalization`).
    nan_policy
        ``"raise"`` (default): NaN/Inf in the input raise :class:`NonFiniteError` naming
        how many and where. ``"fill"``: they are replaced by the median of the finite values
        before denoising and the result is finite everywhere. ``"mask"``: like ``"fill"``,
        and the result is NaN again at those pixels.
    classify
        Also compute class probabilities when the model has a classification head.
    rgb
        napari's ``rgb`` flag, used only when ``axes`` is None. An array's channels are all
        denoised, a fourth (alpha) one of an RGBA image too: pass ``data[..., :3]`` and keep the
        alpha apart, as the widgets and the command line do.
    cancel
        A ``threading.Event``; when set the run stops within one tile.
    lazy
        None: lazy (dask) result for dask input, else computed now. True: always return a
        dask array (not with ``classify``). False: compute now even for dask input.
    out
        Optional floating-point array (numpy, memmap, zarr) of the input's shape to write the
        result into, for results larger than memory; returned as ``denoised``. Not with a lazy
        result (pass ``lazy=False`` for dask input).
    precision
        ``"auto"`` (CUDA: bfloat16 where supported, else float16, unless the model's metadata
        has ``"autocast": False``; other devices: float32), ``"float32"``, ``"float16"``,
        ``"bfloat16"``.
    ensemble
        Self-ensemble: average the result over this many orientations of each tile (1, 2, 4
        or 8; see :mod:`~napari_addunet.engine.ensemble`): with 8, the bundled denoiser gains
        0.06-0.08 dB PSNR on BSD68 and Set12. Costs that many times the compute, at the same
        memory. 1 (default) is off.

    Yields
    ------
    Progress
        After the statistics, during the NaN check, and after every forward call.

    Returns
    -------
    PredictResult
        Also obtainable as ``result = yield from iter_denoise(...)``.

    Raises
    ------
    AxesError, EmptyInputError, DTypeError, NonFiniteError, NormalizationError, TileError,
    TileMemoryError, GateError, DeviceError, EnsembleError, InferenceCancelled
        With a message saying what to change.
    """
    from .checkpoint import resolve_model

    model = resolve_model(model)
    data = _as_array(data)
    shape = tuple(int(s) for s in data.shape)
    ax = resolve_axes(shape, axes, rgb)
    if 0 in shape:
        raise EmptyInputError(f"the input is empty (shape {shape}, axes {ax!r}); there is nothing to denoise")
    dtype = check_dtype(data.dtype)
    layout = plane_layout(shape, ax, model.in_channels, model.out_channels)
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}, got {nan_policy!r}")
    gate_values = check_gates(model, gates)
    ensemble = check_ensemble(ensemble)
    norm_spec = (
        parse_normalization(normalization) if normalization is not None else model_normalization(model)
    )
    dask_input = is_dask_array(data)
    if lazy is None:
        lazy = dask_input and not classify
    if lazy and classify and getattr(model, "head", None) is not None:
        raise ValueError(
            "a lazy result cannot classify (class probabilities are computed now, for every plane): "
            "pass classify=False with lazy=True (napari_addunet.denoise(..., lazy=True) for the "
            "denoised image alone), or lazy=False"
        )
    if out is not None:
        _check_out(out, shape, lazy)

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = resolve_device(device)
    model.to(dev)
    model.eval()
    amp = _amp_dtype(model, dev, precision)
    channels_last = use_fast_layout(model, dev)

    multiple = max(1, int(getattr(model, "size_multiple", 1)))
    try:
        rf = model_receptive_field(model)
    except Exception as exc:  # noqa: BLE001 - exotic layers the tracer cannot follow
        if overlap is None:
            raise TileError(
                f"could not compute the receptive field of this {type(model).__name__} ({exc}); "
                "pass overlap= (pixels) explicitly"
            ) from exc
        rf = None
    ov = default_overlap(rf, multiple) if overlap is None else _int_setting("overlap", overlap, 0)
    if rf is None:  # unknown: the overlap given is taken as what the model needs
        rf = 2 * (ov // 2) + 1
        rf_known = False
    else:
        rf_known = True
    context = rf // 2
    plane = (layout.height, layout.width)
    if tile is None:
        # The cheap bound settles images that fit in one tile; others need the live estimate.
        tile_px = default_tile_size(model, dev, rf, multiple, bound=True)
        if len(plan_tiles(plane, tile_px, ov, multiple, context).tiles) > 1:
            tile_px = default_tile_size(model, dev, rf, multiple)
    else:
        tile_px = _int_setting("tile", tile, 0)
    floor = min(tile_floor(rf, ov, multiple), tile_px) if tile_px else tile_floor(rf, ov, multiple)
    if batch_size is not None:
        batch_size = _int_setting("batch_size", batch_size, 1)
    plan = plan_tiles(plane, tile_px, ov, multiple, context)  # raises TileError early
    if rf_known and not plan.exact:
        warnings.warn(
            f"overlap={ov} is smaller than this model's receptive field needs with its size multiple "
            f"of {multiple} ({default_overlap(rf, multiple)} px): tiles are blended across the overlap, "
            "but the result is no longer identical to untiled processing",
            stacklevel=2,
        )
    want_classes = classify and getattr(model, "head", None) is not None
    settings = Settings(
        model=model,
        device=str(dev),
        device_request=device,
        tile=tile_px,
        overlap=ov,
        context=context,
        multiple=multiple,
        floor=floor,
        batch_size=batch_size,
        gates=gate_values,
        classify=want_classes,
        amp=amp,
        channels_last=channels_last,
        nan_policy=nan_policy,
        ensemble=ensemble,
    )
    details: dict[str, Any] = {
        "device": str(dev),
        "tile": tile_px,
        "overlap": ov,
        "receptive_field": rf,
        "size_multiple": multiple,
        "tiles_per_plane": len(plan),
        "planes": layout.num_planes,
        "exact_tiling": plan.exact,
        "precision": amp or "float32",
        "normalization": norm_spec,
        "joint_channels": layout.joint_channels,
        "ensemble": ensemble,
    }

    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise TypeError(f"cancel must be a threading.Event (set it to stop), got {type(cancel).__name__}")

    def check_cancel(done: int | None = None, total: int | None = None) -> None:
        if cancel is not None and cancel.is_set():
            where = f"after {done} of {total} tiles" if total else "before the first tile"
            raise InferenceCancelled(f"cancelled {where}; no result was produced")

    check_cancel()
    # 1. NaN / Inf (eager: one pass now, naming the count; lazy: block by block later).
    float_input = dtype.kind == "f"
    if float_input and nan_policy == "raise" and not lazy:
        n_stack = math.prod(layout.size(a) for a in layout.stack_axes)
        count, first = 0, None
        for done, count, first in scan_nonfinite(data, layout):  # noqa: B007 - kept after the loop
            yield Progress(done, n_stack, None, "checking the input for NaN/Inf")
            check_cancel()
        if count:
            raise NonFiniteError(nonfinite_message(count, math.prod(shape), ax, first))
    # 2. Intensity statistics, once for the whole array.
    yield Progress(0, 1, None, f"computing intensity statistics ({norm_spec['method']})")
    normalizer = compute_normalizer(data, layout, norm_spec, need_fill=float_input and nan_policy != "raise")
    details["normalizer"] = {"offset": normalizer.offset, "scale": normalizer.scale}
    check_cancel()
    class_names = list(model.class_names) if want_classes else None

    if lazy:
        # the blocks run later: they use the model as it is now, not as it may be by then
        # (trained on, switched to training mode, gates moved)
        settings = dataclasses.replace(settings, model=copy.deepcopy(model).eval())
        source = data
        if not dask_input:
            source = lazy_source(data, tuple(1 if a in "TZ" else -1 for a in ax))
        result = denoise_lazy(source, layout, normalizer, settings)
        details["lazy"] = True
        yield Progress(1, 1, 0.0, "lazy result ready; it is computed block by block when read")
        return PredictResult(result, None, None, ax, layout.plane_axes, layout.plane_grid, details)

    # 3. The tile loop.
    target = out if out is not None else np.empty(shape, dtype=np.float32)
    probabilities = (
        np.full((layout.num_planes, model.num_classes), np.nan, np.float32) if want_classes else None
    )
    runner = settings.make_runner()
    tiles_per_plane = len(plan)
    total = layout.num_planes * tiles_per_plane
    done = planes_done = 0
    start = time.perf_counter()
    positions = list(layout.plane_positions())
    n_planes = len(positions)

    def message() -> str:
        # planes go through in batches: count those whose tiles are all done, name the next
        finished = min(done // max(tiles_per_plane, 1), n_planes)
        where = layout.describe(positions[min(finished, n_planes - 1)])
        if n_planes == 1:
            return f"denoising {where} ({done} of {total} tiles done)"
        return f"denoising {where} ({finished} of {n_planes} planes done)"

    yield Progress(0, total, None, message())
    for event in plane_loop(settings, runner, data, layout, normalizer, target, probabilities):
        if isinstance(event, TilesDone):
            done += event.count
        elif isinstance(event, Replanned):
            done -= event.undone
            tiles_per_plane = event.tiles_per_plane
            total = done + (layout.num_planes - planes_done) * tiles_per_plane
            details.setdefault("out_of_memory_retries", []).append(runner.oom_events[-1])
            warnings.warn(
                f"out of memory on {dev}: retrying with {runner.oom_events[-1]}", RuntimeWarning, stacklevel=2
            )
        elif isinstance(event, PlaneFinished):
            planes_done += 1
            continue
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (total - done) if done else None
        yield Progress(done, total, eta, message())
        check_cancel(done, total)
    details["tile"] = runner.tile
    details["seconds"] = time.perf_counter() - start
    details["lazy"] = False
    return PredictResult(
        target, probabilities, class_names, ax, layout.plane_axes, layout.plane_grid, details
    )


# -- blocking wrappers --------------------------------------------------------------------------
ProgressCallback = Callable[[Progress], Any]


def _drive(
    gen: Generator[Progress, None, PredictResult], progress: ProgressCallback | bool | None
) -> PredictResult:
    bar = None
    callback: ProgressCallback | None = progress if callable(progress) else None
    if progress is True:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=0, unit="tile", leave=False)

            def callback(p: Progress) -> None:
                bar.total = p.total
                bar.n = p.done
                bar.set_description(p.message, refresh=False)
                bar.refresh()

        except ImportError:  # pragma: no cover - tqdm is optional here
            callback = None
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if callback is not None:
                callback(event)
    finally:
        gen.close()
        if bar is not None:
            bar.close()


def predict(
    model: DenoiserModel | str | Any,
    data: Any,
    axes: str | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    gates: Sequence[float] | None = None,
    progress: ProgressCallback | bool | None = None,
    *,
    normalization: dict[str, Any] | str | None = None,
    nan_policy: str = "raise",
    rgb: bool | None = None,
    cancel: threading.Event | None = None,
    lazy: bool | None = None,
    out: Any = None,
    precision: str = "auto",
    ensemble: int = 1,
) -> PredictResult:
    """Denoise and classify ``data``; see :func:`iter_denoise` for the parameters.

    ``progress`` is a callable receiving each :class:`Progress`, or True for a progress bar.

    Returns
    -------
    PredictResult
        The denoised array, per-plane class probabilities and class names (None without a
        classification head), and the axes.
    """
    return _drive(
        iter_denoise(
            model,
            data,
            axes,
            tile,
            overlap,
            batch_size,
            device,
            gates,
            normalization,
            nan_policy,
            classify=True,
            rgb=rgb,
            cancel=cancel,
            lazy=False if lazy is None else lazy,
            out=out,
            precision=precision,
            ensemble=ensemble,
        ),
        progress,
    )


def denoise(
    model: DenoiserModel | str | Any,
    data: Any,
    axes: str | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    gates: Sequence[float] | None = None,
    progress: ProgressCallback | bool | None = None,
    *,
    normalization: dict[str, Any] | str | None = None,
    nan_policy: str = "raise",
    rgb: bool | None = None,
    cancel: threading.Event | None = None,
    lazy: bool | None = None,
    out: Any = None,
    precision: str = "auto",
    ensemble: int = 1,
) -> Any:
    """Denoise ``data`` and return a float32 array shaped like it, in its intensity units.

    See :func:`iter_denoise` for the parameters; ``progress`` is a callable receiving each
    :class:`Progress`, or True for a progress bar. Dask input gives a lazy dask array
    (computed block by block when read) unless ``lazy=False``.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_addunet.models import create_model
    >>> model = create_model("addunet", width=4, kernels=(3, 3))
    >>> denoise(model, np.random.rand(64, 64), device="cpu").shape
    (64, 64)
    """
    return _drive(
        iter_denoise(
            model,
            data,
            axes,
            tile,
            overlap,
            batch_size,
            device,
            gates,
            normalization,
            nan_policy,
            classify=False,
            rgb=rgb,
            cancel=cancel,
            lazy=lazy,
            out=out,
            precision=precision,
            ensemble=ensemble,
        ),
        progress,
    ).denoised
