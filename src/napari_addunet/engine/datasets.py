"""Training data: images from arrays, stacks, files or folders; labels; splits; patches.

Every source (an array, a file) becomes one or more 2-D planes (a 3-D stack gives its
slices), normalised to about ``[0, 1]`` in the way recorded in the checkpoint. The planes
of one source stay together when a validation set is held out, so the validation images
are never seen during training.

Three kinds of data, one per training mode:

* :func:`clean_data`: clean images; synthetic noise is added on the fly (supervised).
* :func:`noisy_data`: noisy images only; blind-spot training (Noise2Void).
* :func:`paired_data`: ``(input, target)`` pairs of the same scene: two noisy shots
  (Noise2Noise) or a noisy and a clean one.

Any kind takes labels for the joint denoise + classify objective: one class per source or
per plane, as a list, a ``{name: class}`` mapping, a CSV file (:func:`read_label_csv`), or
the folder layout of :func:`class_folder_data`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .noisy_percentiles import SAMPLE, PixelSample, pixel_sample
from .normalization import check_dtype, parse_normalization, percentiles_and_bounds

Mode = Literal["supervised", "noise2void", "pairs"]
MODES: tuple[str, ...] = ("supervised", "noise2void", "pairs")


class DataError(ValueError):
    """Training data that cannot be used, with what to do about it."""


# -- reading sources ---------------------------------------------------------------------------
@dataclasses.dataclass
class _Source:
    name: str
    array: np.ndarray  # 2-D (one plane) or 3-D (planes along axis 0)


MIN_PATCH = 8
"""The smallest training patch side (``TrainingConfig.patch_size``)."""


def _as_array(obj: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(obj)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{name}: cannot be read as an array ({type(exc).__name__}: {exc})") from exc
    try:
        check_dtype(arr.dtype)
    except TypeError as exc:
        raise DataError(f"{name}: {exc}") from exc
    if arr.ndim == 3 and arr.shape[-1] == 1 and arr.shape[0] > 4 and arr.shape[1] > 4:
        arr = arr[..., 0]  # a grey image with a channel axis (H, W, 1), not H planes of W x 1
    if arr.ndim == 3 and arr.shape[-1] == 2 and arr.shape[0] > 4 and arr.shape[1] > 4:
        raise DataError(
            f"{name} has shape {arr.shape}, which looks like a grey image with an alpha channel; "
            "training uses single-channel planes: pass its grey channel (image[..., 0])"
        )
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4 and arr.shape[1] > 4:
        raise DataError(
            f"{name} has shape {arr.shape}, which looks like a colour (RGB) image; training uses "
            "single-channel planes: convert it to grey (e.g. skimage.color.rgb2gray) or pass its planes"
        )
    if arr.ndim not in (2, 3):
        raise DataError(
            f"{name} has shape {arr.shape}; pass 2-D images (H, W) or 3-D stacks (planes, H, W), "
            "or a list of them"
        )
    if arr.size == 0:
        raise DataError(f"{name} is empty (shape {arr.shape})")
    return arr


def _read_file(path: Path) -> _Source:
    from .image_io import ImageIOError, read_image

    try:
        image = read_image(path)
    except ImageIOError as exc:
        raise DataError(str(exc)) from exc
    data = np.asarray(image.data)
    if image.rgb:
        raise DataError(
            f"{path.name} is a colour image; training uses single-channel images: convert it to grey first"
        )
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    return _Source(path.name, _as_array(data, path.name))


def _sources(obj: Any, what: str) -> list[_Source]:
    """Expand one user input into sources (arrays with names)."""
    from .image_io import image_files

    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.exists():
            raise DataError(f"{what}: {path.name}: no such file or folder")
        if path.is_dir():
            files = image_files(path)
            if not files:
                raise DataError(
                    f"{what}: no images in folder {path.name} (readable: TIFF, PNG, JPEG, BMP, zarr)"
                )
            return [_read_file(f) for f in files]
        return [_read_file(path)]
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
        return [_Source("", _as_array(obj, f"{what} array"))]
    if isinstance(obj, Mapping):  # named arrays: messages and labels use the names
        named = []
        for key, item in obj.items():
            if not (isinstance(item, np.ndarray) or hasattr(item, "__array__")):
                raise DataError(f"{what}: {key!r} must be an array, got {type(item).__name__}")
            named.append(_Source(str(key), _as_array(item, str(key))))
        return named
    if isinstance(obj, Sequence):
        out: list[_Source] = []
        for item in obj:
            if (
                isinstance(item, Sequence)
                and not isinstance(item, (str, os.PathLike))
                and not hasattr(item, "__array__")
            ):
                raise DataError(f"{what}: nested lists are not accepted; pass a flat list of arrays or paths")
            out.extend(_sources(item, what))
        return out
    raise DataError(f"{what}: expected arrays, a list of arrays, files or folders, got {type(obj).__name__}")


def _load(images: Any, what: str) -> list[_Source]:
    if images is None:
        raise DataError(f"no {what} given")
    sources = _sources(images, what)
    if not sources:
        raise DataError(f"no {what}: the list is empty")
    for i, s in enumerate(sources):
        if not s.name:
            s.name = f"array {i}"
    return sources


# -- normalisation --------------------------------------------------------------------------------
def _resolve_normalization(spec: Mapping[str, Any] | str | None, sources: list[_Source]) -> dict[str, Any]:
    if spec is None or spec == "auto":
        if all(s.array.dtype == np.uint8 for s in sources):
            return {"method": "range", "low": 0.0, "high": 255.0}
        return {"method": "percentile", "low": 0.1, "high": 99.9}
    out = parse_normalization(spec)
    if out["method"] == "range" and (out["low"] is None or out["high"] is None):
        kinds = {s.array.dtype for s in sources}
        if len(kinds) > 1:
            raise DataError(
                "normalization 'range' without low/high uses each dtype's range, but the images have "
                f"several dtypes ({', '.join(sorted(map(str, kinds)))}); give low and high"
            )
        dt = next(iter(kinds))
        if dt.kind in "ui":
            info = np.iinfo(dt)
            low, high = float(info.min), float(info.max)
        else:
            low, high = 0.0, 1.0
        out = {
            "method": "range",
            "low": out["low"] if out["low"] is not None else low,
            "high": out["high"] if out["high"] is not None else high,
        }
    return out


def _affine(arr: np.ndarray, spec: dict[str, Any]) -> tuple[float, float, tuple[float, float]]:
    """``(offset, scale)`` that map ``arr`` as the inference engine will, and where its
    percentiles land in normalised units (0 and 1 unless they coincide)."""
    method = spec["method"]
    if method == "none":
        return 0.0, 1.0, (0.0, 1.0)
    if method == "range":
        return float(spec["low"]), float(spec["high"]) - float(spec["low"]), (0.0, 1.0)
    (p_lo, p_hi), (lo, hi) = percentiles_and_bounds(
        arr.astype(np.float64, copy=False), spec["low"], spec["high"]
    )
    scale = hi - lo if hi > lo else 1.0
    return lo, scale, ((p_lo - lo) / scale, (p_hi - lo) / scale)


def _check_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(arr)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad.ravel())), arr.shape))
        raise DataError(
            f"{name} holds {count} NaN/Inf value(s) (first at index {first}); training needs finite "
            "data: remove or fill them first (e.g. numpy.nan_to_num)"
        )


def _planes(source: _Source) -> list[tuple[str, np.ndarray]]:
    arr = source.array
    if arr.ndim == 2:
        return [(source.name, arr)]
    return [(f"{source.name}[{z}]", arr[z]) for z in range(arr.shape[0])]


# -- the data object ------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainingData:
    """Normalised training planes with their labels and origin.

    Build it with :func:`clean_data`, :func:`noisy_data`, :func:`paired_data` or
    :func:`class_folder_data` rather than directly.

    Attributes
    ----------
    mode
        ``"supervised"`` (clean images), ``"noise2void"`` (noisy only) or ``"pairs"``.
    inputs
        2-D float32 planes, normalised.
    targets
        For ``"pairs"``: the target plane of each input (normalised with the input's numbers).
    labels
        Class index per plane, or None.
    class_names
        Names of the classes (``labels`` index into them).
    groups
        Index of the source (file or array) each plane comes from; validation splits keep
        a source's planes together.
    names
        Readable name of each plane (``"cells.tif[3]"``).
    sources
        Names of the sources.
    normalization
        How the raw images were mapped to the network's range, in the inference engine's
        terms (``{"method": "range"|"percentile"|"none", "low", "high"}``).
    pixel_samples
        Clean images with percentile normalisation only: for each plane, a fixed sample of the
        normalised pixels its percentiles were taken over (one array shared by the planes of a
        stack), from which training estimates the percentiles the noisy image would have
        (:mod:`~napari_addunet.engine.noisy_percentiles`); None otherwise.
    percentile_points
        With ``pixel_samples``: the low and high percentiles of each plane's image (or
        stack) in normalised units, from all its pixels: ``(0, 1)``, or the value both take
        when they coincide and the image was mapped by its minimum and maximum.
    """

    mode: Mode
    inputs: list[np.ndarray]
    targets: list[np.ndarray] | None = None
    labels: np.ndarray | None = None
    class_names: list[str] = dataclasses.field(default_factory=list)
    groups: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    names: list[str] = dataclasses.field(default_factory=list)
    sources: list[str] = dataclasses.field(default_factory=list)
    normalization: dict[str, Any] = dataclasses.field(default_factory=lambda: {"method": "none"})
    pixel_samples: list[PixelSample] | None = None
    percentile_points: list[tuple[float, float]] | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def subset(self, indices: Sequence[int]) -> TrainingData:
        """The planes at ``indices`` (same classes and normalisation)."""
        idx = [int(i) for i in indices]
        used = sorted({int(self.groups[i]) for i in idx})
        renumber = {g: k for k, g in enumerate(used)}  # groups index ``sources``: keep them dense
        return TrainingData(
            mode=self.mode,
            inputs=[self.inputs[i] for i in idx],
            targets=None if self.targets is None else [self.targets[i] for i in idx],
            labels=None if self.labels is None else self.labels[idx],
            class_names=list(self.class_names),
            groups=np.asarray([renumber[int(self.groups[i])] for i in idx], dtype=np.int64),
            names=[self.names[i] for i in idx],
            sources=[self.sources[g] for g in used] if self.sources else [],
            normalization=dict(self.normalization),
            pixel_samples=None if self.pixel_samples is None else [self.pixel_samples[i] for i in idx],
            percentile_points=None
            if self.percentile_points is None
            else [self.percentile_points[i] for i in idx],
        )

    def check_patch_size(self, patch_size: int) -> None:
        """Raise :class:`DataError` if a plane is smaller than ``patch_size`` in either axis."""
        small = [
            (n, p.shape) for n, p in zip(self.names, self.inputs, strict=True) if min(p.shape) < patch_size
        ]
        if small:
            listed = ", ".join(f"{n} {s[0]}x{s[1]}" for n, s in small[:3])
            more = f" and {len(small) - 3} more" if len(small) > 3 else ""
            smallest = min(min(s) for _, s in small)
            advice = (
                f"use patch_size <= {smallest} or larger images"
                if smallest >= MIN_PATCH
                else f"patches are at least {MIN_PATCH} px: use larger images"
            )
            raise DataError(
                f"{len(small)} image(s) are smaller than the {patch_size}x{patch_size} patch: "
                f"{listed}{more}; {advice}"
            )

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for a checkpoint's metadata (names only, no folders)."""
        shapes = [p.shape for p in self.inputs]
        out: dict[str, Any] = {
            "mode": self.mode,
            "sources": len(set(self.groups.tolist())) if len(self.groups) else 0,
            "planes": len(self.inputs),
            "pixels": int(sum(h * w for h, w in shapes)),
        }
        if shapes:
            out["min_size"] = [int(min(s[0] for s in shapes)), int(min(s[1] for s in shapes))]
            out["max_size"] = [int(max(s[0] for s in shapes)), int(max(s[1] for s in shapes))]
        if self.sources:
            out["names"] = self.sources[:20] + (["..."] if len(self.sources) > 20 else [])
        if self.labels is not None:
            counts = np.bincount(self.labels, minlength=len(self.class_names))
            out["classes"] = {n: int(c) for n, c in zip(self.class_names, counts, strict=True)}
        return out


