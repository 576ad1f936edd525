"""Reading and writing image files for the command line (TIFF, PNG/JPEG, zarr).

Writes are atomic (temporary file in the target folder, then rename) and never replace an
existing file unless asked.

PNG/JPEG modes: palette images are read as the colours they show (grey when the palette is
grey), bilevel images as 8-bit grey, CMYK and YCbCr as RGB. An alpha channel (grey + alpha,
RGBA) is split off: only the image is denoised, and a PNG result gets the alpha back as it
was; a TIFF result holds the denoised image alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

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
    alpha: np.ndarray | None = None
    """The alpha channel of a PNG split off the pixels (``None`` without one)."""
    plain_info: dict[str, Any] = dataclasses.field(default_factory=dict)
    """A PNG/JPEG's resolution (``dpi``), colour profile and EXIF block (its orientation),
    written again with the result."""


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
        _refuse_16_bit_colour_png(path)
        with _open_plain(path) as im:
            target = _plain_mode(im)
            data = np.array(im.convert(target) if target != im.mode else im)
            info = {k: im.info[k] for k in ("dpi", "icc_profile", "exif") if im.info.get(k)}
            if im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):  # converted: its profile is of the other space
                info.pop("icc_profile", None)
        alpha = None
        if target in ("LA", "RGBA"):
            alpha = np.ascontiguousarray(data[..., -1])
            data = np.ascontiguousarray(data[..., 0] if target == "LA" else data[..., :3])
        return ImageFile(path, data, rgb=data.ndim == 3, alpha=alpha, plain_info=info)
    except ImageIOError:
        raise
    except Exception as exc:  # noqa: BLE001 - many readers, one message
        raise ImageIOError(f"{path.name}: cannot read as an image ({type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def _open_plain(path: Path) -> Iterator[Any]:
    """Open a PNG/JPEG/BMP with Pillow, without its guard against huge images (meant for
    files from the web; a large local image is what tiling is for), restored afterwards."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with open(path, "rb") as fh, Image.open(fh) as im:
            yield im
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _refuse_16_bit_colour_png(path: Path) -> None:
    """16-bit colour and grey+alpha PNGs would be read as 8 bits (the image library reduces
    them): refuse them rather than lose half of every value."""
    if path.suffix.lower() != ".png":
        return
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return
    depth, colour = head[24], head[25]
    if depth == 16 and colour in (2, 4, 6):
        kind = "grey+alpha" if colour == 4 else "colour"
        raise ImageIOError(
            f"{path.name}: a 16-bit {kind} PNG, which the image library here reads as 8 bits only; "
            "save it as a 16-bit TIFF and denoise that"
        )


