"""Score trained denoisers on the held-out Train400 split, to choose which one to bundle.

Usage, from the repository root, with ``TRAIN400`` the DnCNN training folder::

    python scripts/compare_on_split.py TRAIN400 MODEL.safetensors [MODEL.safetensors ...]
    python scripts/compare_on_split.py TRAIN400 MODEL.safetensors --ensemble 1 8   # with and without

Each model is scored with the published tables' protocol (``napari_addunet.evaluate``) on the
20 held-out images of ``benchmarks/select_config.py`` (every 20th image, sorted by name) at
sigma 15, 25 and 50; the test sets are not read. Prints a markdown table, best first by the
mean over the three sigmas.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

import napari_addunet as na
from napari_addunet.engine.ensemble import ENSEMBLE_SIZES

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = (15.0, 25.0, 50.0)


def _split(train400: Path) -> list[Path]:
    spec = importlib.util.spec_from_file_location("select_config", ROOT / "benchmarks" / "select_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.split_train400(train400)[1]


def score(model_file: Path, val_files: list[Path], ensemble: int = 1) -> dict:
    """Held-out mean PSNR per sigma of one model file, with its training step count."""
    model = na.load_model(model_file).eval()
    report = na.evaluate(model, [str(f) for f in val_files], SIGMAS, device="cpu", ensemble=ensemble)
    training = model.metadata.get("training", {})
    return {
        "model": model_file.name + (f" (self-ensemble of {ensemble})" if ensemble > 1 else ""),
        "step": training.get("metrics", {}).get("step", training.get("steps")),
        "command": training.get("command", ""),
        "psnr": [report.mean(s)["psnr"] for s in SIGMAS],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train400", type=Path)
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--ensemble",
        type=int,
        nargs="+",
        default=[1],
        choices=list(ENSEMBLE_SIZES),
        help="self-ensemble sizes to score each model with (default: 1, off)",
    )
    args = ap.parse_args(argv)
    missing = [str(m) for m in args.models if not m.is_file()]
    if missing:
        ap.error("no such model file: " + ", ".join(missing))
    torch.set_num_threads(args.threads)
    val_files = _split(args.train400)
    scores = (score(m, val_files, n) for m in args.models for n in args.ensemble)
    rows = sorted(scores, key=lambda r: -sum(r["psnr"]))
    print("| model | step | " + " | ".join(f"sigma {s:g}" for s in SIGMAS) + " | mean |")
    print("|---|---:|" + "---:|" * (len(SIGMAS) + 1))
    for r in rows:
        cells = " | ".join(f"{p:.3f}" for p in r["psnr"])
        print(f"| {r['model']} | {r['step']} | {cells} | {sum(r['psnr']) / len(SIGMAS):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