# -- labels ------------------------------------------------------------------------------------------
def read_label_csv(path: str | os.PathLike) -> dict[str, Any]:
    """Read a label table: one row per image (``file,label``) or per plane (``file,plane,label``).

    A header row is optional; with one, the columns are found by name (``file``/``image``/
    ``name``, ``plane``/``slice``/``z``, ``label``/``class``). Files are matched by name
    (with or without extension). Labels may be class names or integers.

    Returns
    -------
    dict
        ``{"name": label}`` or ``{"name[plane]": label}`` entries.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label file {path.name} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        numbered = [(reader.line_num, r) for r in reader]
    numbered = [(n, r) for n, r in numbered if any(c.strip() for c in r)]  # blank lines keep their numbers
    rows = [r for _, r in numbered]
    if not rows:
        raise DataError(f"label file {path.name} is empty")
    head = [c.strip().lower() for c in rows[0]]
    names = {
        "file": ("file", "image", "name", "filename", "path"),
        "plane": ("plane", "slice", "z", "index"),
        "label": ("label", "class", "class_name", "target"),
    }
    cols: dict[str, int] = {}
    for key, options in names.items():
        for i, h in enumerate(head):
            if h in options:
                cols[key] = i
                break
    if "file" in cols and "label" in cols:
        body = rows[1:]
    else:
        body = rows
        width = len(rows[0])
        if width == 2:
            cols = {"file": 0, "label": 1}
        elif width == 3:
            cols = {"file": 0, "plane": 1, "label": 2}
        else:
            raise DataError(
                f"label file {path.name}: expected columns file,label or file,plane,label, "
                f"got {len(rows[0])} columns"
            )
    out: dict[str, Any] = {}
    for lineno, row in numbered[len(rows) - len(body) :]:
        try:
            name = Path(row[cols["file"]].strip()).name
            label = row[cols["label"]].strip()
            if "plane" in cols and row[cols["plane"]].strip() != "":
                name = f"{name}[{int(row[cols['plane']])}]"
        except (IndexError, ValueError) as exc:
            raise DataError(f"label file {path.name}, line {lineno}: cannot read {row!r}") from exc
        if name in out and out[name] != label:
            raise DataError(f"label file {path.name}: {name} has two labels ({out[name]!r} and {label!r})")
        out[name] = label
    return out


def _split_plane(name: str) -> tuple[str, str]:
    """``"a[1].tif[3]"`` -> ``("a[1].tif", "[3]")``: only a final ``[digits]`` is a plane index
    (file names may hold brackets of their own)."""
    match = re.fullmatch(r"(.*)(\[\d+\])", name)
    return (match.group(1), match.group(2)) if match else (name, "")


def _key_forms(name: str) -> list[str]:
    """``name`` as given, and without the file extension (a plane suffix ``[z]`` is kept)."""
    base, plane = _split_plane(name)
    stem = Path(base).stem if Path(base).suffix else base
    return [name, stem + plane]


def _label_for(names: list[str], table: Mapping[str, Any]) -> list[Any]:
    """Look each plane up by ``name[z]``, then by its source's name, with or without extension."""
    index: dict[str, Any] = {}
    for key, value in table.items():
        for form in _key_forms(str(key)):
            index.setdefault(form, value)
    out, missing, used = [], [], set()
    for n in names:
        base, plane = _split_plane(n)
        keys = _key_forms(n) + _key_forms(base)
        if not plane:  # a 2-D image is its own plane 0 (a per-plane table may say so)
            keys += _key_forms(n + "[0]")
        hit = next((k for k in keys if k in index), None)
        if hit is None:
            missing.append(n)
        else:
            used.add(hit)
        out.append(index.get(hit) if hit is not None else None)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(
            f"labels do not match the images: no label for {', '.join(missing[:5])}{more} "
            f"({len(table)} labels for {len(names)} planes)"
        )
    unused = [str(k) for k in table if not used.intersection(_key_forms(str(k)))]
    if unused:
        more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
        raise DataError(f"labels do not match the images: no image named {', '.join(unused[:5])}{more}")
    return out


