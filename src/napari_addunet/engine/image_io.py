"""Reading and writing image files for the command line (TIFF, PNG/JPEG, zarr).

Writes are atomic (temporary file in the target folder, then rename) and never replace an
existing file unless asked.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write

TIFF_SUFFIXES = {".tif", ".tiff"}
PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
ZARR_SUFFIXES = {".zarr"}
READABLE = TIFF_SUFFIXES | PLAIN_SUFFIXES | ZARR_SUFFIXES


class ImageIOError(ValueError):
    """A file cannot be read or written as an image."""


@dataclasses.dataclass
class ImageFile:
    """An image read from disk with what is needed to write a result beside it.

    Attributes
    ----------
    data
        The pixels (numpy, memory-mapped, or a lazy dask array for zarr).
    axes
        Axes string from the file's metadata when it has one (e.g. ``"ZYX"``), else None.
    rgb
        True for a colour PNG/JPEG (last axis holds the channels).
    resolution
        TIFF X/Y resolution tag values, kept for the output file.
    metadata
        ImageJ metadata (spacing, unit, ...) kept for the output file.
    """

    path: Path
    data: Any
    axes: str | None = None
    rgb: bool = False
    resolution: tuple | None = None
    resolution_unit: Any = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


def image_files(path: Path) -> list[Path]:
    """The readable images in a folder (sorted), or ``[path]`` for a file."""
    if path.is_dir() and path.suffix.lower() not in ZARR_SUFFIXES:
        return sorted(
            p for p in path.iterdir() if p.suffix.lower() in READABLE and not p.name.startswith(".")
        )
    return [path]


def read_image(path: str | os.PathLike) -> ImageFile:
    """Read a TIFF (memory-mapped when possible), PNG/JPEG or zarr array."""
    path = Path(path)
    if not path.exists():
        raise ImageIOError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise ImageIOError(
            f"{path.name}: unsupported file type {suffix or '(none)'}; readable: {', '.join(sorted(READABLE))}"
        )
    try:
        if suffix in TIFF_SUFFIXES:
            return _read_tiff(path)
        if suffix in ZARR_SUFFIXES:
            import dask.array as da
            import zarr

            arr = zarr.open(str(path), mode="r")
            if not hasattr(arr, "shape"):
                raise ImageIOError(f"{path.name}: a zarr group, not an array; point at the array inside it")
            return ImageFile(path, da.from_zarr(arr), axes=arr.attrs.get("axes"))
        from PIL import Image

        with open(path, "rb") as fh, Image.open(fh) as im:
            data = np.array(im)
        return ImageFile(path, data, rgb=data.ndim == 3 and data.shape[-1] in (3, 4))
    except ImageIOError:
        raise
    except Exception as exc:  # noqa: BLE001 - many readers, one message
        raise ImageIOError(f"{path.name}: cannot read as an image ({type(exc).__name__}: {exc})") from exc


def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = series.axes
        page = tif.pages[0]
        res = page.tags.get("XResolution"), page.tags.get("YResolution")
        unit = page.tags.get("ResolutionUnit")
        ij = dict(tif.imagej_metadata or {})
        rgb = "S" in axes
    try:
        data = tifffile.memmap(path, mode="r")
    except (ValueError, OSError):
        data = tifffile.imread(path)
    axes = axes.replace("S", "C").replace("Q", "Z").replace("I", "Z")
    if len(axes) != data.ndim:
        axes = None
    resolution = (res[0].value, res[1].value) if res[0] is not None and res[1] is not None else None
    keep = {k: v for k, v in ij.items() if k in ("spacing", "unit", "finterval", "axes")}
    return ImageFile(
        path,
        data,
        axes=axes,
        rgb=rgb,
        resolution=resolution,
        resolution_unit=unit.value if unit is not None else None,
        metadata=keep,
    )


def check_plain_output(path: str | os.PathLike, source_dtype: Any) -> None:
    """Refuse a PNG/JPEG output for a floating-point source: those formats store integers.

    Raises
    ------
    ImageIOError
        ``source_dtype`` is not an integer type.
    """
    dtype = np.dtype(source_dtype)
    if dtype.kind not in "ui":
        raise ImageIOError(
            f"{Path(path).name}: PNG and JPEG store integers, but the input is {dtype} "
            "(floating point), and rounding the result would destroy it; write a .tif (float32) "
            "instead (nothing was written)"
        )


def write_image(
    path: str | os.PathLike, data: np.ndarray, like: ImageFile | None = None, *, overwrite: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically; TIFF keeps the source's resolution and ImageJ spacing.

    PNG/JPEG store integers: results of an integer source are rounded and clipped to the
    source's range; integer ``data`` without a source is written as it is; floating-point
    results of a floating-point source (or none) are refused (:class:`ImageIOError`), since
    rounding them would destroy them; write a TIFF instead.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TIFF_SUFFIXES | PLAIN_SUFFIXES:
        raise ImageIOError(f"{path.name}: can write TIFF, PNG or JPEG, not {suffix or '(no suffix)'}")
    if suffix in PLAIN_SUFFIXES:
        check_plain_output(path, like.data.dtype if like is not None else np.asarray(data).dtype)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise ImageIOError(f"folder {path.parent} does not exist")
    with atomic_write(path) as tmp:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            kwargs: dict[str, Any] = {}
            if like is not None and like.resolution is not None:
                kwargs["resolution"] = like.resolution
                if like.resolution_unit is not None:
                    kwargs["resolutionunit"] = like.resolution_unit
            arr = np.asarray(data, dtype=np.float32)
            if like is not None and like.metadata and like.axes and set(like.axes) <= set("TZCYX"):
                meta = dict(like.metadata)
                meta["axes"] = like.axes
                tifffile.imwrite(tmp, arr, imagej=True, metadata=meta, **kwargs)
            else:
                tifffile.imwrite(tmp, arr, **kwargs)
        else:
            from PIL import Image

            dtype = np.dtype(like.data.dtype) if like is not None else np.asarray(data).dtype
            info = np.iinfo(dtype)
            arr = np.clip(np.rint(np.asarray(data)), info.min, info.max).astype(dtype)
            Image.fromarray(arr).save(tmp)
    return path
