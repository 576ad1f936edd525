"""The ``napari-addunet`` command line: denoise, classify, info, demo.

Every command is a thin layer over the Python API. Bad input ends with a one-line message
and a non-zero exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe


class CliError(Exception):
    """A problem with what the user asked for; shown as one line."""


# -- helpers ---------------------------------------------------------------------------------------
def _gates(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise CliError(f"--gates takes comma-separated numbers, e.g. 1,0.5,0,1,1; got {text!r}") from exc


def _tile(text: str | None) -> int | None:
    if text is None or text == "auto":
        return None
    try:
        value = int(text)
    except ValueError as exc:
        raise CliError(f"--tile takes a number of pixels or 'auto', got {text!r}") from exc
    if value < 16:
        raise CliError(f"--tile must be at least 16 pixels, got {value}")
    return value


class _Bar:
    """A tqdm progress bar fed by the engine's progress events."""

    def __init__(self, desc: str, quiet: bool) -> None:
        self.desc, self.quiet, self.bar = desc, quiet, None

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, desc=self.desc, unit="tile", leave=False, file=sys.stderr)
        self.bar.total = event.total
        self.bar.n = event.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _say(args: argparse.Namespace, *parts: Any) -> None:
    if not args.quiet:
        print(*parts)


def _load(spec: str | None):
    from .engine.checkpoint import load_model

    return load_model(spec)


def _many(inputs: list[Path]) -> bool:
    """Several inputs or a folder of them (results go to an output folder)."""
    return len(inputs) > 1 or any(p.is_dir() and p.suffix.lower() != ".zarr" for p in inputs)


def _outputs_for(
    inputs: list[Path], output: Path, suffix: str, as_folder: bool = False
) -> list[tuple[Path, Path]]:
    from .engine.image_io import image_files

    pairs: list[tuple[Path, Path]] = []
    many = _many(inputs)
    if many:
        if output.exists() and not output.is_dir():
            raise CliError(f"{output} is a file; several inputs need an output folder")
        for src in inputs:
            for f in image_files(src):
                pairs.append((f, output / (f.stem + suffix)))
        if not pairs:
            raise CliError("no readable images in " + ", ".join(map(str, inputs)))
    else:
        target = output
        if as_folder or output.is_dir() or output.suffix == "":
            target = output / (inputs[0].stem + suffix)
        pairs.append((inputs[0], target))
    return pairs


def check_can_write_in(folder: Path, option: str) -> None:
    """Refuse a folder nothing can be written in (read-only, no permission), before any work;
    a folder still to be made is judged by the nearest one that exists."""
    import tempfile

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise CliError(
            f"{option}: cannot write in {probe} ({exc.strerror or exc}); nothing was written"
        ) from exc


def check_output_file(path: str | Path, overwrite: bool, option: str) -> Path:
    """Refuse an output file up front, before any work: an existing file (without
    ``--overwrite``) or a folder that does not exist."""
    out = Path(path)
    if out.is_dir():
        raise CliError(f"{option} {out}: is a folder; give a file name")
    if out.exists() and not overwrite:
        raise CliError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise CliError(f"{option} {out}: folder {out.parent} does not exist")
    check_can_write_in(out.parent, option)
    return out


def _destinations(
    pairs: list[tuple[Path, Path]], output_format: str, explicit: bool
) -> list[tuple[Path, Path]]:
    """The files ``denoise`` writes, with the input's suffix for ``--output-format input``;
    refuses two inputs that would write one file."""
    from .engine.image_io import PLAIN_SUFFIXES

    out: list[tuple[Path, Path]] = []
    for src, dst in pairs:
        if output_format == "input" and src.suffix.lower() in PLAIN_SUFFIXES:
            if explicit and dst.suffix.lower() != src.suffix.lower():
                raise CliError(
                    f"--output-format input writes {src.name} as {src.suffix.lower()}, but --output "
                    f"names {dst.name}; give a {src.suffix.lower()} name or drop --output-format"
                )
            if not explicit:  # a name given by the user is kept as typed (OUT.PNG)
                dst = dst.with_suffix(src.suffix.lower())
        out.append((src, dst))
    seen: dict[Path, Path] = {}
    for src, dst in out:
        if dst in seen:
            raise CliError(
                f"{seen[dst]} and {src} would both be written to {dst}; "
                "denoise them into separate output folders (nothing was written)"
            )
        seen[dst] = src
    return out