def _encode_labels(raw: list[Any], class_names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    if isinstance(class_names, str | bytes):
        raise DataError(f"class_names must be a list of names, got the string {class_names!r}")
    names = [str(c) for c in class_names] if class_names is not None else None
    if names is not None and len(set(names)) != len(names):
        raise DataError(f"class names must be unique, got {names}")

    def as_int(v: Any) -> int | None:
        if isinstance(v, (bool, np.bool_)):
            return None
        if isinstance(v, (int, np.integer)):
            return int(v)
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            return int(v)
        return None

    ints = [as_int(v) for v in raw]
    if names is not None and all(isinstance(v, str) and v in names for v in raw):
        codes = [names.index(v) for v in raw]
    elif all(i is not None for i in ints):
        codes = [int(i) for i in ints]  # type: ignore[arg-type]
        if min(codes) < 0:
            raise DataError(f"class labels must be >= 0, got {min(codes)}")
        if names is None:
            names = [f"class_{i}" for i in range(max(codes) + 1)]
        elif max(codes) >= len(names):
            raise DataError(
                f"label {max(codes)} is out of range for {len(names)} class names ({', '.join(names)})"
            )
    elif all(isinstance(v, str) for v in raw):
        if names is None:
            names = sorted(set(raw))
        unknown = sorted({v for v in raw if v not in names})
        if unknown:
            raise DataError(f"labels {unknown[:5]} are not among the class names {names}")
        codes = [names.index(v) for v in raw]
    else:
        raise DataError("labels must all be class indices (integers) or all class names (strings)")
    return np.asarray(codes, dtype=np.int64), names


def _attach_labels(
    labels: Any,
    class_names: Sequence[str] | None,
    sources: list[_Source],
    plane_names: list[str],
    groups: np.ndarray,
) -> tuple[np.ndarray | None, list[str]]:
    if labels is None:
        if class_names is not None:
            raise DataError("class names were given without labels")
        return None, []
    if isinstance(labels, (str, os.PathLike)):
        labels = read_label_csv(labels)
    if isinstance(labels, Mapping):
        seen: dict[str, int] = {}
        for s in sources:
            seen[s.name] = seen.get(s.name, 0) + 1
        twice = sorted(n for n, k in seen.items() if k > 1)
        if twice:
            raise DataError(
                f"{len(twice)} file name(s) occur in more than one folder ({', '.join(twice[:3])}); a "
                "label table matches images by file name, so it cannot tell them apart: rename them, "
                "or put each class in its own folder and use class folders"
            )
        raw = _label_for(plane_names, labels)
    else:
        seq = list(np.asarray(labels).ravel()) if isinstance(labels, np.ndarray) else list(labels)
        if len(seq) == len(sources):
            raw = [seq[g] for g in groups]
        elif len(seq) == len(plane_names):
            raw = seq
        else:
            raise DataError(
                f"labels do not match the images: {len(seq)} labels for {len(sources)} image(s) with "
                f"{len(plane_names)} plane(s); give one label per image or one per plane"
            )
    return _encode_labels(raw, class_names)


# -- constructors ------------------------------------------------------------------------------------
def _build(
    mode: Mode,
    images: Any,
    targets: Any,
    labels: Any,
    class_names: Sequence[str] | None,
    normalization: Mapping[str, Any] | str | None,
    what: str,
) -> TrainingData:
    sources = _load(images, what)
    norm = _resolve_normalization(normalization, sources)
    target_sources = _load(targets, "targets") if mode == "pairs" else None
    if target_sources is not None:
        n_in = sum(len(_planes(s)) for s in sources)
        n_tg = sum(len(_planes(s)) for s in target_sources)
        if len(target_sources) != len(sources) or n_in != n_tg:
            raise DataError(
                f"pairs do not match: {len(sources)} input image(s) with {n_in} plane(s) but "
                f"{len(target_sources)} target image(s) with {n_tg} plane(s)"
            )
        in_names, tg_names = [s.name for s in sources], [t.name for t in target_sources]
        if set(in_names) & set(tg_names) and in_names != tg_names:  # e.g. a file missing on one side
            a, b = next((a, b) for a, b in zip(in_names, tg_names, strict=True) if a != b)
            raise DataError(
                f"pairs do not match: inputs and targets are paired in order, and {a} would be paired "
                f"with {b}; give the same file names on both sides"
            )
        for s, t in zip(sources, target_sources, strict=True):
            its_target = "its target" if t.name == s.name else f"its target {t.name}"
            if s.array.shape != t.array.shape:
                raise DataError(
                    f"pairs do not match: {s.name} is {s.array.shape} but {its_target} is {t.array.shape}"
                )
            if s.array.dtype != t.array.dtype:
                raise DataError(
                    f"pairs do not match: {s.name} is {s.array.dtype} but {its_target} is "
                    f"{t.array.dtype}; both are normalised with the input's numbers, so give them "
                    "in the same type and range"
                )
    inputs: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    groups: list[int] = []
    names: list[str] = []
    # clean images by percentiles: keep what training needs to map them as the noisy ones will be
    samples: list[PixelSample] | None = (
        [] if mode == "supervised" and norm["method"] == "percentile" else None
    )
    points: list[tuple[float, float]] = []
    for g, s in enumerate(sources):
        _check_finite(s.array, s.name)
        offset, scale, whole = _affine(s.array, norm)
        planes = _planes(s)
        # 2-4 planes may be channels, which inference normalises apart (it never guesses
        # them to be Z): each such plane gets its own numbers, as a channel would
        apart = s.array.ndim == 3 and 2 <= s.array.shape[0] <= 4
        tplanes = _planes(target_sources[g]) if target_sources is not None else None
        if tplanes is not None:
            _check_finite(target_sources[g].array, f"the target of {s.name}")
        shared = None  # a stack's percentiles are the whole stack's
        if samples is not None and s.array.ndim == 3 and not apart:
            shared = pixel_sample(s.array, g).mapped(offset, scale)
        for i, (name, plane) in enumerate(planes):
            if apart:
                offset, scale, whole = _affine(plane, norm)
            inputs.append(((plane.astype(np.float64) - offset) / scale).astype(np.float32))
            if samples is not None:
                points.append(whole)
                if shared is not None:
                    samples.append(shared)
                elif plane.size <= SAMPLE:  # a small image is its own sample
                    samples.append(PixelSample(inputs[-1]))
                else:
                    samples.append(pixel_sample(plane, g).mapped(offset, scale))
            if tplanes is not None:
                outs.append(((tplanes[i][1].astype(np.float64) - offset) / scale).astype(np.float32))
            groups.append(g)
            names.append(name)
    group_arr = np.asarray(groups, dtype=np.int64)
    codes, cnames = _attach_labels(labels, class_names, sources, names, group_arr)
    return TrainingData(
        mode=mode,
        inputs=inputs,
        targets=outs if target_sources is not None else None,
        labels=codes,
        class_names=cnames,
        groups=group_arr,
        names=names,
        sources=[s.name for s in sources],
        normalization=norm,
        pixel_samples=samples,
        percentile_points=points if samples is not None else None,
    )


def clean_data(
    images: Any,
    *,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    normalization: Mapping[str, Any] | str | None = None,
) -> TrainingData:
    """Clean images for supervised training with synthetic noise.

    Parameters
    ----------
    images
        A 2-D array, a 3-D stack (its planes are used), a list of arrays of any sizes, a
        ``{name: array}`` mapping (messages, labels and the checkpoint use the names), a file
        (TIFF, PNG, ...), a folder of images, or a list of files and folders.
    labels
        Optional classes: one per image or per plane (integers or class names), a
        ``{name: class}`` mapping (names are file names or ``"array 0"``, planes
        ``"name[z]"``), or the path of a CSV file (see :func:`read_label_csv`).
    class_names
        Names of the classes; integer labels index into them. Default: the sorted label
        strings, or ``class_0 ...``.
    normalization
        How raw values map to ``[0, 1]``: None/``"auto"`` uses the fixed range 0..255 when every
        image is 8-bit and the 0.1/99.9 percentiles of each image otherwise; or a dict such as
        ``{"method": "percentile", "low": 1, "high": 99.8}`` or ``{"method": "range", "low": 0,
        "high": 4095}``, or ``"none"``. It is recorded in the checkpoint, so that inference
        normalises new images the same way.

    Returns
    -------
    TrainingData

    Raises
    ------
    DataError
        No images, unreadable files, NaN/Inf values, colour images, labels that do not
        match the images.
    """
    return _build("supervised", images, None, labels, class_names, normalization, "images")


def noisy_data(
    images: Any,
    *,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    normalization: Mapping[str, Any] | str | None = None,
) -> TrainingData:
    """Noisy images alone, for self-supervised blind-spot (Noise2Void) training.

    Takes the same arguments as :func:`clean_data`.
    """
    return _build("noise2void", images, None, labels, class_names, normalization, "noisy images")


def paired_data(
    inputs: Any,
    targets: Any,
    *,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    normalization: Mapping[str, Any] | str | None = None,
) -> TrainingData:
    """Pairs of images of the same scene: noisy inputs and their targets.

    With two independent noisy shots per scene this is Noise2Noise; with clean targets it is
    supervised training on real noise. Inputs and targets must have the same sources in
    the same order with the same shapes; both are normalised with the input's numbers.
    Other arguments as in :func:`clean_data`.
    """
    return _build("pairs", inputs, targets, labels, class_names, normalization, "input images")


def class_folder_data(
    root: str | os.PathLike,
    *,
    mode: Mode = "supervised",
    normalization: Mapping[str, Any] | str | None = None,
) -> TrainingData:
    """Labelled images from one sub-folder per class (``root/<class name>/*.tif``).

    Parameters
    ----------
    root
        Folder whose sub-folders are the classes (sorted by name).
    mode
        ``"supervised"`` for clean images, ``"noise2void"`` for noisy ones.
    """
    from .image_io import image_files

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root.name}: not a folder (class folders need root/<class>/<images>)")
    if mode not in ("supervised", "noise2void"):
        raise DataError(f"class folders hold clean or noisy images, not {mode!r}")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root.name} has no sub-folders; put the images of each class in root/<class name>/")
    files: list[Path] = []
    labels: list[str] = []
    for c in classes:
        found = image_files(c)
        if not found:
            raise DataError(f"class folder {c.name} holds no images")
        files.extend(found)
        labels.extend([c.name] * len(found))
    return _build(
        mode,
        files,
        None,
        labels,
        [c.name for c in classes],
        normalization,
        "images" if mode == "supervised" else "noisy images",
    )