def _exif_orientation(info: dict[str, Any]) -> int | None:
    """The EXIF orientation (2-8) of a PNG/JPEG source, or None when upright or unknown."""
    raw = info.get("exif")
    if not raw:
        return None
    from PIL import Image

    try:
        exif = Image.Exif()
        exif.load(raw)
        value = int(exif.get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block: keep what can be kept
        return None
    return value if 2 <= value <= 8 else None


def _grey_palette(im: Any) -> bool:
    colours = np.asarray(im.getpalette() or [], dtype=np.uint8)
    colours = colours[: len(colours) // 3 * 3].reshape(-1, 3)
    return bool(len(colours)) and bool((colours == colours[:, :1]).all())


def _plain_mode(im: Any) -> str:
    """The PIL mode a PNG/JPEG is read in (see the module's notes)."""
    mode = im.mode
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in im.info
        grey = _grey_palette(im)
        return ("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB")
    if mode in ("L", "RGB") and "transparency" in im.info:
        # a colour key marks the transparent pixels: read as an alpha channel and kept as one
        # (a denoised pixel would no longer match the key)
        return "LA" if mode == "L" else "RGBA"
    if mode == "1":
        return "L"
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return "RGB"
    if mode == "RGBa":
        return "RGBA"
    if mode == "La":
        return "LA"
    return mode


class SourceFormat(NamedTuple):
    """What :func:`read_image` will give for a file, from its header alone."""

    dtype: np.dtype
    alpha: bool
    """Whether an alpha channel is split off (PNG)."""
    shape: tuple[int, ...]
    """Of the pixels read (without a split-off alpha)."""
    rgb: bool


def source_format(path: str | os.PathLike) -> SourceFormat:
    """The dtype, alpha, shape and colour :func:`read_image` gives ``path``, read from the
    header alone (no pixels are decoded)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape = tuple(series.shape)
                if len(tif.series) > 1:  # read as a stack of the series
                    shape = (len(tif.series), *shape)
                return SourceFormat(np.dtype(series.dtype), False, shape, "S" in series.axes)
        if suffix in ZARR_SUFFIXES:
            import zarr

            arr = zarr.open(str(path), mode="r")
            if not hasattr(arr, "dtype"):
                raise ImageIOError(f"{path.name}: a zarr group, not an array; point at the array inside it")
            return SourceFormat(np.dtype(arr.dtype), False, tuple(arr.shape), False)
        _refuse_16_bit_colour_png(path)
        from PIL import Image

        with _open_plain(path) as im:
            target = _plain_mode(im)
            size = im.size
        colour = target in ("RGB", "RGBA")
        shape = (size[1], size[0], 3) if colour else (size[1], size[0])
        dtype = np.array(Image.new(target, (1, 1))).dtype
        return SourceFormat(dtype, target in ("LA", "RGBA"), shape, colour)
    except ImageIOError:
        raise
    except Exception as exc:  # noqa: BLE001 - many readers, one message
        raise ImageIOError(f"{path.name}: cannot read as an image ({type(exc).__name__}: {exc})") from exc


def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, series_shape = series.axes, tuple(series.shape)
        page = tif.pages[0]
        res = page.tags.get("XResolution"), page.tags.get("YResolution")
        unit = page.tags.get("ResolutionUnit")
        ij = dict(tif.imagej_metadata or {})
        rgb = "S" in axes
        stacked = None
        if len(tif.series) > 1:  # e.g. pages appended one by one: each is a series of its own
            shapes = {(tuple(s.shape), s.dtype, s.axes) for s in tif.series}
            if len(shapes) != 1:
                raise ImageIOError(
                    f"{path.name}: holds {len(tif.series)} image series of different shapes or types; "
                    "only files with one series (or several alike, read as a stack) can be denoised"
                )
            stacked = np.stack([s.asarray() for s in tif.series])
            axes, series_shape = "Q" + axes, (len(tif.series), *series_shape)
    if stacked is not None:
        data = stacked
    else:
        try:
            data = tifffile.memmap(path, mode="r")
        except (ValueError, OSError):
            data = tifffile.imread(path)
    # tifffile's I/Q: pages without a meaning. 2-4 of them may be channels, which are
    # normalised apart, so that is not guessed (the caller gives --axes); more are a Z stack.
    unnamed = [i for i, a in enumerate(axes) if a in "IQ"]
    if any(2 <= series_shape[i] <= 4 for i in unnamed):
        axes = ""
    axes = axes.replace("S", "C").replace("Q", "Z").replace("I", "Z")
    if len(axes) != data.ndim or len(set(axes)) != len(axes):
        axes = None  # e.g. two unnamed leading axes: ask the caller (--axes) instead of guessing
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


WRITABLE = TIFF_SUFFIXES | PLAIN_SUFFIXES
IMAGEJ_LIMIT = 4 * 2**30 - 2**26
"""Bytes above which a result is written as a BigTIFF naming its axes, not an ImageJ file."""


def check_writable(path: str | os.PathLike) -> None:
    """Refuse an output file name whose format cannot be written (before any work)."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITABLE:
        raise ImageIOError(
            f"{Path(path).name}: can write TIFF (.tif, .tiff), PNG, JPEG (.jpg, .jpeg) or BMP, "
            f"not {suffix or '(no suffix)'} (nothing was written; to name a folder, end the name "
            "with a slash)"
        )


def check_plain_output(
    path: str | os.PathLike,
    source_dtype: Any,
    alpha: bool = False,
    shape: tuple[int, ...] | None = None,
    rgb: bool = False,
) -> None:
    """Refuse a PNG/JPEG/BMP output the format cannot hold: results of a floating-point source
    (those formats store integers), more than 8 bits in JPEG or BMP, more than 16 or signed
    integers in PNG, an alpha channel in JPEG, stacks (one 2-D image, grey or colour, only),
    and 16-bit colour.

    Raises
    ------
    ImageIOError
        The format cannot store the result; the message names one that can.
    """
    name, suffix = Path(path).name, Path(path).suffix.lower()
    dtype = np.dtype(source_dtype).newbyteorder("=")  # a big-endian TIFF's >u2 is uint16 too
    tail = " (nothing was written)"
    if dtype.kind not in "ui":
        raise ImageIOError(
            f"{name}: PNG and JPEG store integers, but the input is {dtype} "
            "(floating point), and rounding the result would destroy it; write a .tif (float32) "
            "instead" + tail
        )
    if suffix == ".png" and dtype not in (np.uint8, np.uint16):
        raise ImageIOError(
            f"{name}: PNG stores 8- or 16-bit unsigned integers, but the input is {dtype}; "
            "write a .tif (float32) instead" + tail
        )
    if suffix in (".jpg", ".jpeg", ".bmp") and dtype != np.uint8:
        kind = "BMP" if suffix == ".bmp" else "JPEG"
        raise ImageIOError(
            f"{name}: {kind} stores 8-bit integers, but the input is {dtype}; write a "
            + (".png or a .tif" if dtype == np.uint16 else ".tif (float32)")
            + " instead"
            + tail
        )
    if shape is not None:
        colour = rgb and len(shape) == 3 and shape[-1] in (3, 4)
        if len(shape) > 3 or (len(shape) == 3 and not colour):
            raise ImageIOError(
                f"{name}: PNG, JPEG and BMP hold one 2-D image (grey or colour), but the input has "
                f"shape {tuple(shape)}; write a .tif instead" + tail
            )
        if colour and dtype != np.uint8:
            raise ImageIOError(
                f"{name}: a {dtype} colour image can be written here as a .tif only (PNG colour is 8-bit)"
                + tail
            )
    if suffix in (".jpg", ".jpeg", ".bmp") and alpha:
        kind = "BMP" if suffix == ".bmp" else "JPEG"
        raise ImageIOError(
            f"{name}: {kind} keeps no alpha channel here, but the input has one; write a .png instead" + tail
        )


def write_image(
    path: str | os.PathLike,
    data: np.ndarray,
    like: ImageFile | None = None,
    *,
    overwrite: bool = False,
    axes: str | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically; TIFF keeps the source's resolution and ImageJ spacing.

    PNG/JPEG store integers: results of an integer source are rounded and clipped to the
    source's range; integer ``data`` without a source is written as it is; floating-point
    results of a floating-point source (or none) are refused (:class:`ImageIOError`), since
    rounding them would destroy them; write a TIFF instead.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    check_writable(path)
    alpha = like.alpha if like is not None else None
    if suffix in PLAIN_SUFFIXES:
        check_plain_output(
            path,
            like.data.dtype if like is not None else np.asarray(data).dtype,
            alpha is not None,
            tuple(np.shape(data)),
            like.rgb if like is not None else (np.ndim(data) == 3 and np.shape(data)[-1] in (3, 4)),
        )
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
            elif like is not None and like.plain_info.get("dpi"):  # a PNG/JPEG's pixel size
                kwargs["resolution"] = tuple(float(v) for v in like.plain_info["dpi"][:2])
                kwargs["resolutionunit"] = "INCH"
            turned = _exif_orientation(like.plain_info) if like is not None else None
            if turned is not None:  # a photo shown turned: the TIFF says so too (tag 274)
                kwargs["extratags"] = [(274, "H", 1, turned, True)]
            arr = np.asarray(data, dtype=np.float32)
            ax = axes or (like.axes if like is not None else None)
            if ax is None and like is not None and like.rgb and arr.ndim == 3 and arr.shape[-1] in (3, 4):
                ax = "YXC"  # a colour PNG/JPEG source: its channels
            if ax and len(ax) == arr.ndim and set(ax) <= set("TZCYX") and arr.nbytes > IMAGEJ_LIMIT:
                # too big for an ImageJ file (no BigTIFF): a BigTIFF that names its axes
                tifffile.imwrite(
                    tmp, arr, bigtiff=True, photometric="minisblack", metadata={"axes": ax}, **kwargs
                )
            elif ax and len(ax) == arr.ndim and set(ax) <= set("TZCYX"):
                # an ImageJ hyperstack keeps what the axes are; it wants them in TZCYX order
                # (an RGB source's channels come last, and are written as a channel stack)
                order = sorted(range(len(ax)), key=lambda i: "TZCYX".index(ax[i]))
                meta = dict(like.metadata) if like is not None else {}
                meta["axes"] = "".join(ax[i] for i in order)
                tifffile.imwrite(tmp, np.transpose(arr, order), imagej=True, metadata=meta, **kwargs)
            else:  # axes unknown: grey pages (3 or 4 of them must not become an RGB image)
                tifffile.imwrite(tmp, arr, photometric="minisblack", **kwargs)
        else:
            from PIL import Image

            dtype = (np.dtype(like.data.dtype) if like is not None else np.asarray(data).dtype).newbyteorder(
                "="
            )
            info = np.iinfo(dtype)
            arr = np.clip(np.rint(np.asarray(data)), info.min, info.max).astype(dtype)
            if alpha is not None and alpha.shape == arr.shape[:2]:
                arr = np.concatenate([arr.reshape(*arr.shape[:2], -1), alpha[..., None]], axis=-1)
            # JPEG: near-lossless settings (Pillow's default, quality 75 with chroma subsampling,
            # would change the result far more than denoising choices do)
            options: dict[str, Any] = {"quality": 95, "subsampling": 0} if suffix in (".jpg", ".jpeg") else {}
            if like is not None:  # resolution, colour profile and orientation, as the source had them
                kept = ("dpi",) if suffix == ".bmp" else ("dpi", "icc_profile", "exif")
                options.update({k: v for k, v in like.plain_info.items() if k in kept})
            Image.fromarray(arr).save(tmp, **options)
    return path
