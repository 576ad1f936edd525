"""Train the bundled joint denoise + classify model on Fashion-MNIST.

Usage, from the repository root (Fashion-MNIST from the Debian/Ubuntu package
``dataset-fashion-mnist``, or ``--folder``)::

    python scripts/train_fashion_model.py                 # ~20 min on one CPU thread
    python scripts/train_fashion_model.py --minutes 10    # stop cleanly after 10 min; the same
                                                          # command continues the run later

Trains an AddUNet (width 32, kernels 5-3-3-1, residual encoder, stride-2 down-sampling: the size
of ``benchmarks/multitask.py``) with a ten-class head on the first 59,000 Fashion-MNIST training
images, with blind Gaussian noise (sigma drawn per image in [0, 55] on [0, 255]) and the loss
``L = L_den + lambda L_cls`` (lambda 1 by default). The last 1,000 training images select the
best epoch. The run (best model and training state) lives in ``runs/fashion-mnist/`` (not
tracked) and resumes from there. When it is complete the best model is scored on the 10,000
test images (sigma 0, 15, 25, 50; seeded noise) and written, atomically, with the class names,
the data's origin and licence, the scores, a quick self-check on Fashion-MNIST
(``fashion_self_check``: the first 200 test images at sigma 25, recomputed by
``tests/core/test_fashion_mnist.py``) and the package's usual ``self_check`` (PSNR on a crop of
scikit-image's camera, see ``napari_addunet.engine.evaluation.self_check``) to
``src/napari_addunet/weights/addunet-fashion-mnist.safetensors``: loadable as
``napari_addunet.load_model("addunet-fashion-mnist")``.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
NAME = "addunet-fashion-mnist"
MODEL_SETTINGS: dict[str, Any] = {"width": 32, "kernels": (5, 3, 3, 1), "multiscale": True, "num_classes": 10}
TEST_SIGMAS = (0.0, 15.0, 25.0, 50.0)
CHECK = {"images": 200, "sigma": 25.0, "seed": 0}  # the self-check the tests recompute
VAL_IMAGES = 1000


def fashion_self_check(model: Any, folder: Path | None = None) -> dict[str, Any]:
    """Scores on the first 200 test images at sigma 25 (seeded): the numbers stored in the file."""
    from napari_addunet.engine.fashion_mnist import evaluate_noisy, load_fashion_mnist

    images, labels = load_fashion_mnist("test", folder, limit=CHECK["images"])
    s = evaluate_noisy(model, images, labels, CHECK["sigma"], seed=CHECK["seed"])
    return {
        **CHECK,
        "accuracy": round(s.accuracy, 4),
        "psnr": round(s.psnr, 4),
        "input_psnr": round(s.input_psnr, 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--steps", type=int, default=5000, help="optimizer steps in total (the schedule's length)"
    )
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lambda", dest="lam", type=float, default=1.0, help="weight of the classification loss")
    ap.add_argument("--sigma-max", type=float, default=55.0, help="highest training noise sigma on [0, 255]")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=0, help="stop cleanly after this long (0: to the end)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--folder", type=Path, default=None, help="folder of the Fashion-MNIST .gz files")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "fashion-mnist", help="run folder")
    ap.add_argument(
        "--output", type=Path, default=ROOT / "src" / "napari_addunet" / "weights" / f"{NAME}.safetensors"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps_per_epoch = 200
    if args.steps % steps_per_epoch:
        ap.error(f"--steps must be a multiple of {steps_per_epoch}")

    import napari_addunet as na
    from napari_addunet.engine import fashion_mnist as fm
    from napari_addunet.engine.checkpoint import local_paths
    from napari_addunet.engine.evaluation import self_check as camera_self_check
    from napari_addunet.engine.training_state import state_path_for

    images, labels = fm.load_fashion_mnist("train", args.folder)
    train_data = fm.training_data(images[:-VAL_IMAGES], labels[:-VAL_IMAGES])
    val_data = fm.training_data(images[-VAL_IMAGES:], labels[-VAL_IMAGES:])

    args.work.mkdir(parents=True, exist_ok=True)
    run_file = args.work / f"{NAME}.safetensors"
    state = state_path_for(run_file)
    resume = state if state.exists() else None
    config = {
        "epochs": args.steps // steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": args.batch_size,
        "patch_size": 28,
        "lr": args.lr,
        "warmup_steps": 100,
        "augment": False,  # rotations would change what some classes look like
        "lambda_cls": args.lam,
        "sigma_min": 0.0,
        "sigma_max": args.sigma_max,
        "val_patches": VAL_IMAGES,
        "seed": args.seed,
        "device": "cpu",
    }
    command = (
        f"python scripts/train_fashion_model.py --steps {args.steps} --batch-size {args.batch_size} "
        f"--lambda {args.lam:g} --sigma-max {args.sigma_max:g} --lr {args.lr:g} --seed {args.seed}"
    )
    dataset = {
        "name": "Fashion-MNIST",
        "license": fm.LICENSE,
        "citation": fm.CITATION,
        "source": f"IDX files of the Debian/Ubuntu package {fm.DEBIAN_PACKAGE}",
        "train_images": f"first {len(train_data):,} of the 60,000 training images",
        "validation_images": f"last {VAL_IMAGES:,} training images (best epoch by validation loss)",
    }
    if resume is not None:
        from napari_addunet.engine.training_state import load_state, loads

        before = loads(load_state(state)["config"])
        differ = {k: (before.get(k), v) for k, v in config.items() if before.get(k) != v}
        if differ:
            listed = ", ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in differ.items())
            raise SystemExit(
                f"the run in {args.work.name}/ was started with other settings ({listed}); "
                "give the same options to continue it, or another --work folder to start afresh"
            )
    model: Any = None
    if resume is None:
        torch.manual_seed(args.seed)
        model = na.create_model("addunet", **MODEL_SETTINGS)
        model.metadata["dataset"] = dataset
    stop = threading.Event()
    if args.minutes:
        timer = threading.Timer(args.minutes * 60, stop.set)
        timer.daemon = True
        timer.start()
    print(f"{'resuming from ' + state.name if resume else 'new run'}; {command}", flush=True)

    def log(event: Any) -> None:
        if type(event).__name__ != "EpochDone":
            return
        v = event.validation
        print(
            f"{time.strftime('%H:%M:%S')} epoch {event.epoch}/{event.epochs} step {event.step} "
            f"loss {event.train.total:.5f} (den {event.train.denoise:.5f}, cls {event.train.classify:.4f}) "
            + (f"val acc {v.accuracy:.4f} PSNR {v.psnr:.2f} dB (input {v.input_psnr:.2f}) " if v else "")
            + f"gates {','.join(f'{g:.3f}' for g in event.gates or ())} "
            f"{event.samples_per_second:.0f} images/s {event.elapsed_seconds / 60:.1f} min",
            flush=True,
        )

    result = na.train(
        train_data,
        model,
        None if resume else config,
        validation=val_data,
        output=run_file,
        resume=resume,
        overwrite=resume is None,
        stop=stop,
        command=command,
        callback=log,
    )
    if result.reason == "stopped":
        print(f"stopped at step {result.step}; run the same command again to continue", flush=True)
        return 0

    best = na.load_model(run_file)
    print(f"{result.reason} at step {result.step}; best epoch {result.best.epoch}. Scoring...", flush=True)
    test_images, test_labels = fm.load_fashion_mnist("test", args.folder)
    scores = {}
    for sigma in TEST_SIGMAS:
        s = fm.evaluate_noisy(best, test_images, test_labels, sigma, seed=0)
        scores[f"{sigma:g}"] = {
            "accuracy": round(s.accuracy, 4),
            "psnr": round(s.psnr, 3),
            "ssim": round(s.ssim, 4),
            "input_psnr": round(s.input_psnr, 3) if sigma else None,
            "input_ssim": round(s.input_ssim, 4),
        }
        print(
            f"test sigma {sigma:g}: accuracy {s.accuracy:.4f}  PSNR {s.psnr:.2f} dB "
            f"(input {s.input_psnr:.2f})  SSIM {s.ssim:.4f} (input {s.input_ssim:.4f})",
            flush=True,
        )
    test = {
        "images": "the 10,000 Fashion-MNIST test images",
        "protocol": "image / 255 plus N(0, (sigma/255)^2) noise from numpy.random.default_rng([0, "
        "round(1000 sigma)]), not clipped; accuracy from the noisy input; PSNR/SSIM of the output "
        "clipped to [0, 1] (data range 1)",
        "by_sigma": scores,
    }
    metadata = {
        "class_names": list(fm.CLASS_NAMES),
        # the dtype's range: 0..255 for uint8 (as in training), 0..1 for float images
        "normalization": {"method": "range"},
        "dataset": dataset,
        "test": test,
        "fashion_self_check": fashion_self_check(best, args.folder),
        "self_check": camera_self_check(best),
    }
    bad = local_paths({**best.metadata, **metadata})
    if bad:
        raise SystemExit("refusing to write metadata naming machine paths: " + "; ".join(bad))
    na.save_model(best, args.output, overwrite=True, **metadata)
    check = na.load_model(args.output)
    assert check.class_names == list(fm.CLASS_NAMES)
    print(f"wrote {args.output.name} ({args.output.stat().st_size / 1e6:.2f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