# -- splitting ----------------------------------------------------------------------------------------
def split_data(
    data: TrainingData, val_fraction: float, seed: int = 0
) -> tuple[TrainingData, TrainingData | None]:
    """Hold out a validation set by image, never by patch.

    About ``val_fraction`` of the planes are held out, as whole sources (files, arrays, layers)
    taken in an order drawn from ``seed``, skipping a source that would overshoot that number
    or that is the last training source of its class (when every source holds one class).
    When no source fits (one stack, or stacks much larger than the fraction), a contiguous
    block of planes at the end of the largest stack is held out instead. Single 2-D images
    that cannot be held out without losing a class give no validation set (None).

    Returns
    -------
    train, validation
    """
    if val_fraction <= 0 or len(data) < 2:
        return data, None
    rng = np.random.default_rng([int(seed), 7919])
    target = max(1, int(round(val_fraction * len(data))))  # planes to hold out
    groups = [int(g) for g in rng.permutation(np.unique(data.groups))]
    planes = {g: [i for i, h in enumerate(data.groups) if int(h) == g] for g in groups}
    kind = _class_of_sources(data, planes)
    val_idx: list[int] = []
    for g in groups:  # whole sources, in random order, while they fit in the target
        if len(val_idx) + len(planes[g]) > target or len(val_idx) + len(planes[g]) >= len(data):
            continue  # over the target, or nothing would be left to train on
        if kind is not None and sum(kind[h] == kind[g] for h in groups if planes[h][0] not in val_idx) < 2:
            continue  # the last training source of its class stays in training
        val_idx += planes[g]
    if not val_idx:  # no source fits: the last planes of the largest stack
        largest = max(groups, key=lambda g: (len(planes[g]), -g))
        if len(planes[largest]) < 2:
            return data, None  # single 2-D images that cannot go without losing data or a class
        n_val = min(len(planes[largest]) - 1, target)
        val_idx = planes[largest][-n_val:]
    train_idx = sorted(set(range(len(data))) - set(val_idx))
    return data.subset(train_idx), data.subset(sorted(val_idx))


