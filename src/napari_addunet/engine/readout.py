"""What the Readout shows, as plain data: the model, image quality, class probabilities, a report.

Everything here is numpy and plain Python, so that the numbers the widget shows are the
ones a script gets:

* :func:`model_info` -- architecture, parameters, receptive field, training data and noise,
  gates and class names of a model.
* :func:`compare` -- PSNR and SSIM of an image (any layout) against a reference.
* :func:`probabilities_at` -- the class probabilities of the slice at a position, from the
  metadata the plugin stores on its output layers.
* :class:`Report` -- rows ``(section, item, value)`` rendered as text or CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .axes import resolve_axes
from .metrics import psnr as _psnr
from .metrics import ssim as _ssim

# torch.fx, imported here (in the thread that opens a widget) rather than on first use in a
# worker: two threads importing the same package at once can block each other.
from .receptive_field import receptive_field as _receptive_field  # noqa: F401

METADATA_KEY = "napari_addunet"
"""Key of the plugin's entry in an output layer's ``metadata``."""


# -- the model -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A model described for people.

    Attributes
    ----------
    architecture, summary
        Registry name and its one-line description.
    parameters
        Trainable parameters.
    receptive_field
        Side in pixels of the input region one output pixel depends on (None if unknown).
    config
        The architecture settings.
    gates
        AddUNet skip gates (shallow to deep), or None.
    kernels
        Kernel size per level for AddUNet (labels the gates), or None.
    class_names
        Classes of the classification head (empty without one).
    source
        Where the model came from (bundled name, file, training).
    training_data, training_noise
        One-line descriptions from the model's metadata ("unknown" when not recorded).
    normalization
        The recorded intensity normalisation.
    """

    architecture: str
    summary: str
    parameters: int
    receptive_field: int | None
    config: dict[str, Any]
    gates: tuple[float, ...] | None
    kernels: tuple[int, ...] | None
    class_names: list[str]
    source: str
    training_data: str
    training_noise: str
    normalization: dict[str, Any]

    @property
    def title(self) -> str:
        """E.g. ``"addunet, 340,240 parameters, receptive field 43 px"``."""
        rf = f", receptive field {self.receptive_field} px" if self.receptive_field else ""
        return f"{self.architecture}, {self.parameters:,} parameters{rf}"


def _compact(value: Any, depth: int = 0) -> str:
    """A short one-line rendering of nested metadata."""
    if isinstance(value, Mapping):
        if depth > 1:
            return "{...}"
        parts = [f"{k} {_compact(v, depth + 1)}" for k, v in value.items() if v not in (None, "", [], {})]
        return "; ".join(parts) if depth == 0 else "(" + ", ".join(parts) + ")"
    if isinstance(value, (list, tuple)):
        items = [_compact(v, depth + 1) for v in value[:6]]
        more = ", ..." if len(value) > 6 else ""
        return "[" + ", ".join(items) + more + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def model_info(model: Any, source: str = "") -> ModelInfo:
    """Describe a model (see :class:`ModelInfo`)."""
    from napari_addunet.models.registry import model_summaries

    from .inference import model_receptive_field

    try:
        rf: int | None = model_receptive_field(model)
    except Exception:  # noqa: BLE001 - exotic layers the tracer cannot follow
        rf = None
    meta = dict(getattr(model, "metadata", {}) or {})
    training = meta.get("training") or {}
    if not isinstance(training, Mapping):
        training = {"note": training}
    # a written description (bundled models) reads better than the engine's record of sizes
    data = training.get("data_description") or training.get("data")
    noise = training.get("noise_description") or training.get("noise")
    if isinstance(data, Mapping) and "train" in data:
        data = data["train"]
    gates = tuple(float(g) for g in model.gates) if hasattr(model, "gates") else None
    kernels = getattr(model.config, "kernels", None)
    return ModelInfo(
        architecture=model.architecture,
        summary=model_summaries().get(model.architecture, ""),
        parameters=int(model.num_parameters()),
        receptive_field=rf,
        config=model.config.to_dict(),
        gates=gates,
        kernels=tuple(int(k) for k in kernels) if gates is not None and kernels is not None else None,
        class_names=list(model.class_names) if model.num_classes else [],
        source=source or str(getattr(model, "source_path", "") or ""),
        training_data=_compact(data) if data else "unknown",
        training_noise=_compact(noise) if noise else "unknown",
        normalization=dict(meta.get("normalization") or {}),
    )


# -- image quality -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Quality:
    """PSNR (dB) and SSIM of an image against a reference.

    ``ssim`` is the mean over the 2-D planes (and channels); ``planes`` how many.
    """

    psnr: float
    ssim: float
    data_range: float
    planes: int


def data_range_of(reference: Any) -> float:
    """The peak value used for PSNR and SSIM against ``reference``.

    1 for images within ``[0, 1]`` (the convention of the denoising literature), the type's
    range for integer images up to 16 bits (255, 65535), and the reference's
    ``max - min`` otherwise.
    """
    ref = np.asarray(reference)
    if ref.dtype.kind in "ui" and ref.dtype.itemsize <= 2:
        info = np.iinfo(ref.dtype)
        return float(info.max - min(info.min, 0))
    finite = ref[np.isfinite(ref)] if ref.dtype.kind == "f" else ref
    if finite.size == 0:
        raise ValueError("the reference holds no finite values")
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        return 1.0
    return hi - lo if hi > lo else 1.0


