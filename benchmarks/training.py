"""Training throughput on the CPU; writes docs/benchmarks/training.md.

Run by hand (not in CI), from the repository root:

    python benchmarks/training.py                 # 12 timed steps per model (~10 min on 2 cores)
    python benchmarks/training.py --steps 4       # quicker, noisier

Measures, in one process and one run, the training throughput (patches per second) of
AddUNet, U-Net and DnCNN at their default sizes and of the bundled denoiser's configuration
(read from the shipped weight file, so the row follows the model that is bundled),
in float32 and (on CPUs with native bfloat16) with ``cpu_bf16``, through the real training loop
(``napari_addunet.engine.training.train_events``): random 64 x 64 patches of scikit-image's
sample images, blind Gaussian noise, AdamW, gradient clipping, batch 16. Each model first
runs ``--warmup`` steps that are not timed; validation is off so only training steps count.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = "addunet-gray-blind"


def _bundled_settings() -> dict:
    """The bundled denoiser's architecture settings, read from the shipped weight file's header."""
    import napari_addunet as na

    return dict(na.read_header(na.bundled_models()[BUNDLED])["config"])


def _describe(config: dict) -> str:
    """A short account of an AddUNet configuration, e.g. ``multi-scale, C=96, 2-4-4-4 3x3 convolutions``."""
    convs = config.get("level_convs") or [config.get("convs_per_level", 2)] * len(config["kernels"])
    kernels = sorted(set(config["kernels"]))
    kind = "multi-scale" if config.get("multiscale") else "constant-resolution"
    ks = "/".join(f"{k}x{k}" for k in kernels)
    return (
        f"{kind}, C={config['width']}, {len(convs)} levels of {'-'.join(map(str, convs))} {ks} convolutions"
    )


def _models() -> dict[str, tuple[str, dict]]:
    """The rows: defaults of three architectures and the bundled denoiser's configuration."""
    return {
        "addunet": ("addunet", {}),
        f"addunet {BUNDLED} (bundled)": ("addunet", _bundled_settings()),
        "unet": ("unet", {}),
        "dncnn": ("dncnn", {}),
    }


def _images() -> list[np.ndarray]:
    from skimage import data

    grey = [data.camera(), data.moon(), data.coins(), data.page(), data.text()]
    return [np.asarray(g) for g in grey]


def measure(
    name: str, arch: str, settings: dict, steps: int, warmup: int, batch: int, patch: int, bf16: bool = False
) -> dict:
    from napari_addunet.engine.complexity import macs_per_pixel
    from napari_addunet.engine.datasets import clean_data
    from napari_addunet.engine.training import train_events
    from napari_addunet.engine.training_events import StepDone
    from napari_addunet.models import create_model

    torch.manual_seed(0)
    model = create_model(arch, **settings)
    params = model.num_parameters()
    fpp = 2 * macs_per_pixel(model)  # one multiply-accumulate = 2 FLOPs
    config = dict(
        epochs=1,
        steps_per_epoch=warmup + steps,
        batch_size=batch,
        patch_size=patch,
        val_fraction=0.0,
        device="cpu",
        sigma_min=0,
        sigma_max=55,
        cpu_bf16=bf16,
    )
    times: list[float] = []
    last = None
    for event in train_events(clean_data(_images()), model, config):
        if isinstance(event, StepDone):
            now = time.perf_counter()
            if last is not None and event.step > warmup:
                times.append(now - last)
            last = now
    per_step = statistics.median(times)
    return {
        "model": name,
        "precision": "bfloat16" if bf16 else "float32",
        "parameters": params,
        "mflop_per_pixel": fpp / 1e6,
        "patches_per_s": batch / per_step,
        "seconds_per_step": per_step,
        "min_s": min(times),
        "max_s": max(times),
        "steps": len(times),
        # forward + backward is about 3x the forward FLOPs
        "gflops": 3 * fpp * patch * patch * batch / per_step / 1e9,
    }


def write_report(
    rows: list[dict], args: argparse.Namespace, command: str, load: tuple[float, float], bundled: str
) -> Path:
    out = ROOT / "docs" / "benchmarks" / "training.md"
    threads = torch.get_num_threads()
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Training throughput (CPU)",
        "",
        "Written by `benchmarks/training.py`; regenerate with:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Measured {datetime.date.today().isoformat()} with torch {torch.__version__} on "
        f"{platform.machine()} ({os.cpu_count()} logical CPUs, {threads} torch threads), "
        "all models and precisions in one run.",
        f"Load average before / after the run: {load[0]:.1f} / {load[1]:.1f}"
        + (
            f" (above the {threads} threads of the run: other jobs shared the cores, so the absolute "
            "numbers are noisy; compare the models with each other rather than with another machine)."
            if max(load) > threads + 0.5
            else "."
        ),
        "",
        f"Each step: {args.batch} random {args.patch} x {args.patch} patches of scikit-image's sample images, "
        "blind Gaussian noise (sigma 0-55), forward, MSE, backward, gradient clipping, AdamW, through the "
        f"real loop (`train_events`). {args.warmup} warm-up steps, then the median of {args.steps} timed "
        "steps. Default sizes (`create_model(name)` with no settings), and the bundled denoiser's "
        f"configuration, read from its weight file ({bundled}). bfloat16 rows train with "
        "`cpu_bf16=True` (autocast; weights and optimizer in float32); the last column is the speed-up "
        "over the same model in float32.",
        "",
        "| model | precision | parameters | MFLOP / pixel (forward, 2 x MACs) | patches / s | s / step (median, min-max) "
        "| GFLOP/s (x3 fwd) | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    fp32 = {r["model"]: r["seconds_per_step"] for r in rows if r["precision"] == "float32"}
    for r in rows:
        base = fp32.get(r["model"])
        speedup = f"{base / r['seconds_per_step']:.2f}x" if base and r["precision"] != "float32" else ""
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['parameters']:,} | {r['mflop_per_pixel']:.2f} | "
            f"{r['patches_per_s']:.1f} | {r['seconds_per_step']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f}) | "
            f"{r['gflops']:.0f} | {speedup} |"
        )
    lines += [
        "",
        "bfloat16 rows appear only on CPUs with native bfloat16. "
        "Reading: time per patch follows FLOPs per pixel (counted as in docs/models.md); "
        "the U-Net spends most of its work at low resolution. GPU throughput (where the loop uses automatic "
        "mixed precision, `amp=True`) was not measured here.",
        "",
    ]
    out.write_text("\n".join(lines))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=64)
    args = ap.parse_args()
    command = "python benchmarks/training.py" + (f" --steps {args.steps}" if args.steps != 12 else "")
    load0 = os.getloadavg()[0]
    from napari_addunet.engine.training import cpu_has_bf16

    models = _models()
    rows = []
    for name, (arch, settings) in models.items():
        for bf16 in (False, True) if cpu_has_bf16() else (False,):
            t0 = time.perf_counter()
            row = measure(name, arch, settings, args.steps, args.warmup, args.batch, args.patch, bf16)
            rows.append(row)
            print(
                f"{name:8s} {row['precision']:8s} {row['patches_per_s']:7.1f} patches/s  ({row['seconds_per_step']:.2f} s/step, "
                f"{row['gflops']:.0f} GFLOP/s, {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    bundled = _describe(models[f"addunet {BUNDLED} (bundled)"][1])
    out = write_report(rows, args, command, (load0, os.getloadavg()[0]), bundled)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