def _class_of_sources(data: TrainingData, planes: Mapping[int, list[int]]) -> dict[int, int] | None:
    """The class of each source when every source holds one class (else None)."""
    if data.labels is None:
        return None
    kind = {}
    for g, idx in planes.items():
        classes = {int(data.labels[i]) for i in idx}
        if len(classes) != 1:
            return None
        kind[g] = classes.pop()
    return kind


# -- patches -------------------------------------------------------------------------------------------
def _augment(p: np.ndarray, k: int, flip: bool) -> np.ndarray:
    p = np.rot90(p, k)
    return p[:, ::-1] if flip else p


class PatchSampler:
    """Random square patches with random flips and 90-degree rotations.

    Planes are chosen with probability proportional to their area, so every pixel is
    about equally often inside a patch on average, small images included (weighing by the
    number of patch positions would leave an image the size of a patch nearly unseen).

    Parameters
    ----------
    data
        Training planes (each at least ``patch_size`` in both axes).
    patch_size
        Side of the patches.
    rng
        The numpy generator all draws come from.
    augment
        Random flips and rotations.
    """

    def __init__(
        self, data: TrainingData, patch_size: int, rng: np.random.Generator, augment: bool = True
    ) -> None:
        if len(data) == 0:
            raise DataError("no training images left (all held out for validation?)")
        data.check_patch_size(patch_size)
        self.data, self.size, self.rng, self.augment = data, patch_size, rng, augment
        areas = np.array([p.shape[0] * p.shape[1] for p in data.inputs], dtype=np.float64)
        self.weights = areas / areas.sum()

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``n`` patches ``(n, 1, p, p)``, their targets (pairs) and labels, or None."""
        return self.sample_with_planes(n)[:3]

    def sample_with_planes(
        self, n: int
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
        """As :meth:`sample`, and the index of the plane each patch comes from."""
        p, d, rng = self.size, self.data, self.rng
        which = rng.choice(len(d.inputs), size=n, p=self.weights)
        x = np.empty((n, 1, p, p), np.float32)
        y = np.empty((n, 1, p, p), np.float32) if d.targets is not None else None
        for j, i in enumerate(which):
            plane = d.inputs[i]
            r = int(rng.integers(plane.shape[0] - p + 1))
            c = int(rng.integers(plane.shape[1] - p + 1))
            k, flip = (int(rng.integers(4)), bool(rng.integers(2))) if self.augment else (0, False)
            x[j, 0] = _augment(plane[r : r + p, c : c + p], k, flip)
            if y is not None:
                y[j, 0] = _augment(d.targets[i][r : r + p, c : c + p], k, flip)
        labels = d.labels[which] if d.labels is not None else None
        return x, y, labels, which


def fixed_patch_planes(planes: int, count: int) -> list[int]:
    """The plane of each patch :func:`fixed_patches` returns: planes in turn, ``count`` in all.

    With fewer patches than planes, the patches are spread evenly over all of them (the
    first ``count`` planes alone could leave out whole classes of class-ordered data).
    """
    if count < planes:
        return [int(i) for i in np.linspace(0, planes - 1, count).round()]
    per = max(1, math.ceil(count / planes))
    return [i for _ in range(per) for i in range(planes)][:count]


def fixed_patches(
    data: TrainingData, patch_size: int, count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Deterministic patches for validation: planes in turn, random positions from ``seed``.

    Returns at most ``count`` patches ``(n, 1, p, p)`` (at least one per plane when
    ``count`` allows), their targets and labels.
    """
    data.check_patch_size(patch_size)
    rng = np.random.default_rng([int(seed), 104729])
    xs, ys, ls = [], [], []
    for i in fixed_patch_planes(len(data), count):
        plane = data.inputs[i]
        r = int(rng.integers(plane.shape[0] - patch_size + 1))
        c = int(rng.integers(plane.shape[1] - patch_size + 1))
        xs.append(plane[r : r + patch_size, c : c + patch_size])
        if data.targets is not None:
            ys.append(data.targets[i][r : r + patch_size, c : c + patch_size])
        if data.labels is not None:
            ls.append(data.labels[i])
    x = np.stack(xs)[:, None].astype(np.float32)
    y = np.stack(ys)[:, None].astype(np.float32) if ys else None
    lab = np.asarray(ls, dtype=np.int64) if ls else None
    return x, y, lab
