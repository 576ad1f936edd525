"""CPU time per megapixel of the bundled denoiser against DnCNN, side by side in one process.

Run by hand (not in CI), from the repository root:

    python benchmarks/cpu_time.py                # 7 interleaved rounds, 512 x 512, 1 thread
    python benchmarks/cpu_time.py --side 1024 --rounds 5 --out-stem cpu-time-1024   # larger images
    python benchmarks/cpu_time.py --candidate M.safetensors --side 1024   # a model to bundle? (prints only)

The models are timed in turns (round 1: every model once, round 2: again, ...), so that the
load of a shared machine falls on all of them alike; the result is the median per model and
its ratio to DnCNN. The weights do not change the time of a forward pass: DnCNN and U-Net
are built at their default sizes. The bundled model is timed twice: one plain forward pass,
and the engine's self-ensemble of 2 (the image and its mirror, two passes and their mean).
Every model runs in the memory layout the engine gives it on the CPU (channels-last where
torch has oneDNN); the ratios to DnCNN compare those times. Each model is also timed in the
default (contiguous) layout in the same rounds, to show what the layout changes.
Writes ``docs/benchmarks/cpu-time.json`` and ``.md`` (``<stem>.json`` and ``.md`` with ``--out-stem``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "benchmarks" / "cpu-time.json"
OUT_MD = ROOT / "docs" / "benchmarks" / "cpu-time.md"


BUNDLED_ROW = "addunet-gray-blind (bundled)"
DNCNN_ROW = "dncnn (17 layers, 64 channels)"
BUNDLED_X2_ROW = "addunet-gray-blind, self-ensemble of 2 (2 passes)"


def models() -> dict[str, tuple[torch.nn.Module, int]]:
    """The timed rows: a model and its self-ensemble size (1: one plain forward pass)."""
    import napari_addunet as na

    bundled = na.load_model("addunet-gray-blind")
    return {
        BUNDLED_ROW: (bundled, 1),
        BUNDLED_X2_ROW: (bundled, 2),
        DNCNN_ROW: (na.create_model("dncnn"), 1),
        "unet (default)": (na.create_model("unet"), 1),
        "addunet default (constant resolution, C=32, 9-7-5-3-1)": (na.create_model("addunet"), 1),
    }


def forward(net: torch.nn.Module, ensemble: int, x: torch.Tensor) -> torch.Tensor:
    """One timed call: a forward pass, or the engine's self-ensemble of ``ensemble`` passes."""
    from napari_addunet.engine.ensemble import ensemble_mean

    return ensemble_mean(lambda v: net(v).denoised, x, ensemble)