def compare(
    image: Any,
    reference: Any,
    axes: str | None = None,
    rgb: bool | None = None,
    data_range: float | None = None,
) -> Quality:
    """PSNR and SSIM of ``image`` against ``reference`` (same shape, any layout).

    Parameters
    ----------
    image, reference
        Arrays of the same shape.
    axes
        Their axis letters; None infers them (``rgb`` as napari's flag).
    data_range
        Peak value; None: :func:`data_range_of` the reference.

    Returns
    -------
    Quality
        PSNR over all values; SSIM averaged over the 2-D ``YX`` planes.
    """
    est, ref = np.asarray(image), np.asarray(reference)
    if est.shape != ref.shape:
        raise ValueError(f"the image has shape {est.shape} but the reference has shape {ref.shape}")
    if est.size == 0:
        raise ValueError("cannot compare empty images")
    for name, arr in (("the image", est), ("the reference", ref)):
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise ValueError(f"{name} holds {bad} NaN or infinite value(s); PSNR and SSIM need finite values")
    ax = resolve_axes(ref.shape, axes, rgb)
    rng = float(data_range) if data_range is not None else data_range_of(ref)
    p = _psnr(ref, est, rng)
    order = [ax.index(a) for a in ax if a not in "YX"] + [ax.index("Y"), ax.index("X")]
    r2 = np.transpose(ref, order).reshape(-1, ref.shape[ax.index("Y")], ref.shape[ax.index("X")])
    e2 = np.transpose(est, order).reshape(r2.shape)
    values = [_ssim(r, e, rng) for r, e in zip(r2, e2, strict=True)]
    return Quality(psnr=p, ssim=float(np.mean(values)), data_range=rng, planes=len(values))


# -- class probabilities of a slice -------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SliceProbabilities:
    """Class probabilities of one slice: ``label`` names it (``"z=3"``), ``names``/``values`` the bars."""

    label: str
    names: list[str]
    values: np.ndarray

    @property
    def best(self) -> str:
        return self.names[int(np.argmax(self.values))]


def probabilities_at(record: Mapping[str, Any], data_index: Sequence[float]) -> SliceProbabilities | None:
    """The class probabilities of the slice at ``data_index``.

    Parameters
    ----------
    record
        The plugin's metadata of an output layer (``layer.metadata["napari_addunet"]``):
        ``probabilities`` ``(n_planes, k)``, ``class_names``, ``axes``, ``plane_axes``,
        ``plane_grid``.
    data_index
        A position in the layer's data coordinates (one number per axis of ``axes``
        without an RGB channel axis; extra leading numbers are ignored).

    Returns
    -------
    SliceProbabilities or None
        None when the record has no probabilities. Planes split along a channel axis that
        is not on screen are averaged.
    """
    probs = record.get("probabilities")
    names = record.get("class_names")
    if probs is None or not names:
        return None
    probs = np.asarray(probs, dtype=np.float64)
    axes = str(record.get("axes", ""))
    plane_axes = str(record.get("plane_axes", ""))
    grid = tuple(int(g) for g in record.get("plane_grid", ()))
    if not plane_axes:
        return SliceProbabilities("image", list(names), probs.reshape(-1, len(names)).mean(axis=0))
    index = list(data_index)
    # the RGB channel axis (last, "C") is not a napari dimension: drop it from the axes
    spatial = axes[:-1] if record.get("rgb") and axes.endswith("C") else axes
    index = (
        index[-len(spatial) :] if len(index) >= len(spatial) else [0] * (len(spatial) - len(index)) + index
    )
    position = {a: int(round(float(i))) for a, i in zip(spatial, index, strict=True)}
    cube = probs.reshape(grid + (len(names),))
    picks: list[Any] = []
    label = []
    for a, n in zip(plane_axes, grid, strict=True):
        if a in position:
            i = min(max(position[a], 0), n - 1)
            picks.append(i)
            label.append(f"{a.lower()}={i}")
        else:
            picks.append(slice(None))
    values = cube[tuple(picks)].reshape(-1, len(names)).mean(axis=0)
    return SliceProbabilities(" ".join(label) or "image", list(names), values)


# -- the report ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Report:
    """Rows ``(section, item, value)``: the Readout's content, as text or CSV."""

    rows: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def add(self, section: str, item: str, value: Any) -> None:
        self.rows.append((section, item, _fmt(value)))

    def extend(self, section: str, items: Iterable[tuple[str, Any]]) -> None:
        for item, value in items:
            self.add(section, item, value)

    def sections(self) -> list[str]:
        return list(dict.fromkeys(s for s, _, _ in self.rows))

    def text(self) -> str:
        """Plain text: a heading per section, then ``item: value`` lines."""
        out = []
        for section in self.sections():
            out.append(section)
            out.extend(f"  {item}: {value}" for s, item, value in self.rows if s == section)
        return "\n".join(out)

    def csv(self) -> str:
        """CSV with the header ``section,item,value``."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["section", "item", "value"])
        writer.writerows(self.rows)
        return buf.getvalue()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value.is_integer() and abs(value) < 1e15:  # a data range of 65535 reads 65535
            return str(int(value))
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def model_rows(info: ModelInfo) -> list[tuple[str, Any]]:
    """The model section of the report."""
    rows: list[tuple[str, Any]] = [
        ("architecture", info.architecture),
        ("parameters", f"{info.parameters:,}"),
        ("receptive field (px)", info.receptive_field),
        ("source", info.source or "-"),
        ("training data", info.training_data),
        ("training noise", info.training_noise),
    ]
    if info.gates is not None:
        labels = (
            [f"k={k}" for k in info.kernels] if info.kernels else [str(i) for i in range(len(info.gates))]
        )
        rows.append(
            ("learned gates", ", ".join(f"{lab}: {g:.3f}" for lab, g in zip(labels, info.gates, strict=True)))
        )
    rows.append(
        ("classes", ", ".join(info.class_names) if info.class_names else "none (no classification head)")
    )
    return rows
