"""Choose the bundled denoiser's configuration on a validation split of Train400.

Run by hand (not in CI), from the repository root, with ``TRAIN400`` the DnCNN training folder:

    python benchmarks/select_config.py TRAIN400                      # every candidate
    python benchmarks/select_config.py TRAIN400 --only ms-real-c64    # one (results merge)

Every candidate trains with the same budget (``--steps`` optimizer steps of ``--batch-size``
random ``--patch-size`` patches, blind Gaussian noise sigma in [0, 55], AdamW with a cosine
schedule, one seed) on the 380 Train400 images whose index is not a multiple of 20, and is
then scored with the published tables' protocol (``napari_addunet.evaluate``) on the 20
held-out images (index 0, 20, 40, ...) at sigma 15, 25 and 50. The test sets are not read.

Writes ``docs/benchmarks/config-selection.json`` and ``.md`` and keeps each trained model in
``training/budget/<name>.safetensors``, so that ``benchmarks/denoising.py`` can score the same
models on the test sets. A candidate already in the JSON file is skipped (``--redo`` retrains).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "benchmarks" / "config-selection.json"
OUT_MD = ROOT / "docs" / "benchmarks" / "config-selection.md"
MODELS_DIR = ROOT / "training" / "budget"
SIGMAS = (15.0, 25.0, 50.0)

MS = {"multiscale": True, "kernels": (3, 3, 3, 3), "convs_per_level": 2}
CANDIDATES: dict[str, tuple[str, dict[str, Any], str]] = {
    "const-real-c32": ("addunet", {}, "AddUNet Real, constant resolution, C=32, kernels 9-7-5-3-1"),
    "const-pseudo-c32": (
        "addunet",
        {"encoder": "plain"},
        "AddUNet Pseudo, constant resolution, C=32, kernels 9-7-5-3-1",
    ),
    "ms-real-c48": ("addunet", {**MS, "width": 48}, "AddUNet Real, multi-scale, C=48, 4 levels of 2 3x3"),
    "ms-real-c64": ("addunet", {**MS, "width": 64}, "AddUNet Real, multi-scale, C=64, 4 levels of 2 3x3"),
    "ms-real-c96": ("addunet", {**MS, "width": 96}, "AddUNet Real, multi-scale, C=96, 4 levels of 2 3x3"),
    "ms-real-c112": ("addunet", {**MS, "width": 112}, "AddUNet Real, multi-scale, C=112, 4 levels of 2 3x3"),
    "ms-real-c96-deep4": (
        "addunet",
        {**MS, "width": 96, "level_convs": (2, 4, 4, 4)},
        "AddUNet Real, multi-scale, C=96, 2-4-4-4 3x3 convolutions per level",
    ),
    "ms-pseudo-c64": (
        "addunet",
        {**MS, "width": 64, "encoder": "plain"},
        "AddUNet Pseudo, multi-scale, C=64, 4 levels of 2 3x3",
    ),
    "unet": ("unet", {}, "classic U-Net (concatenated skips), default size"),
    "dncnn": ("dncnn", {}, "DnCNN, 17 layers of 64 channels"),
}


def split_train400(folder: Path) -> tuple[list[Path], list[Path]]:
    """Training and validation files: every 20th image (sorted by name) is held out."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".tif", ".tiff", ".jpg"})
    if len(files) < 40:
        raise SystemExit(f"expected the 400 Train400 images in {folder}, found {len(files)}")
    val = files[::20]
    train = [f for i, f in enumerate(files) if i % 20]
    return train, val


