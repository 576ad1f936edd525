"""Real activation memory per pixel of a forward pass on the CPU, against the tile estimate.

Run by hand (not in CI), from the repository root:

    python benchmarks/activation_memory.py            # bundled + default AddUNet, 512/768/1024

Default CPU tiles are sized by :func:`napari_addunet.engine.tiling.estimate_bytes_per_pixel`
(the peak of live tensor bytes in a small probe pass). This measures what a forward pass really
adds to the process: each (model, layout, side) runs in a fresh process, which warms the model
up on a 64 x 64 input, reads the kernel's resident-set high-water mark (``VmHWM``), runs one
``side`` x ``side`` forward pass (1 thread, no gradients) and reads it again. The growth divided
by the pixels is the row's bytes per pixel; the largest side gives the ratio to the estimate.
Read from ``VmHWM`` on Linux. Writes ``docs/benchmarks/activation-memory.json`` and ``.md``.

A last table runs the bundled model and DnCNN (17 layers, 64 channels) in the engine's layout
with their no-gradient bands of rows on and off (``models/banded.py``; off sets ``BAND_ROWS``
beyond any image): the memory of each, and the CPU seconds of a second pass of the same size
in the same process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "benchmarks" / "activation-memory.json"
OUT_MD = ROOT / "docs" / "benchmarks" / "activation-memory.md"
MODELS = {
    "addunet-gray-blind (bundled)": "addunet-gray-blind",
    "addunet default (constant resolution)": "default-addunet",
}
LAYOUTS = ("engine", "default")
#: The models of the bands on / off table.
BANDED = {
    "addunet-gray-blind (bundled)": "addunet-gray-blind",
    "dncnn (17 layers, 64 channels)": "default-dncnn",
}


def _high_water_mark() -> int:
    """Peak resident set in bytes, read as ``benchmarks/inference.py`` reads it."""
    from inference import peak_rss_kb

    return peak_rss_kb() * 1024


def _build(model_name: str):
    import napari_addunet as na

    if model_name == "default-addunet":
        return na.create_model("addunet").eval()
    if model_name == "default-dncnn":
        return na.create_model("dncnn").eval()
    return na.load_model(model_name)


def child(model_name: str, layout: str, side: int, bands: str = "on") -> dict:
    """One measurement in this (fresh) process; returns bytes and the tile estimate."""
    import time

    import torch

    from napari_addunet.engine.devices import use_fast_layout
    from napari_addunet.engine.tiling import estimate_bytes_per_pixel
    from napari_addunet.models import addunet, dncnn

    torch.set_num_threads(1)
    if bands == "off":
        addunet.BAND_ROWS = dncnn.BAND_ROWS = 1 << 30
    model = _build(model_name)
    estimate = estimate_bytes_per_pixel(model)
    if layout == "engine":
        use_fast_layout(model, torch.device("cpu"))
    with torch.no_grad():
        model(torch.rand(1, 1, 64, 64))
        before = _high_water_mark()
        out = model(torch.rand(1, 1, side, side)).denoised
        after = _high_water_mark()
        start = time.process_time()
        model(torch.rand(1, 1, side, side))
        cpu_s = time.process_time() - start
    assert out.shape[-1] == side
    return {
        "before": before,
        "after": after,
        "bytes_per_pixel": (after - before) / side**2,
        "estimate": estimate,
        "cpu_s": cpu_s,
    }


def measure(model_name: str, layout: str, side: int, bands: str = "on") -> dict:
    cmd = [sys.executable, __file__, "--child", model_name, layout, str(side), bands]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", type=int, nargs="+", default=[512, 768, 1024])
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of the bands on / off pair")
    ap.add_argument("--child", nargs=4, metavar=("MODEL", "LAYOUT", "SIDE", "BANDS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]), args.child[3])))
        return
    from napari_addunet.engine.atomic import atomic_write_text
    from napari_addunet.engine.tiling import CPU_TILE_BUDGET

    rows = []
    for label, name in MODELS.items():
        for layout in LAYOUTS:
            runs = {side: measure(name, layout, side) for side in args.sides}
            largest = runs[max(args.sides)]
            rows.append(
                {
                    "model": label,
                    "layout": layout,
                    "bytes_per_pixel": {str(s): round(r["bytes_per_pixel"], 1) for s, r in runs.items()},
                    "estimate": largest["estimate"],
                    "ratio_to_estimate": round(largest["bytes_per_pixel"] / largest["estimate"], 3),
                }
            )
            print(rows[-1], flush=True)
    side = max(args.sides)
    banded = {}
    for label, name in BANDED.items():
        pair: dict[str, list[dict]] = {"on": [], "off": []}
        for _ in range(args.rounds):  # alternating, so that a change of machine load hits both
            for bands in pair:
                pair[bands].append(measure(name, "engine", side, bands))
        best = {
            bands: {
                "bytes_per_pixel": round(min(r["bytes_per_pixel"] for r in runs), 1),
                "cpu_s": round(min(r["cpu_s"] for r in runs), 3),
            }
            for bands, runs in pair.items()
        }
        best["cpu_ratio_on_off"] = round(best["on"]["cpu_s"] / best["off"]["cpu_s"], 3)
        banded[label] = best
        print(label, best, flush=True)
    doc = {
        "command": "python benchmarks/activation_memory.py" + ("" if argv is None else " " + " ".join(argv)),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "cpu_tile_budget_mib": CPU_TILE_BUDGET / 2**20,
        "rows": rows,
        "bands_side": side,
        "bands": banded,
    }
    sides = " | ".join(f"{s} px" for s in args.sides)
    lines = [
        "# Activation memory per pixel (CPU)",
        "",
        "Generated by `benchmarks/activation_memory.py`; numbers are measured, not typed in.",
        "",
        f"Command: `{doc['command']}` ({doc['date']}; {doc['machine']}).",
        "",
        "Growth of the resident-set high-water mark over one forward pass of a side x side image,",
        "per input pixel, each in a fresh process (1 thread, no gradients, after a 64 x 64 warm-up).",
        "'engine' is the layout the engine uses on this CPU (channels-last where torch has oneDNN),",
        "'default' the contiguous layout. The estimate is `engine.tiling.estimate_bytes_per_pixel`,",
        "which sizes the default CPU tiles (`engine.tiling.CPU_TILE_BUDGET`: "
        f"{doc['cpu_tile_budget_mib']:.0f} MiB of estimated activations per tile at the time of this run).",
        "",
        f"| model | layout | {sides} | estimate | measured / estimate |",
        "|---|---|" + "---:|" * len(args.sides) + "---:|---:|",
    ]
    for row in rows:
        cells = " | ".join(f"{row['bytes_per_pixel'][str(s)]:.0f}" for s in args.sides)
        lines.append(
            f"| {row['model']} | {row['layout']} | {cells} | {row['estimate']:.0f} | {row['ratio_to_estimate']:.2f} |"
        )
    lines += [
        "",
        f"Bands of rows (`models/banded.py`) on and off, engine layout, {side} x {side}, best of "
        f"{args.rounds} alternating fresh processes each; CPU seconds of one pass (1 thread):",
        "",
        "| model | B/px on | B/px off | CPU s on | CPU s off | CPU on / off |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, best in banded.items():
        lines.append(
            f"| {label} | {best['on']['bytes_per_pixel']:.0f} | {best['off']['bytes_per_pixel']:.0f} | "
            f"{best['on']['cpu_s']:.2f} | {best['off']['cpu_s']:.2f} | {best['cpu_ratio_on_off']:.3f} |"
        )
    atomic_write_text(OUT_JSON, json.dumps(doc, indent=2) + "\n")
    atomic_write_text(OUT_MD, "\n".join(lines) + "\n")
    print(f"wrote {OUT_MD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