def _axes_argument(text: str) -> str:
    """``--axes`` as the engine spells axes (``yxc`` -> ``YXC``), so the files written know them."""
    return text.strip().upper()


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cli_words(message: str) -> str:
    """An engine message in the command line's words (``nan_policy='fill'`` -> ``--nan-policy
    fill``, ``axes=`` -> ``--axes``)."""
    import re

    message = re.sub(r"nan_policy='(\w+)'", r"--nan-policy \1", message)
    return message.replace("Pass axes= explicitly", "Pass --axes")


def _check_destinations(pairs: list[tuple[Path, Path]], args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """Refuse what cannot be written before any work; drop pairs ``--skip-existing`` skips."""
    from .engine.image_io import (
        PLAIN_SUFFIXES,
        ImageIOError,
        check_plain_output,
        check_writable,
        source_format,
    )

    todo = []
    for folder in sorted({dst.parent for _, dst in pairs}):
        check_can_write_in(folder, "--output")
    for src, dst in pairs:
        try:
            check_writable(dst)
            if dst.suffix.lower() in PLAIN_SUFFIXES:
                fmt = source_format(src)
                check_plain_output(dst, fmt.dtype, fmt.alpha, fmt.shape, fmt.rgb)
        except ImageIOError as exc:
            raise CliError(str(exc)) from exc
        if dst.exists() and os.path.samefile(src, dst):
            raise CliError(
                f"{dst} is the input {src} itself; write the results to another file or folder "
                "(an input is never replaced, with or without --overwrite)"
            )
        if dst.exists() and not args.overwrite:
            if args.skip_existing:
                _say(args, f"{dst} exists; skipped")
                continue
            raise CliError(f"{dst} exists; pass --overwrite to replace it, or --skip-existing to keep it")
        todo.append((src, dst))
    return todo


# -- commands ----------------------------------------------------------------------------------------
def cmd_denoise(args: argparse.Namespace) -> int:
    from .engine.image_io import read_image, write_image
    from .engine.inference import denoise
    from .engine.tiling import TileMemoryError

    if args.overwrite and args.skip_existing:
        raise CliError("--overwrite and --skip-existing contradict each other; give one")
    model = _load(args.model)
    gates = _gates(args.gates)
    tile = _tile(args.tile)
    inputs = [Path(p) for p in args.inputs]
    for p in inputs:
        if not p.exists():
            raise CliError(f"{p}: no such file or folder")
    output = Path(args.output)
    as_folder = str(args.output).endswith(("/", os.sep))  # "run.2024/" names a folder
    pairs = _outputs_for(inputs, output, ".tif", as_folder)
    # one file named as the output (a folder holding one image still writes into a folder)
    explicit = not _many(inputs) and not as_folder and output.suffix != "" and not output.is_dir()
    pairs = _check_destinations(_destinations(pairs, args.output_format, explicit), args)
    if explicit:
        if not output.parent.is_dir():
            raise CliError(f"--output {output}: folder {output.parent} does not exist (nothing was written)")
    elif pairs:
        output.mkdir(parents=True, exist_ok=True)  # a folder of results: made for them
    written: list[Path] = []
    failed: list[Path] = []
    for src, dst in pairs:
        bar = _Bar(src.name, args.quiet)
        t0 = time.perf_counter()
        try:
            image = read_image(src)
            axes = args.axes or image.axes or ("YXC" if image.rgb else None)
            result = denoise(
                model,
                image.data,
                axes=axes,
                tile=tile,
                device=args.device,
                gates=gates,
                progress=bar,
                ensemble=args.ensemble,
                nan_policy=args.nan_policy,
            )
            if hasattr(result, "compute"):
                result = result.compute()
            write_image(dst, result, image, overwrite=args.overwrite, axes=axes)
        except (
            CliError,
            ValueError,
            KeyError,
            FileNotFoundError,
            FileExistsError,
            TypeError,
            OSError,
            TileMemoryError,
        ) as exc:
            if args.debug:
                raise
            text = _cli_words(_first_line(exc))
            if text.startswith(f"{src.name}: "):  # the reader named the file already
                text = text[len(src.name) + 2 :]
            if args.keep_going:
                failed.append(src)
                print(f"napari-addunet: error: {src}: {text} (going on)", file=sys.stderr)
                continue
            done = ""
            if len(pairs) > 1:
                done = f" ({len(written)} of {len(pairs)} written"
                done += "; --skip-existing --keep-going finishes the others)" if written else ")"
            raise CliError(f"{src}: {text}{done}") from exc
        finally:
            bar.close()
        written.append(dst)
        _say(args, f"{src} -> {dst} ({time.perf_counter() - t0:.1f} s)")
    if failed:
        names = ", ".join(p.name for p in failed[:5]) + (" ..." if len(failed) > 5 else "")
        print(
            f"napari-addunet: error: {len(failed)} of {len(pairs)} file(s) failed ({names}); "
            f"{len(written)} written",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from .engine.image_io import image_files, read_image
    from .engine.inference import predict

    out = check_output_file(args.csv, args.overwrite, "--csv") if args.csv else None
    if args.model is None:  # the bundled denoiser cannot classify: the bundled classifier can
        classifiers = _bundled_classifiers()
        args.model = classifiers[0] if classifiers else None
    model = _load(args.model)
    if model.num_classes == 0:
        classifiers = _bundled_classifiers()
        raise CliError(
            "this model has no classification head; give one trained to classify with --model"
            + (f" (bundled: {', '.join(classifiers)})" if classifiers else "")
        )
    rows: list[list[Any]] = []
    inputs = [Path(x) for x in args.inputs]
    for p in inputs:
        if not p.exists():
            raise CliError(f"{p}: no such file or folder")
    files = [f for p in inputs for f in image_files(p)]
    if not files:
        raise CliError("no readable images in " + ", ".join(map(str, inputs)) + " (nothing was written)")
    for f in files:
        try:
            image = read_image(f)
            axes = args.axes or image.axes or ("YXC" if image.rgb else None)
            result = predict(model, image.data, axes=axes, device=args.device)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            if args.debug:
                raise
            first = _first_line(exc)
            raise CliError(f"{f}: {_cli_words(first)} (nothing was written)") from exc
        for i, row in enumerate(result.probabilities):
            best = int(row.argmax())
            rows.append([str(f), i, result.class_names[best], *(f"{v:.4f}" for v in row)])
            print(f"{f.name}[{i}]: {result.class_names[best]} ({row[best]:.3f})")  # a result
    header = ["file", "plane", "class", *[f"p_{n}" for n in model.class_names]]
    if out is not None:
        from .engine.atomic import atomic_write_text

        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        atomic_write_text(out, text.getvalue(), overwrite=args.overwrite)
        _say(args, f"wrote {out}")
    return 0


def _bundled_classifiers() -> list[str]:
    """Names of the bundled models that have a classification head."""
    from .engine.checkpoint import bundled_models, read_header

    return [
        name
        for name, path in bundled_models().items()
        if int(read_header(path)["config"].get("num_classes", 0) or 0) > 0
    ]


def cmd_info(args: argparse.Namespace) -> int:
    from importlib import metadata

    from ._version import __version__
    from .engine.checkpoint import bundled_models, read_header
    from .engine.devices import available_devices
    from .models import model_summaries

    if args.model:
        from .engine.checkpoint import load_model
        from .engine.receptive_field import receptive_field

        path = bundled_models().get(args.model, Path(args.model))
        model = load_model(args.model)
        header = read_header(path)
        info = {
            "file": Path(path).name,
            "architecture": header["architecture"],
            "parameters": model.num_parameters(),
            "receptive_field": receptive_field(model),
            "config": header["config"],
            "gates": header.get("gates"),
            "metadata": header["metadata"],
            "package_version": header["package_version"],
        }
        from .engine.evaluation import finite_or_none

        print(json.dumps(finite_or_none(info), indent=2, allow_nan=False))  # strict JSON: inf is null
        return 0
    print(f"napari-addunet {__version__}")
    versions = []
    for dist in ("torch", "numpy", "napari", "scikit-image", "dask"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    print("versions: " + ", ".join(versions))
    print("devices: " + ", ".join(d.label for d in available_devices()))
    print("architectures:")
    for name, summary in model_summaries().items():
        print(f"  {name:16s} {summary}")
    print("bundled models:")
    for name, path in bundled_models().items():
        header = read_header(path)
        print(f"  {name:24s} {header['architecture']}, {_training_line(header['metadata'])}")
    return 0


def _training_line(meta: dict) -> str:
    """One line on what a model was trained on: its written description, else the sizes."""
    train = meta.get("training") or {}
    if not isinstance(train, dict):
        return str(train)
    parts = []
    data = train.get("data_description") or train.get("data")
    if isinstance(data, dict):
        split = data.get("train", data)
        planes = split.get("planes") if isinstance(split, dict) else None
        data = f"{planes:,} training planes" if isinstance(planes, int) else str(split)
    if data:
        parts.append(str(data))
    noise = train.get("noise_description")
    if noise:
        parts.append(str(noise))
    if train.get("steps"):
        last = " in its last run, which started from earlier weights" if train.get("started_from") else ""
        parts.append(f"{int(train['steps']):,} steps{last}")
    return "; ".join(parts) or "no training record"


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np
    from skimage import data as skdata

    from .engine.image_io import write_image
    from .engine.inference import denoise
    from .engine.metrics import psnr, ssim

    out = Path(args.output)
    if not (args.sigma >= 0 and np.isfinite(args.sigma)):
        raise CliError(f"--sigma must be a non-negative number, got {args.sigma:g}")
    if args.seed < 0:
        raise CliError(f"--seed must be a non-negative integer, got {args.seed}")
    if out.exists() and not out.is_dir():
        raise CliError(f"--output {out} is a file; the demo writes a folder of results")
    names = ["clean.tif", "noisy.tif", "denoised.tif", "residual.tif", "demo.png"]
    existing = [n for n in names if (out / n).exists()]
    if existing and not args.overwrite:
        raise CliError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them")
    clean = _demo_image(skdata, args.image)
    model = _load(args.model)
    from .engine.devices import resolve_device

    resolve_device(args.device)  # an unusable device is refused before the folder is made
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    noisy = (clean + rng.normal(0.0, args.sigma / 255.0, clean.shape)).astype(np.float32)
    bar = _Bar("denoise", args.quiet)
    t0 = time.perf_counter()
    try:
        result = np.asarray(
            denoise(model, noisy, axes="YX", device=args.device, progress=bar), dtype=np.float32
        )
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    residual = noisy - result
    for name, arr in zip(names[:4], (clean, noisy, result, residual), strict=True):
        write_image(out / name, arr, overwrite=True)
    panels = [clean, noisy, np.clip(result, 0, 1), np.clip(residual * 2 + 0.5, 0, 1)]
    gap = np.ones((clean.shape[0], 8), np.float32)
    strip = np.concatenate([p if i == 0 else np.concatenate([gap, p], 1) for i, p in enumerate(panels)], 1)
    write_image(out / "demo.png", np.rint(strip * 255).astype(np.uint8), overwrite=True)
    scores = {}
    for label, arr in (("noisy", noisy), ("denoised", result)):
        a = np.clip(arr, 0, 1)
        scores[label] = (psnr(clean, a, 1.0), ssim(clean, a, 1.0))  # as evaluate and the Readout
    name = getattr(model, "source_path", "")
    print(f"model: {Path(name).name or model.architecture} ({model.num_parameters():,} parameters)")
    print(
        f"image: scikit-image '{args.image}' {clean.shape[1]}x{clean.shape[0]}, Gaussian noise sigma {args.sigma:g}/255"
    )
    print(f"noisy:    PSNR {scores['noisy'][0]:6.2f} dB  SSIM {scores['noisy'][1]:.4f}")
    print(
        f"denoised: PSNR {scores['denoised'][0]:6.2f} dB  SSIM {scores['denoised'][1]:.4f}  ({seconds:.1f} s)"
    )
    print(f"wrote {', '.join(names)} to {out} (demo.png: clean | noisy | denoised | residual)")
    return 0


#: Names in ``skimage.data`` that are not sample images.
_NOT_IMAGES = frozenset({"data_dir", "download_all", "file_hash", "lbp_frontal_face_cascade_filename"})


def _demo_image(skdata: Any, name: str) -> Any:
    """A scikit-image sample image as a 2-D float32 array on [0, 1] (colour averaged to grey)."""
    import numpy as np

    loader = getattr(skdata, name, None) if name in getattr(skdata, "__all__", ()) else None
    if loader is None or name in _NOT_IMAGES or not callable(loader):
        raise CliError(f"scikit-image has no sample image {name!r}; try camera, moon, coins or astronaut")
    try:
        image = loader()
    except Exception as exc:  # e.g. a sample that needs a download, offline
        raise CliError(
            f"could not load scikit-image's {name!r} (some samples need a download): {exc}"
        ) from exc
    if not isinstance(image, np.ndarray) or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))
    ):
        raise CliError(f"scikit-image's {name!r} is not a 2-D grey or colour image; try camera or moon")
    clean = np.asarray(image, dtype=np.float32)
    if clean.ndim == 3:
        clean = clean[..., :3].mean(axis=-1)
    if image.dtype == bool:
        return clean
    if image.dtype.kind in "ui":
        return clean / float(np.iinfo(image.dtype).max)
    return np.clip(clean, 0.0, 1.0)