def budget_config(args: argparse.Namespace, sigma_min: float, sigma_max: float) -> dict[str, Any]:
    """The training settings of a short equal-budget run: ``args.steps`` steps in epochs of 100,
    ``args.batch_size`` patches of ``args.patch_size``, peak ``args.lr`` after a short warm-up,
    no validation split, on the CPU."""
    epochs = max(1, args.steps // 100)
    return {
        "epochs": epochs,
        "steps_per_epoch": args.steps // epochs,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "lr": args.lr,
        "warmup_steps": min(100, args.steps // 10),
        "sigma_min": sigma_min,
        "sigma_max": sigma_max,
        "val_fraction": 0.0,
        "seed": args.seed,
        "device": "cpu",
    }


def run_candidate(
    name: str, args: argparse.Namespace, train_files: list[Path], val_files: list[Path]
) -> dict:
    import napari_addunet as na
    from napari_addunet import create_model, macs_per_pixel, receptive_field

    arch, settings, label = CANDIDATES[name]
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    out = MODELS_DIR / f"{name}.safetensors"
    torch.manual_seed(args.seed)
    model = create_model(arch, **settings)
    config = budget_config(args, 0.0, 55.0)
    command = (
        f"python benchmarks/select_config.py <Train400> --only {name} --steps {args.steps} "
        f"--batch-size {args.batch_size} --patch-size {args.patch_size} --lr {args.lr} --seed {args.seed}"
    )
    t0 = time.perf_counter()
    result = na.train(
        na.clean_data([str(f) for f in train_files]),
        model,
        config,
        validation=na.clean_data([str(f) for f in val_files]),
        output=out,
        overwrite=True,
        command=command,
        callback=lambda e: _log(name, e),
    )
    train_seconds = time.perf_counter() - t0
    # Score the last weights (the run returns its best epoch by validation loss, measured on
    # these very images): every candidate gets exactly the same budget.
    from napari_addunet.engine.training_state import load_state

    final = result.model
    final.load_state_dict(load_state(out)["model"])
    final.eval()
    report = na.evaluate(final, [str(f) for f in val_files], SIGMAS, device="cpu")
    row = {
        "name": name,
        "description": label,
        "architecture": arch,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "parameters": sum(p.numel() for p in final.parameters()),
        "macs_per_pixel": int(macs_per_pixel(final)),
        "receptive_field": receptive_field(final),
        "steps": result.history[-1]["step"] if result.history else 0,
        "train_seconds": round(train_seconds, 1),
        "val_psnr": {f"{s:g}": round(report.mean(s)["psnr"], 3) for s in SIGMAS},
        "val_ssim": {f"{s:g}": round(report.mean(s)["ssim"], 4) for s in SIGMAS},
        "val_input_psnr": {f"{s:g}": round(report.mean(s)["input_psnr"], 3) for s in SIGMAS},
        "gates": list(getattr(final, "gates", ())),
        "checkpoint": str(out.relative_to(ROOT)),
    }
    # The checkpoint file holds the best epoch; overwrite it with the scored (final) weights.
    na.save_model(final, out, overwrite=True, command=command, data="<Train400> minus every 20th image")
    return row


def _log(name: str, event: Any) -> None:
    if type(event).__name__ == "EpochDone":
        v = event.validation
        val = f"val PSNR {v.psnr:.2f} dB" if v is not None and getattr(v, "psnr", None) is not None else ""
        print(
            f"[{name}] epoch {event.epoch}/{event.epochs} step {event.step} loss {event.train.total:.5f} "
            f"{val} {event.samples_per_second:.1f} patches/s",
            flush=True,
        )


def _load() -> dict:
    if OUT_JSON.exists():
        return json.loads(OUT_JSON.read_text())
    return {"rows": {}}


def _write(doc: dict) -> None:
    from napari_addunet.engine.atomic import atomic_write_text

    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT_JSON, json.dumps(doc, indent=2) + "\n")
    atomic_write_text(OUT_MD, markdown(doc))


def markdown(doc: dict) -> str:
    rows = [doc["rows"][n] for n in CANDIDATES if n in doc["rows"]]
    meta = doc.get("setup", {})
    lines = [
        "# Choosing the bundled denoiser's configuration",
        "",
        "Generated by `python benchmarks/select_config.py <Train400>`; do not edit by hand.",
        "",
        f"Same budget for every candidate: {meta.get('steps')} steps of {meta.get('batch_size')} patches of "
        f"{meta.get('patch_size')}x{meta.get('patch_size')}, blind Gaussian noise sigma in [0, 55], AdamW, "
        f"peak lr {meta.get('lr')}, cosine schedule, seed {meta.get('seed')}; trained on the 380 Train400 "
        "images whose sorted index is not a multiple of 20. Scores: the last weights on the 20 held-out "
        "Train400 images (index 0, 20, ...), with the published tables' protocol (noise seeded with "
        "numpy seed 0 per image, noisy input not clipped, output rounded to uint8). "
        "No test image (BSD68, Set12) was read.",
        "",
        f"Machine: {meta.get('machine', '?')}; train seconds are wall time on shared cores (noisy).",
        "",
        "| candidate | params | MACs/px | RF | PSNR 15 | PSNR 25 | PSNR 50 | SSIM 25 | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p, s = r["val_psnr"], r["val_ssim"]
        lines.append(
            f"| {r['name']}: {r['description']} | {r['parameters']:,} | {r['macs_per_pixel']:,} | "
            f"{r['receptive_field']} | {p['15']:.2f} | {p['25']:.2f} | {p['50']:.2f} | {s['25']:.4f} | "
            f"{r['train_seconds']:.0f} |"
        )
    if rows:
        r = rows[0]
        ip = r["val_input_psnr"]
        lines += ["", f"Noisy input PSNR: {ip['15']:.2f} / {ip['25']:.2f} / {ip['50']:.2f} dB."]
    if doc.get("decision"):
        lines += ["", "## Decision", "", doc["decision"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train400", type=Path)
    p.add_argument("--only", nargs="+", choices=list(CANDIDATES))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--redo", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_files, val_files = split_train400(args.train400)
    setup = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "lr": args.lr,
        "seed": args.seed,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
    }
    budget = {k: v for k, v in setup.items() if k != "machine"}
    for name in args.only or list(CANDIDATES):
        doc = _load()
        before = {k: v for k, v in (doc.get("setup") or {}).items() if k != "machine"}
        others = [n for n in doc["rows"] if n not in (args.only or list(CANDIDATES))]
        if before and before != budget and (others or not args.redo):
            # one table, one budget: a row of another budget would be compared as if alike
            raise SystemExit(
                f"the JSON file holds results of another budget ({before}); give that budget, or "
                "--redo without --only to measure every candidate again"
            )
        if name in doc["rows"] and not args.redo:
            print(f"{name}: already measured, skipped")
            continue
        row = run_candidate(name, args, train_files, val_files)
        doc = _load()  # another process may have added rows meanwhile
        doc["setup"] = setup
        doc["rows"][name] = row
        doc["date"] = datetime.date.today().isoformat()
        _write(doc)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
