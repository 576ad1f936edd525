"""Train (or continue training) the bundled blind grayscale denoiser on Train400.

Usage, from the repository root, with ``TRAIN400`` the DnCNN training folder::

    python scripts/train_bundled_denoiser.py TRAIN400 --candidate ms-real-c64 --steps 12000 \
        -o training/step5/ms-real-c64.safetensors [--minutes 120] [--threads 2]

The split is the one of ``benchmarks/select_config.py``: every 20th image (sorted by name) is
held out for validation, the other 380 train. The same command continues a stopped run from
``<output>.state.pt`` (optimizer, schedule, step, random state), so the run can be spread over
sessions; ``--minutes`` stops it cleanly after that long (the state is also saved after each
epoch of 100 steps). The ``.safetensors`` file always holds the best validation epoch so far.
To bundle it: ``python scripts/finalize_weights.py <output> src/napari_addunet/weights/addunet-gray-blind.safetensors``.
"""

from __future__ import annotations

import argparse
import importlib.util
import threading
import time
from pathlib import Path

import torch

import napari_addunet as na
from napari_addunet.engine.training_state import state_path_for

ROOT = Path(__file__).resolve().parents[1]


def _selection_module():
    spec = importlib.util.spec_from_file_location("select_config", ROOT / "benchmarks" / "select_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    sel = _selection_module()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train400", type=Path)
    ap.add_argument("--candidate", choices=list(sel.CANDIDATES), required=True)
    ap.add_argument("--steps", type=int, default=12000, help="total steps (the cosine schedule's length)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--val-seed",
        type=int,
        default=-1,
        help="seed of the validation patches (-1: --seed; 0 gives the patches of the earlier runs)",
    )
    ap.add_argument(
        "--loss", choices=("mse", "log_mse"), default="mse", help="log_mse: every patch counts by its PSNR"
    )
    ap.add_argument(
        "--minutes", type=float, default=0, help="stop cleanly after this long (0: run to the end)"
    )
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="validate and save a moving average of the weights with this decay (0: off)",
    )
    ap.add_argument(
        "--bf16", action="store_true", help="bfloat16 mixed precision (CPUs with native bfloat16 only)"
    )
    ap.add_argument(
        "--init",
        type=Path,
        help="start a new run (new optimizer and schedule) from these weights instead of from scratch; "
        "ignored while <output>.state.pt exists (the run it holds continues)",
    )
    ap.add_argument("--output", "-o", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    arch, settings, label = sel.CANDIDATES[args.candidate]
    train_files, val_files = sel.split_train400(args.train400)
    state = state_path_for(args.output)
    resume = state if state.exists() else None
    if args.init is not None and not args.init.is_file():
        ap.error(f"--init: no such model file: {args.init}")
    config = {
        "epochs": args.steps // 100,
        "steps_per_epoch": 100,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "lr": args.lr,
        "warmup_steps": 100,
        "sigma_min": 0.0,
        "sigma_max": 55.0,
        "val_fraction": 0.0,
        "val_patches": 128,
        "seed": args.seed,
        "val_seed": args.val_seed,
        "loss": args.loss,
        "device": "cpu",
        "cpu_bf16": args.bf16,
        "ema_decay": args.ema_decay,
    }
    command = (
        f"python scripts/train_bundled_denoiser.py <Train400> --candidate {args.candidate} --steps {args.steps} "
        f"--batch-size {args.batch_size} --patch-size {args.patch_size} --lr {args.lr} --seed {args.seed}"
        + (" --bf16" if args.bf16 else "")
        + (f" --loss {args.loss}" if args.loss != "mse" else "")
        + (f" --ema-decay {args.ema_decay:g}" if args.ema_decay else "")
        + (f" --val-seed {args.val_seed}" if args.val_seed >= 0 else "")
        + (f" --init {args.init.name}" if args.init else "")
        + f" -o {args.output.name}"
    )
    stop = threading.Event()
    if args.minutes:
        timer = threading.Timer(args.minutes * 60, stop.set)
        timer.daemon = True
        timer.start()
    if resume:
        # the state holds the run's model and settings: only --minutes and --threads act now
        start = f"resuming from {state.name} with its saved settings (flags other than --minutes and --threads are not used)"
    elif args.init:
        start = f"new run from the weights of {args.init.name}"
    else:
        start = "new run"
    print(f"{label}; {start}", flush=True)
    if resume:
        model = None
    elif args.init:
        model = na.load_model(args.init)
    else:
        model = arch

    def log(event) -> None:
        if type(event).__name__ != "EpochDone":
            return
        v = event.validation
        print(
            f"{time.strftime('%H:%M:%S')} epoch {event.epoch}/{event.epochs} step {event.step} "
            f"loss {event.train.total:.6f} lr {event.lr:.2e} "
            + (f"val PSNR {v.psnr:.3f} dB (input {v.input_psnr:.2f}) SSIM {v.ssim:.4f} " if v else "")
            + f"gates {','.join(f'{g:.3f}' for g in event.gates or ())} "
            f"{event.samples_per_second:.1f} patches/s",
            flush=True,
        )

    result = na.train(
        na.clean_data([str(f) for f in train_files]),
        model,
        None if resume else config,
        model_settings=settings if isinstance(model, str) else None,
        validation=na.clean_data([str(f) for f in val_files]),
        output=args.output,
        resume=resume,
        stop=stop,
        command=command,
        callback=log,
    )
    best = result.best
    print(
        f"{result.reason} after step {result.step} (last validated at step "
        f"{result.history[-1]['step'] if result.history else 0}); best {best}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