# -- parser ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-addunet",
        description="Additive U-Net denoising and classification from the command line.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bars or messages (results still print)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from napari_addunet.cli_training import add_ensemble_option
    from napari_addunet.cli_training import register as register_training

    def common(
        p: argparse.ArgumentParser, axes: bool = True, default_model: str = "bundled denoiser"
    ) -> None:
        p.add_argument(
            "--model",
            "-m",
            default=None,
            help=f"bundled model name or .safetensors file (default: {default_model})",
        )
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
        if axes:
            p.add_argument(
                "--axes",
                default=None,
                type=_axes_argument,
                help="axes of the input, e.g. YX, ZYX, TYX, YXC, CYX (default: inferred)",
            )
        p.add_argument("--overwrite", action="store_true", help="replace existing output files")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument(
            "--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )

    p = sub.add_parser("denoise", help="denoise images (TIFF, PNG/JPEG, zarr; files or folders)")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--output", "-o", required=True, help="output file, or folder for several inputs")
    p.add_argument("--tile", default=None, help="tile side in pixels, or auto")
    p.add_argument("--gates", default=None, help="AddUNet skip gates, comma-separated, shallow to deep")
    add_ensemble_option(p)
    p.add_argument(
        "--output-format",
        choices=["tiff", "input"],
        default="tiff",
        help="tiff: float32 TIFF (default); input: PNG/JPEG inputs are written in their own "
        "format and integer range, with its suffix. An output file name given with -o picks its "
        "format by its suffix (.tif, .png, .jpg, .bmp)",
    )
    p.add_argument(
        "--nan-policy",
        choices=["raise", "fill", "mask"],
        default="raise",
        help="NaN/Inf in the input: raise (default, refuse the file); fill (replace them by the "
        "median of the finite values); mask (fill, then NaN again at those pixels in the result)",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave inputs whose output file exists (to finish an interrupted folder)",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="when a file fails, say why and go on with the others (exit status 1 if any failed)",
    )
    common(p)
    p.set_defaults(func=cmd_denoise)

    p = sub.add_parser("classify", help="class probabilities per image or plane")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--csv", default=None, help="also write the results as a CSV table to this file")
    common(p, default_model="the bundled classifier, addunet-fashion-mnist")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "info", help="architectures, bundled models, devices, versions, or one model's details"
    )
    p.add_argument("model", nargs="?", default=None)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="denoise a noisy sample image headless and report PSNR/SSIM")
    p.add_argument("--output", "-o", default="demo-output", help="folder for the results")
    p.add_argument("--image", default="camera", help="scikit-image sample image (default: camera)")
    p.add_argument("--sigma", type=float, default=25.0, help="Gaussian noise sigma on [0, 255]")
    p.add_argument("--seed", type=int, default=0)
    common(p, axes=False)
    p.set_defaults(func=cmd_demo)

    register_training(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("napari-addunet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``| head``): stop quietly, as shell tools do
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (CliError, ValueError, KeyError, FileNotFoundError, FileExistsError, TypeError, OSError) as exc:
        return _report(exc, args)
    except RuntimeError as exc:  # out of device memory even with the smallest tiles
        from .engine.tiling import TileMemoryError

        if not isinstance(exc, TileMemoryError):
            raise
        return _report(exc, args)


def _report(exc: BaseException, args: argparse.Namespace) -> int:
    """Print an error as one line (the traceback with --debug) and return the bad-input code."""
    if getattr(args, "debug", False):
        raise exc
    print(f"napari-addunet: error: {_first_line(exc)}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
