"""Training data from named arrays (napari image layers), with a class per layer or per slice.

The Train widget passes the arrays of the layers the user ticked, their names, the class
typed next to each, and optionally a CSV of classes per layer or per slice; this module
turns them into the :class:`~napari_addunet.engine.datasets.TrainingData` that
:func:`~napari_addunet.engine.training.train_events` takes, with the layer names kept as
the sources' names (they end up in the trained model's metadata).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .datasets import DataError, TrainingData, clean_data, noisy_data, paired_data

KINDS = {
    "clean": "clean images (synthetic noise is added)",
    "noisy": "noisy images only (blind-spot, Noise2Void)",
    "pairs": "pairs: noisy input and its target (clean, or a second noisy shot)",
}
"""The kinds of training data, as offered by the Train widget."""


def read_layer_classes(path: str | os.PathLike) -> dict[str, str]:
    """Read classes per layer (``layer,class``) or per slice (``layer,slice,class``) from a CSV.

    A header row is optional; with one, the columns are found by name (``layer``/``file``/
    ``image``/``name``, ``slice``/``plane``/``z``, ``class``/``label``). An empty slice
    cell means the whole layer.

    Returns
    -------
    dict
        ``{"layer": class}`` and ``{"layer[z]": class}`` entries.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise DataError(f"class file {path.name} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        numbered = [(reader.line_num, [c.strip() for c in r]) for r in reader]
    numbered = [(n, r) for n, r in numbered if any(r)]  # blank lines keep their numbers
    rows = [r for _, r in numbered]
    if not rows:
        raise DataError(f"class file {path.name} is empty")
    names = {
        "layer": ("layer", "file", "image", "name", "filename"),
        "slice": ("slice", "plane", "z", "index"),
        "class": ("class", "label", "class_name"),
    }
    head = [c.lower() for c in rows[0]]
    cols = {
        key: next(i for i, h in enumerate(head) if h in options)
        for key, options in names.items()
        if set(options) & set(head)
    }
    if "layer" in cols and "class" in cols:
        body = rows[1:]
    elif len(rows[0]) in (2, 3):
        body = rows
        cols = {"layer": 0, "class": 1} if len(rows[0]) == 2 else {"layer": 0, "slice": 1, "class": 2}
    else:
        raise DataError(f"class file {path.name}: expected columns layer,class or layer,slice,class")
    out: dict[str, str] = {}
    for lineno, row in numbered[len(rows) - len(body) :]:
        try:
            key = _strip_ext(row[cols["layer"]])
            if "slice" in cols and row[cols["slice"]] != "":
                key = f"{key}[{int(row[cols['slice']])}]"
            value = row[cols["class"]]
        except (IndexError, ValueError) as exc:
            raise DataError(f"class file {path.name}, line {lineno}: cannot read {','.join(row)!r}") from exc
        if key in out and out[key] != value:
            raise DataError(f"class file {path.name}: {key} has two classes ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def _array(name: str, data: Any) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise DataError(
            f"layer {name!r} has shape {arr.shape}; training takes 2-D images or 3-D stacks "
            "(planes, height, width) of one channel"
        )
    if arr.size == 0:
        raise DataError(f"layer {name!r} is empty (shape {arr.shape})")
    return arr


def _planes(name: str, arr: np.ndarray) -> list[str]:
    return [name] if arr.ndim == 2 else [f"{name}[{z}]" for z in range(arr.shape[0])]


def plane_labels(names: Sequence[str], arrays: Sequence[np.ndarray], table: Mapping[str, Any]) -> list[Any]:
    """One label per plane from a table keyed by ``layer`` or ``layer[z]`` (the slice wins)."""
    out, missing = [], []
    known = set()
    for name, arr in zip(names, arrays, strict=True):
        for plane in _planes(name, arr):
            # a layer named "cells.tif" matches a table that says "cells.tif" or "cells"
            keys = [plane, _strip_ext(plane), name, _strip_ext(name)]
            if arr.ndim == 2:  # a 2-D layer is its own slice 0 (a per-slice table may say so)
                keys += [f"{name}[0]", f"{_strip_ext(name)}[0]"]
            hit = next((k for k in keys if k in table), None)
            value = table[hit] if hit is not None else None
            if value is None or str(value).strip() == "":
                missing.append(plane)
            else:
                known.update(k for k in keys if k in table)
            out.append(value)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(
            f"no class for {', '.join(missing[:5])}{more}; give every layer a class (or every slice, "
            "as layer[z] in the CSV)"
        )
    unused = sorted(k for k in table if k not in known)
    if unused:
        raise DataError(
            f"the classes name layers that are not in the training data: {', '.join(unused[:5])} "
            f"(layers: {', '.join(names)})"
        )
    return out


def layer_training_data(
    kind: str,
    images: Sequence[tuple[str, Any]],
    *,
    targets: Sequence[Any] | None = None,
    classes: Sequence[str | None] | None = None,
    label_file: str | os.PathLike | Mapping[str, Any] | None = None,
    normalization: Mapping[str, Any] | str | None = None,
) -> TrainingData:
    """Build training data from layers.

    Parameters
    ----------
    kind
        ``"clean"``, ``"noisy"`` or ``"pairs"`` (see :data:`KINDS`).
    images
        ``(layer name, array)`` pairs; arrays are 2-D images or 3-D stacks.
    targets
        For ``"pairs"``: the target array of each image, same shapes.
    classes
        A class name per layer for joint denoising and classification; all empty or None:
        no classes. Mixing named and unnamed layers is an error.
    label_file
        A CSV (``layer,class`` or ``layer,slice,class``; see :func:`read_layer_classes`) or a mapping
        ``{"layer" or "layer[z]": class}``; overrides ``classes``.
    normalization
        As in :func:`~napari_addunet.engine.datasets.clean_data`.

    Raises
    ------
    DataError
        With what to change.
    """
    if kind not in KINDS:
        raise DataError(f"unknown kind of training data {kind!r}; use {', '.join(KINDS)}")
    if not images:
        raise DataError("no training layers: tick at least one image layer")
    names = [str(n) for n, _ in images]
    if len(set(names)) != len(names):
        raise DataError(f"layer names must be unique, got {names}")
    arrays = [_array(n, a) for n, a in images]
    target_arrays = None
    if kind == "pairs":
        if targets is None or len(targets) != len(arrays) or any(t is None for t in targets):
            raise DataError("pairs need a target layer for every input layer")
        target_arrays = [_array(f"target of {n}", t) for n, t in zip(names, targets, strict=True)]
        for n, a, t in zip(names, arrays, target_arrays, strict=True):
            if a.shape != t.shape:
                raise DataError(f"layer {n!r} has shape {a.shape} but its target has shape {t.shape}")
    labels = None
    if label_file is not None:
        table = label_file if isinstance(label_file, Mapping) else read_layer_classes(label_file)
        table = {_strip_ext(str(k)): v for k, v in table.items()}
        labels = plane_labels(names, arrays, table)
    elif classes is not None:
        given = [str(c).strip() if c is not None else "" for c in classes]
        if len(given) != len(names):
            raise DataError(f"{len(given)} classes for {len(names)} layers")
        if any(given) and not all(given):
            empty = [n for n, c in zip(names, given, strict=True) if not c]
            raise DataError(
                f"some layers have a class and others not ({', '.join(empty[:5])}); give every "
                "training layer a class, or none for denoising only"
            )
        if all(given):
            labels = [c for c, arr in zip(given, arrays, strict=True) for _ in _planes("", arr)]
    named = dict(zip(names, arrays, strict=True))  # messages name the layers
    if kind == "clean":
        return clean_data(named, labels=labels, normalization=normalization)
    if kind == "noisy":
        return noisy_data(named, labels=labels, normalization=normalization)
    targets_named = dict(zip(names, target_arrays, strict=True))
    return paired_data(named, targets_named, labels=labels, normalization=normalization)


def _strip_ext(key: str) -> str:
    """CSV rows may name ``cells.tif`` for the layer ``cells``: drop a known image extension."""
    base, bracket, rest = key.partition("[")
    for ext in (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".zarr"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    return base + bracket + rest