def main(argv: list[str] | None = None) -> None:
    import napari_addunet as na

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=512)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--out-stem",
        default="cpu-time",
        help="write docs/benchmarks/<stem>.json and .md (default cpu-time; e.g. cpu-time-1024 for "
        "a run at another --side, so both stay on record)",
    )
    p.add_argument(
        "--candidate",
        type=Path,
        action="append",
        default=[],
        help="also time this model file (plain and self-ensemble of 2), to decide whether to bundle it; "
        "the result is printed and the docs are not written",
    )
    args = p.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", args.out_stem):
        p.error(f"--out-stem: use letters, digits, '-' and '_' only, not {args.out_stem!r}")
    for path in args.candidate:
        if not path.is_file():
            p.error(f"--candidate: no such model file: {path}")
    torch.set_num_threads(args.threads)
    from napari_addunet.engine.devices import use_fast_layout

    nets, plain = {}, {}
    layout = "contiguous (the default)"
    rows_to_time = models()
    for path in args.candidate:
        candidate = na.load_model(path)
        rows_to_time[f"candidate {path.stem}"] = (candidate, 1)
        rows_to_time[f"candidate {path.stem}, self-ensemble of 2 (2 passes)"] = (candidate, 2)
    for name, (model, n) in rows_to_time.items():
        # a copy in the default layout (rows may share a model that is already converted)
        plain[name] = (copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval(), n)
        if use_fast_layout(model, torch.device("cpu")):
            layout = "channels-last (the engine's on this CPU)"
        nets[name] = (model.eval(), n)
    x = torch.rand(1, 1, args.side, args.side, generator=torch.Generator().manual_seed(0))
    mp = args.side * args.side / 1e6
    jobs = {(name, "engine"): job for name, job in nets.items()}
    jobs.update({(name, "default"): job for name, job in plain.items()})
    times: dict[tuple[str, str], list[float]] = {k: [] for k in jobs}
    load = [os.getloadavg()[0]]
    with torch.no_grad():
        for net, n in jobs.values():  # warm-up
            forward(net, n, x)
        for _ in range(args.rounds):
            for key, (net, n) in jobs.items():
                t = time.perf_counter()
                forward(net, n, x)
                times[key].append((time.perf_counter() - t) / mp)
    load.append(os.getloadavg()[0])
    ref = statistics.median(times[DNCNN_ROW, "engine"])
    rows = []
    for name, (net, n) in nets.items():
        engine, default = statistics.median(times[name, "engine"]), statistics.median(times[name, "default"])
        rows.append(
            {
                "model": name,
                "parameters": int(sum(q.numel() for q in net.parameters())),
                "macs_per_pixel": int(na.macs_per_pixel(net)) * n,
                "ensemble": n,
                "seconds_per_mp": round(engine, 3),
                "all_seconds_per_mp": [round(t, 3) for t in times[name, "engine"]],
                "ratio_to_dncnn": round(engine / ref, 3),
                "default_layout_seconds_per_mp": round(default, 3),
                "default_layout_ratio_to_dncnn": round(
                    default / statistics.median(times[DNCNN_ROW, "default"]), 3
                ),
            }
        )
    doc = {
        "command": f"python benchmarks/cpu_time.py --side {args.side} --rounds {args.rounds} --threads {args.threads}"
        + ("" if args.out_stem == "cpu-time" else f" --out-stem {args.out_stem}"),
        "date": datetime.date.today().isoformat(),
        "stem": args.out_stem,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "load_average": [round(v, 2) for v in load],
        "input": f"1 x 1 x {args.side} x {args.side} float32, torch.no_grad(), {args.threads} thread(s)",
        "layout": layout,
        "rows": rows,
    }
    lines = [
        "# CPU time per megapixel, side by side",
        "",
        f"Generated by `{doc['command']}`; do not edit by hand.",
        "",
        f"Input {doc['input']}; the models run in turns, {args.rounds} rounds after one warm-up, "
        f"and each row is the median. Machine: {doc['machine']}; load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after (shared cores: compare the ratios, which were measured together).",
        "",
        f"Memory layout of the weights: {layout}; the ratios to DnCNN compare these times. The last "
        "two columns time the same models in the default layout in the same rounds.",
        "",
        "Without gradients, AddUNet and DnCNN both compute tall inputs in bands of rows "
        "(`models/banded.py`; the same values as one whole-map pass, with a working set that stays "
        "in the CPU's caches), so each runs at its fastest here; the MACs count the whole-map pass.",
        "",
        "| model | params | MACs/px | CPU s/MP | ratio to DnCNN | default layout s/MP | its ratio to DnCNN |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['macs_per_pixel']:,} | {r['seconds_per_mp']:.2f} | "
            f"{r['ratio_to_dncnn']:.2f} | {r['default_layout_seconds_per_mp']:.2f} | "
            f"{r['default_layout_ratio_to_dncnn']:.2f} |"
        )
    from napari_addunet.engine.atomic import atomic_write_text

    print("\n".join(lines))
    if args.candidate:
        print("(candidates timed: the docs were not written)")
        return
    atomic_write_text(OUT_JSON.with_name(f"{args.out_stem}.json"), json.dumps(doc, indent=2) + "\n")
    atomic_write_text(OUT_MD.with_name(f"{args.out_stem}.md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
