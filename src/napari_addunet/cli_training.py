"""The ``train`` and ``evaluate`` commands of the ``napari-addunet`` command line.

:func:`register` adds both to the main parser's sub-commands. Like the other commands,
they are thin layers over the Python API (:func:`napari_addunet.engine.training.train_events`
and :func:`napari_addunet.engine.evaluation.evaluate`); user errors end as one line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

EXIT_STOPPED = 130


def _error(message: str) -> Exception:
    from .cli import CliError

    return CliError(message)


def _say(args: argparse.Namespace, *parts: Any) -> None:
    if not getattr(args, "quiet", False) and os.environ.get("RANK", "0") == "0":
        print(*parts, flush=True)


# -- parsing helpers ------------------------------------------------------------------------------
def parse_sigma(text: str) -> tuple[float, float]:
    """``"25"`` -> ``(25, 25)``; ``"0:55"`` (or ``"0-55"``) -> ``(0, 55)``."""
    try:  # a number first: 1e-3 is a level, not the range 1e to 3
        v = float(text)
        sep: str | None = ""
    except ValueError:
        sep = ":" if ":" in text else ("-" if text.count("-") == 1 and not text.startswith("-") else None)
    try:
        if sep == "":
            lo = hi = v
        elif sep is None:
            v = float(text)
            lo, hi = v, v
        else:
            a, b = text.split(sep)
            lo, hi = float(a), float(b)
    except ValueError as exc:
        raise _error(f"--sigma takes a level or a range on [0, 255], e.g. 25 or 0:55; got {text!r}") from exc
    if not 0 <= lo <= hi <= 255:
        raise _error(f"--sigma needs 0 <= low <= high <= 255, got {text!r}")
    return lo, hi


def parse_sigmas(text: str) -> list[float]:
    """``"15,25,50"`` -> ``[15.0, 25.0, 50.0]``."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise _error(f"--sigma takes comma-separated noise levels, e.g. 15,25,50; got {text!r}") from exc
    if not values or any(v < 0 or v > 255 for v in values):
        raise _error(f"--sigma levels must be in [0, 255], got {text!r}")
    return values


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"width=16"`` as ``("width", 16)``: integers, decimals and true/false are converted;
    other values stay text (``kernels=5,3,3,1`` is read by the model's settings)."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key.isidentifier() or not value:
        raise _error(f"--set takes NAME=VALUE, e.g. --set width=16 --set kernels=5,3,3,1; got {text!r}")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def read_config_file(path: str) -> dict[str, Any]:
    """Read a JSON or TOML file with ``arch``, a ``model`` table and a ``training`` table."""
    p = Path(path)
    if not p.is_file():
        raise _error(f"config file {p.name} does not exist")
    text = p.read_text(encoding="utf-8-sig")  # as saved by editors that add a byte-order mark
    if p.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError as exc:
                raise _error(
                    "reading TOML needs Python 3.11 or the 'tomli' package; use JSON instead"
                ) from exc
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _error(f"config file {p.name}: invalid TOML: {exc}") from exc
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _error(f"config file {p.name}: invalid JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise _error(f"config file {p.name} must hold a table/object")
    unknown = sorted(set(values) - {"arch", "architecture", "model", "training"})
    if unknown:
        raise _error(
            f"config file {p.name}: unknown section(s) {', '.join(unknown)}; "
            "use 'arch', 'model' and 'training'"
        )
    for key in ("model", "training"):
        if key in values and not isinstance(values[key], dict):
            raise _error(f"config file {p.name}: '{key}' must be a table of settings")
    return values


# -- train ----------------------------------------------------------------------------------------
def _training_data(args: argparse.Namespace) -> Any:
    from .engine.datasets import class_folder_data, clean_data, noisy_data, paired_data

    if args.clean and args.noisy:
        raise _error("give either --clean or --noisy, not both")
    if not args.clean and not args.noisy:
        raise _error("give the training images with --clean (synthetic noise) or --noisy (noisy images only)")
    if args.noisy and (args.sigma is not None or args.noise):
        given = " and ".join(o for o, v in (("--sigma", args.sigma), ("--noise", args.noise)) if v)
        raise _error(
            f"{given} set the synthetic noise added to --clean images; --noisy images are trained "
            "on their own noise, so drop it"
        )
    sources = args.clean or args.noisy
    norm = None if args.normalization == "auto" else args.normalization
    if args.pairs:
        if args.clean:
            raise _error("--pairs gives the targets of --noisy inputs; use it with --noisy")
        if args.class_folders:
            raise _error("--class-folders cannot be combined with --pairs; give --labels instead")
        return paired_data(sources, args.pairs, labels=args.labels, normalization=norm)
    if args.class_folders:
        if args.labels:
            raise _error("give either --labels or --class-folders, not both")
        if len(sources) != 1:
            raise _error("--class-folders takes one folder with a sub-folder per class")
        return class_folder_data(
            sources[0], mode="supervised" if args.clean else "noise2void", normalization=norm
        )
    build = clean_data if args.clean else noisy_data
    return build(sources, labels=args.labels, normalization=norm)


def _training_settings(args: argparse.Namespace, file: dict[str, Any]) -> dict[str, Any]:
    values = dict(file.get("training", {}))
    flags = {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "lr": args.lr,
        "lambda_cls": args.lambda_cls,
        "noise": args.noise.replace("-", "_") if args.noise else None,
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "patience": args.patience,
        "device": args.device,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.sigma is not None:
        values["sigma_min"], values["sigma_max"] = parse_sigma(args.sigma)
    return values


class _StopOnInterrupt:
    """First Ctrl-C: stop after the current step (files are written); second: abort."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop, self.previous = stop, None

    def __enter__(self) -> _StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        print("\nstopping after this step (Ctrl-C again to abort)...", file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


_TRAIN_OPTIONS = (
    "clean",
    "noisy",
    "pairs",
    "labels",
    "class_folders",
    "normalization",
    "arch",
    "config",
    "set",
    "epochs",
    "steps",
    "batch_size",
    "patch_size",
    "lr",
    "sigma",
    "noise",
    "lambda_cls",
    "val_fraction",
    "patience",
    "seed",
    "device",
    "resume",
    "overwrite",
    "output",
)


def _command(args: argparse.Namespace) -> str:
    """The command line as given, with file names only (no folders), for the checkpoint."""

    def name(v: Any) -> str:
        text = str(v)
        return shlex.quote(Path(text).name if os.sep in text else text)

    parts = ["napari-addunet", "train"]
    for key in _TRAIN_OPTIONS:
        value = getattr(args, key, None)
        if value is None or value is False or (key == "normalization" and value == "auto"):
            continue
        flag = "--lambda" if key == "lambda_cls" else "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif key == "set":  # repeated flag
            parts += [part for v in value for part in (flag, shlex.quote(v))]
        elif isinstance(value, list):
            parts += [flag, *map(name, value)]
        else:
            parts += [flag, name(value)]
    return " ".join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.training import TrainingError, summarize, train_events
    from .engine.training_events import (
        CheckpointSaved,
        EpochDone,
        StepDone,
        TrainingFinished,
        TrainingStarted,
    )
    from .engine.training_state import load_state, state_path_for

    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise _error(f"the output model file must end in .safetensors, got {output.name!r}")
    if output.exists() and not (args.overwrite or args.resume):
        raise _error(f"{output} exists; pass --overwrite to replace it or --resume to continue its training")
    file = read_config_file(args.config) if args.config else {}
    arch = args.arch or file.get("arch") or file.get("architecture")
    settings = _training_settings(args, file)
    model_settings = {**dict(file.get("model", {})), **dict(parse_assignment(a) for a in args.set or [])}
    resume = None
    if args.resume:
        if not state_path_for(output).is_file():
            state = state_path_for(output).name
            what = f"has no training state beside it ({state})" if output.exists() else "does not exist yet"
            raise _error(f"--resume: {output} {what}; start without --resume")
        resume = output
        state_config = json.loads(load_state(output)["config"])
        settings = {**state_config, **settings}
        if model_settings:
            raise _error(
                "--resume continues the saved model; its model settings (--set, [model]) cannot change"
            )
    lam = settings.get("lambda_cls") or 0
    if isinstance(lam, int | float) and lam > 0 and not (args.labels or args.class_folders):
        raise _error(
            f"lambda {lam:g} adds a classification loss, which needs class labels: add --labels "
            "FILE.csv or --class-folders, or set --lambda 0"
        )
    if lam == 0 and (args.labels or args.class_folders):
        raise _error(
            "class labels are given but lambda is 0, so the classification head would not learn: "
            "add --lambda (e.g. 1), or leave out --labels/--class-folders to train a denoiser only"
        )
    data = _training_data(args)
    stop = threading.Event()
    try:  # the run is prepared here: a setting the machine cannot honour fails now
        gen = train_events(
            data,
            args.arch if args.resume else arch,
            settings or None,
            output=output,
            resume=resume,
            overwrite=args.overwrite,
            stop=stop,
            command=_command(args),
            model_settings=model_settings or None,
        )
    except TrainingError as exc:
        raise _error(str(exc)) from exc
    quiet = args.quiet or os.environ.get("RANK", "0") != "0"
    bar = None
    finished: TrainingFinished | None = None
    try:
        with _StopOnInterrupt(stop):
            for event in _guard(gen):
                if isinstance(event, TrainingStarted):
                    what = "resuming" if event.resumed else "training"
                    _say(
                        args,
                        f"{what} {event.parameters:,}-parameter model ({event.mode}) on {event.device}"
                        f"{f' x{event.world_size}' if event.world_size > 1 else ''}: "
                        f"{event.train_planes} training / {event.val_planes} validation image(s), "
                        f"{event.epochs} epochs of {event.steps_per_epoch} steps",
                    )
                    if not quiet:
                        from tqdm import tqdm

                        bar = tqdm(
                            total=event.total_steps,
                            initial=event.step,
                            unit="step",
                            leave=False,
                            file=sys.stderr,
                            dynamic_ncols=True,
                        )
                elif isinstance(event, StepDone) and bar is not None:
                    bar.n = event.step
                    bar.set_postfix_str(f"loss {event.loss.total:.4g} lr {event.lr:.2g}", refresh=False)
                    bar.refresh()
                elif isinstance(event, EpochDone) and not quiet:
                    line = summarize(event)
                    (bar.write(line, file=sys.stdout) if bar is not None else print(line))
                elif isinstance(event, CheckpointSaved):
                    pass
                elif isinstance(event, TrainingFinished):
                    finished = event
    finally:
        gen.close()
        if bar is not None:
            bar.close()
    if finished is None:  # pragma: no cover - the generator always ends with TrainingFinished
        return 1
    best = finished.best
    where = f"{finished.checkpoint}" if finished.checkpoint else "(not saved)"
    if best is not None:
        extra = f", val PSNR {best.psnr:.2f} dB" if best.psnr is not None else ""
        extra += f", val accuracy {best.accuracy:.3f}" if best.accuracy is not None else ""
        _say(args, f"best model (epoch {best.epoch}, {best.metric} {best.value:.5g}{extra}) -> {where}")
    else:
        _say(args, f"model -> {where} (no epoch finished)")
    if finished.reason == "stopped":
        _say(args, f"stopped at step {finished.step}; continue with: --resume -o {output}")
        return EXIT_STOPPED
    if finished.reason == "early_stopping":
        _say(args, f"early stopping after epoch {finished.epoch} (no improvement for the patience)")
    return 0


def _guard(gen: Any) -> Any:
    """Re-raise a training failure as a one-line command-line error."""
    from .engine.training import TrainingError

    try:
        yield from gen
    except TrainingError as exc:
        raise _error(str(exc)) from exc


# -- evaluate ---------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .cli import check_output_file
    from .engine.evaluation import evaluate

    sigmas = parse_sigmas(args.sigma)
    if args.json and args.json != "-":
        check_output_file(args.json, args.overwrite, "--json")
    bar = None

    def progress(event: Any) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=event.total, unit="image", leave=False, file=sys.stderr)
        bar.set_postfix_str(f"{event.image} sigma {event.sigma:g}", refresh=False)
        bar.n = event.done
        bar.refresh()

    model = args.model
    try:
        report = evaluate(
            model,
            args.images if len(args.images) > 1 else args.images[0],
            sigmas,
            device=args.device,
            progress=progress,
            ensemble=args.ensemble,
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json == "-":
        print(report.to_json())
    else:
        print(report.table(per_image=not args.means_only), flush=True)  # the results, even with -q
        if args.json:
            from .engine.atomic import atomic_write_text

            atomic_write_text(args.json, report.to_json() + "\n", overwrite=args.overwrite)
            _say(args, f"wrote {args.json}")
    return 0


def add_ensemble_option(p: argparse.ArgumentParser) -> None:
    """``--ensemble N``: the self-ensemble size (:mod:`napari_addunet.engine.ensemble`)."""
    from .engine.ensemble import ENSEMBLE_SIZES

    p.add_argument(
        "--ensemble",
        type=int,
        default=1,
        choices=list(ENSEMBLE_SIZES),
        help="self-ensemble: average over this many flips/transposes of each image, "
        "N times the time (default 1: off)",
    )


# -- registration -----------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add the ``train`` and ``evaluate`` commands to the main parser's sub-commands."""

    def hidden_common(p: argparse.ArgumentParser, device: str | None) -> None:
        p.add_argument(
            "--device", default=device, help=f"auto, cpu, cuda, cuda:N or mps (default: {device or 'auto'})"
        )
        p.add_argument("--overwrite", action="store_true", help="replace existing output files")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument(
            "--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )

    p = subparsers.add_parser(
        "train",
        help="train a denoiser (and classifier) on clean, noisy-only or paired images",
        description="Train a model. Clean images: synthetic noise (supervised). Noisy images only: "
        "blind-spot self-supervision (Noise2Void). --noisy with --pairs: Noise2Noise or real pairs. "
        "Labels add a classification loss weighted by --lambda. Launch with torchrun for several GPUs.",
    )
    src = p.add_argument_group("data")
    src.add_argument(
        "--clean", nargs="+", metavar="PATH", help="clean images: folders, files (TIFF, PNG, ...)"
    )
    src.add_argument("--noisy", nargs="+", metavar="PATH", help="noisy images (alone: blind-spot training)")
    src.add_argument("--pairs", nargs="+", metavar="PATH", help="targets of the --noisy images, same order")
    src.add_argument("--labels", metavar="CSV", help="class labels: file,label or file,plane,label per row")
    src.add_argument(
        "--class-folders",
        action="store_true",
        help="the --clean/--noisy folder holds one sub-folder of images per class",
    )
    src.add_argument(
        "--normalization",
        default="auto",
        choices=["auto", "percentile", "range", "none"],
        help="intensity mapping to [0, 1] (auto: 0..255 for 8-bit images, else percentiles)",
    )
    m = p.add_argument_group("model and settings")
    m.add_argument("--arch", default=None, help="architecture (default addunet; see `napari-addunet info`)")
    m.add_argument("--config", metavar="FILE", help="JSON/TOML file: arch, [model] and [training] settings")
    m.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="a model setting, repeatable, over the --config file's [model]: --set width=16 "
        "--set kernels=5,3,3,1 (`napari-addunet info` lists the architectures; their settings "
        "are in docs/models.md)",
    )
    import dataclasses

    from .engine.training_config import TrainingConfig

    default = {f.name: f.default for f in dataclasses.fields(TrainingConfig)}

    def d(name: str) -> str:
        return (
            f" (default: {default[name]:g})"
            if isinstance(default[name], float)
            else f" (default: {default[name]})"
        )

    m.add_argument("--epochs", type=int, help="epochs, each followed by validation" + d("epochs"))
    m.add_argument("--steps", type=int, help="steps per epoch" + d("steps_per_epoch"))
    m.add_argument("--batch-size", type=int, help="patches per step" + d("batch_size"))
    m.add_argument("--patch-size", type=int, help="side of the training patches in pixels" + d("patch_size"))
    m.add_argument("--lr", type=float, help="peak learning rate" + d("lr"))
    m.add_argument(
        "--sigma",
        help="synthetic Gaussian noise level on [0, 255] for --clean images: 25, or a range 0:55 (blind)"
        + f" (default: {default['sigma_min']:g}:{default['sigma_max']:g})",
    )
    m.add_argument(
        "--noise",
        choices=["gaussian", "poisson-gaussian"],
        help="synthetic noise model for --clean images" + d("noise"),
    )
    m.add_argument(
        "--lambda",
        dest="lambda_cls",
        type=float,
        help="weight of the classification loss; needs --labels or --class-folders" + d("lambda_cls"),
    )
    m.add_argument(
        "--val-fraction", type=float, help="fraction of images held out for validation" + d("val_fraction")
    )
    m.add_argument(
        "--patience",
        type=int,
        help="early stopping after this many epochs without improvement, 0 off" + d("patience"),
    )
    m.add_argument("--seed", type=int, help="seed of weights, patches and noise" + d("seed"))
    p.add_argument("--resume", action="store_true", help="continue the training saved in --output")
    p.add_argument("--output", "-o", required=True, help="the model file to write (.safetensors)")
    hidden_common(p, None)
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "evaluate",
        help="PSNR/SSIM on 8-bit grey images with the published benchmark protocol",
        description="Add seeded Gaussian noise to each image, denoise, round to 8 bits, report PSNR/SSIM "
        "per image and the mean (the protocol of the published DnCNN/DPIR tables).",
    )
    p.add_argument("--model", "-m", default=None, help="bundled model name or .safetensors file")
    p.add_argument("--images", nargs="+", required=True, help="folder(s) or files of 8-bit grey images")
    p.add_argument(
        "--sigma", default="15,25,50", help="noise levels on [0, 255], comma-separated (default: 15,25,50)"
    )
    p.add_argument("--json", default=None, help="write the results as JSON to this file ('-': stdout only)")
    p.add_argument(
        "--means-only",
        action="store_true",
        help="print only the mean per noise level (the --json file keeps every image)",
    )
    add_ensemble_option(p)
    hidden_common(p, "cpu")
    p.set_defaults(func=cmd_evaluate)
