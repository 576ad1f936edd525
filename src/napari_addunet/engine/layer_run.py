"""Denoise a napari image layer's data into new layers, without napari.

The widgets read what a run needs from a layer into a :class:`LayerSnapshot` (plain
values, on the main thread), and a worker thread drives :func:`iter_layer_denoise`: it
yields the engine's :class:`~napari_addunet.engine.inference.Progress` events and returns
a :class:`LayerRunResult` whose :attr:`~LayerRunResult.layers` are napari layer-data tuples
``(data, kwargs, "image")``: ``<name> [denoised]`` and, if asked, ``<name> [residual]``
(input minus denoised), with the input's scale, translate, rotation, shear, affine, axis
labels and units, and the run recorded in ``metadata["napari_addunet"]``. The input is
never modified.

The same call from a script::

    from napari_addunet.engine.layer_run import LayerSnapshot, run_layer_denoise
    result = run_layer_denoise(model, LayerSnapshot.from_layer(viewer.layers["cells"]))
    for data, kwargs, _ in result.layers:
        viewer.add_image(data, **kwargs)
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
import time
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from .inference import InferenceCancelled, Progress, iter_denoise
from .noise_estimate import estimate_sigma
from .readout import METADATA_KEY

DENOISED = "{name} [denoised]"
RESIDUAL = "{name} [residual]"


class LayerError(ValueError):
    """A layer cannot be denoised (wrong type, empty, multiscale ...)."""


def check_image_layer(layer: Any, purpose: str = "denoise") -> None:
    """Refuse what a widget cannot read as one image: not an Image layer, a multiscale
    (pyramid) layer (whose array napari gives as its smallest level), an empty layer.

    Raises
    ------
    LayerError
        With a message naming the layer and what to do; ``purpose`` completes it
        (``"denoise"``, ``"train on"``, ``"compare"``, ``"preview"``).
    """
    kind = layer.__class__.__name__
    if not any(c.__name__ == "Image" for c in layer.__class__.__mro__):
        raise LayerError(
            f"{layer.name!r} is a {kind} layer; to {purpose} it needs an Image layer "
            "(labels, points and shapes are not images)"
        )
    if getattr(layer, "multiscale", False):
        raise LayerError(
            f"{layer.name!r} is a multiscale (pyramid) image; open its full-resolution level as "
            f"an ordinary image layer to {purpose} it"
        )
    if 0 in tuple(layer.data.shape):
        raise LayerError(
            f"{layer.name!r} is empty (shape {tuple(layer.data.shape)}); there is nothing to {purpose}"
        )


@dataclasses.dataclass(frozen=True)
class LayerSnapshot:
    """What a run needs from an image layer, read once on the main thread.

    ``data`` is the layer's array itself (not a copy): the engine reads it plane by plane
    and never writes to it.
    """

    name: str
    data: Any
    rgb: bool = False
    scale: tuple[float, ...] | None = None
    translate: tuple[float, ...] | None = None
    rotate: Any = None
    shear: Any = None
    affine: Any = None
    axis_labels: tuple[str, ...] | None = None
    units: tuple[str, ...] | None = None
    contrast_limits: tuple[float, float] | None = None
    colormap: str | None = None

    @classmethod
    def from_layer(cls, layer: Any) -> LayerSnapshot:
        """Read a napari layer; :class:`LayerError` unless it is a non-empty single-scale image."""
        check_image_layer(layer, "denoise")
        data = layer.data
        cmap = getattr(layer, "colormap", None)
        units = getattr(layer, "units", None)
        return cls(
            name=str(layer.name),
            data=data,
            rgb=bool(getattr(layer, "rgb", False)),
            scale=tuple(float(s) for s in layer.scale),
            translate=tuple(float(t) for t in layer.translate),
            rotate=np.asarray(layer.rotate),
            shear=np.asarray(layer.shear),
            affine=np.asarray(layer.affine.affine_matrix),
            axis_labels=tuple(str(a) for a in getattr(layer, "axis_labels", ()) or ()) or None,
            units=tuple(str(u) for u in units) if units is not None else None,
            contrast_limits=tuple(float(c) for c in layer.contrast_limits),  # RGB ones too
            colormap=getattr(cmap, "name", None),
        )

    def geometry(self) -> dict[str, Any]:
        """The keyword arguments that place a new layer exactly over this one."""
        out: dict[str, Any] = {}
        for key in ("scale", "translate", "rotate", "shear", "affine", "axis_labels", "units"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclasses.dataclass
class RunRecord:
    """One finished run, for the Readout and the console.

    Attributes
    ----------
    input_name, output_names
        The input layer and the layers added.
    started
        UTC time the run started (ISO 8601).
    seconds
        Wall time of the engine call.
    megapixels, megapixels_per_second
        Values processed (all planes and channels) and the rate.
    device, tile
        Where and with which tile side it ran.
    model
        The model's one-line description.
    gates
        Gates used for this run (None: the model's own).
    axes, plane_axes, plane_grid
        The layout (see :class:`~napari_addunet.engine.inference.PredictResult`).
    class_names, probabilities, labels
        Classification per plane, or None.
    sigma_before, sigma_after
        Estimated noise standard deviation of the input and of the result
        (:func:`~napari_addunet.engine.noise_estimate.estimate_sigma`).
    rgb
        Whether the input layer was RGB.
    ensemble
        Self-ensemble size of the run (1: off).
    """

    input_name: str
    output_names: list[str]
    started: str
    seconds: float
    megapixels: float
    megapixels_per_second: float
    device: str
    tile: int | None
    model: str
    gates: tuple[float, ...] | None
    axes: str
    plane_axes: str
    plane_grid: tuple[int, ...]
    class_names: list[str] | None = None
    probabilities: np.ndarray | None = None
    labels: list[str] | None = None
    sigma_before: float | None = None
    sigma_after: float | None = None
    rgb: bool = False
    ensemble: int = 1

    def metadata(self) -> dict[str, Any]:
        """The record as stored in an output layer's ``metadata["napari_addunet"]``."""
        return dataclasses.asdict(self)

    def rows(self) -> list[tuple[str, Any]]:
        """The Readout's "last run" section."""
        rows: list[tuple[str, Any]] = [
            ("input", self.input_name),
            ("outputs", ", ".join(self.output_names)),
            ("started (UTC)", self.started),
            ("time (s)", self.seconds),  # four significant digits when shown, small runs too
            ("megapixels", self.megapixels),
            ("megapixels per second", self.megapixels_per_second),
            ("device", self.device),
            ("tile (px)", self.tile if self.tile else "whole planes"),
            ("axes", self.axes),
            ("gates", "learned" if self.gates is None else ", ".join(f"{g:.3f}" for g in self.gates)),
            ("self-ensemble", "off" if self.ensemble == 1 else f"{self.ensemble} orientations"),
            ("noise sigma before", self.sigma_before),
            ("noise sigma after", self.sigma_after),
        ]
        if self.labels:
            shown = self.labels[:8] + (["..."] if len(self.labels) > 8 else [])
            rows.append(("predicted classes", ", ".join(shown)))
        return rows


@dataclasses.dataclass
class LayerRunResult:
    """What :func:`iter_layer_denoise` returns: the layers to add and the record."""

    layers: list[tuple[Any, dict[str, Any], str]]
    record: RunRecord
    denoised: np.ndarray | None
    """The denoised array (``None`` once a widget has handed it to its layer)."""
    residual: np.ndarray | None


def iter_layer_denoise(
    model: Any,
    snapshot: LayerSnapshot,
    *,
    axes: str | None = None,
    tile: int | None = None,
    device: str = "auto",
    gates: Sequence[float] | None = None,
    classify: bool | None = None,
    residual: bool = False,
    cancel: threading.Event | None = None,
    model_label: str = "",
    ensemble: int = 1,
) -> Generator[Progress, None, LayerRunResult]:
    """Denoise (and classify) a layer snapshot step by step; return the new layers.

    Parameters
    ----------
    model
        A model object (the session's active model).
    snapshot
        From :meth:`LayerSnapshot.from_layer`.
    axes
        Axis letters, or None to infer them from the shape and the layer's ``rgb`` flag.
    tile, device, gates, cancel, ensemble
        As in :func:`~napari_addunet.engine.inference.iter_denoise`.
    classify
        None: class probabilities per plane when the model has a classification head.
        True: the same, but a model without a head raises :class:`LayerError` before
        anything is computed. False: no classification.
    residual
        Also return ``<name> [residual]`` (input minus result).
    model_label
        How the model is named in the record.

    Raises
    ------
    LayerError, AxesError, InferenceCancelled, ...
        The engine's errors, with their messages.
    """
    has_head = getattr(model, "head", None) is not None
    if classify is True and not has_head:
        raise LayerError(
            f"this {getattr(model, 'architecture', 'model')} has no classification head, so it cannot "
            "classify; untick classify, or train a model with classes (Train widget, a class per layer)"
        )
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    t0 = time.perf_counter()
    want_classes = classify is not False and has_head
    data, alpha = snapshot.data, None
    typed_colour = axes is not None and axes.upper().endswith("C")  # e.g. YXC typed for the layer
    if snapshot.rgb and (axes is None or typed_colour) and snapshot.data.shape[-1] == 4:
        data, alpha = snapshot.data[..., :3], snapshot.data[..., 3:]  # RGBA: alpha is kept as it is
    result = yield from iter_denoise(
        model,
        data,
        axes=axes,
        tile=tile,
        device=device,
        gates=gates,
        classify=want_classes,
        rgb=snapshot.rgb if axes is None else None,
        cancel=cancel,
        lazy=False,
        ensemble=ensemble,
    )
    seconds = time.perf_counter() - t0
    denoised = np.asarray(result.denoised, dtype=np.float32)
    yield Progress(1, 1, 0.0, "estimating the noise before and after")
    _stop_if_cancelled(cancel)
    # the colour channels of RGBA (the alpha carries no noise); read plane by plane, so a
    # lazy (dask) layer is not loaded whole a second time for the estimate
    sigma_before = _sigma(data, result.axes)
    sigma_after = _sigma(denoised, result.axes)
    values = float(np.prod(denoised.shape)) / 1e6  # processed: without an RGBA layer's alpha
    res = None
    if residual:
        res = np.asarray(data).astype(np.float32) - denoised
    if alpha is not None:  # both results keep the input's alpha (a residual's would be 0)
        kept = np.asarray(alpha, dtype=np.float32)
        denoised = np.concatenate([denoised, kept], axis=-1)
        res = np.concatenate([res, kept], axis=-1) if res is not None else None
    _stop_if_cancelled(cancel)  # the last chance: no layer is added after a cancel
    name = snapshot.name
    out_names = [DENOISED.format(name=name)] + ([RESIDUAL.format(name=name)] if res is not None else [])
    record = RunRecord(
        input_name=name,
        output_names=out_names,
        started=started,
        seconds=seconds,
        megapixels=values,
        megapixels_per_second=values / seconds if seconds > 0 else float("inf"),
        device=str(result.details.get("device", device)),
        tile=result.details.get("tile"),
        model=model_label or getattr(model, "architecture", type(model).__name__),
        gates=tuple(float(g) for g in gates) if gates is not None else None,
        axes=result.axes,
        plane_axes=result.plane_axes,
        plane_grid=tuple(result.plane_grid),
        class_names=result.class_names,
        probabilities=result.probabilities,
        labels=result.labels,
        sigma_before=sigma_before,
        sigma_after=sigma_after,
        rgb=snapshot.rgb,
        ensemble=int(result.details.get("ensemble", 1)),
    )
    meta = {METADATA_KEY: record.metadata()}
    geometry = snapshot.geometry()
    layers: list[tuple[Any, dict[str, Any], str]] = []
    kwargs: dict[str, Any] = {"name": out_names[0], "metadata": meta, "rgb": snapshot.rgb, **geometry}
    if snapshot.contrast_limits is not None:
        kwargs["contrast_limits"] = snapshot.contrast_limits
    if snapshot.colormap and not snapshot.rgb:
        kwargs["colormap"] = snapshot.colormap
    layers.append((denoised, kwargs, "image"))
    if res is not None:
        res_kwargs = {"name": out_names[1], "metadata": {METADATA_KEY: {"residual_of": name}}}
        layers.append((res, {**res_kwargs, "rgb": snapshot.rgb, **geometry}, "image"))
    return LayerRunResult(layers=layers, record=record, denoised=denoised, residual=res)


def _stop_if_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise InferenceCancelled("cancelled after denoising; no layer was added")


def _sigma(data: np.ndarray, axes: str) -> float | None:
    try:
        value = estimate_sigma(data, axes)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def run_layer_denoise(model: Any, snapshot: LayerSnapshot, **kwargs: Any) -> LayerRunResult:
    """Blocking :func:`iter_layer_denoise` (for scripts)."""
    gen = iter_layer_denoise(model, snapshot, **kwargs)
    try:
        while True:
            next(gen)
    except StopIteration as done:
        return done.value
    finally:
        gen.close()
