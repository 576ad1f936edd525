"""Training on clean 16-bit images with synthetic noise: which percentiles map the pairs.

Run by hand (not in CI), from the repository root::

    python benchmarks/percentile_noise.py                 # 2 noise settings x 2 mappings x 2 seeds
    python benchmarks/percentile_noise.py --seeds 0 --steps 400   # a quicker look
    python benchmarks/percentile_noise.py --render                # the .md again from the JSON

With percentile normalisation (the default for images that are not 8-bit), inference maps a
noisy image by its own percentiles, which the noise pushes apart. Training maps each noisy
patch and its clean target by the percentiles its noisy image would have
(``noisy-percentiles``, the package's behaviour); the ablation ``clean-percentiles`` maps
them by the clean image's, as the package did before (the mapping switched off).

Every run trains the same tiny AddUNet (width 16, kernels 3-3-3-3) with the same budget on
six scikit-image pictures stretched to 100..3000 counts (uint16): moon, the astronaut's green
channel, brick, grass, gravel and the cat's green channel. It is scored on three others
(camera, coins, page), stretched the same way, with Gaussian noise of ``sigma/255`` of each
clean image's 0.1..99.9 percentile range (numpy seed 0 per image), denoised through
``napari_addunet.denoise`` (percentile normalisation of the noisy image). PSNR is on that
clean range. Noise settings: ``fixed-25`` (trained and scored at sigma 25) and ``blind-0-55``
(trained on sigma 0..55, scored at 15, 25 and 50).

Writes ``docs/benchmarks/percentile-noise.json`` and ``.md``.
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

import numpy as np
import torch
from skimage import data as skdata

import napari_addunet as na
from napari_addunet.engine import training as training_module
from napari_addunet.engine.datasets import clean_data

OUT = Path("docs/benchmarks")
SETTINGS = {"fixed-25": ((25.0, 25.0), (25,)), "blind-0-55": ((0.0, 55.0), (15, 25, 50))}
MAPPINGS = ("noisy-percentiles", "clean-percentiles")


def counts(img: np.ndarray) -> np.ndarray:
    a = img.astype(np.float64)
    return (100 + (a - a.min()) / (a.max() - a.min()) * 2900).astype(np.uint16)


def training_images() -> list[np.ndarray]:
    pics = [
        skdata.moon(),
        skdata.astronaut()[..., 1],
        skdata.brick(),
        skdata.grass(),
        skdata.gravel(),
        skdata.chelsea()[..., 1],
    ]
    return [counts(p) for p in pics]


def test_images() -> dict[str, np.ndarray]:
    return {"camera": counts(skdata.camera()), "coins": counts(skdata.coins()), "page": counts(skdata.page())}


def train_one(setting: str, mapping: str, seed: int, steps: int) -> tuple[na.models.DenoiserModel, float]:
    (lo, hi), _ = SETTINGS[setting]
    original = training_module._Run._noisy_percentiles
    if mapping == "clean-percentiles":
        training_module._Run._noisy_percentiles = lambda self, data: None
    try:
        torch.manual_seed(seed)
        model = na.create_model("addunet", width=16, kernels=(3, 3, 3, 3))
        cfg = dict(
            sigma_min=lo,
            sigma_max=hi,
            batch_size=16,
            patch_size=48,
            epochs=1,
            steps_per_epoch=steps,
            lr=2e-3,
            val_fraction=0,
            seed=seed,
            device="cpu",
        )
        t0 = time.perf_counter()
        result = na.train(clean_data(training_images()), model, cfg)
        return result.model, time.perf_counter() - t0
    finally:
        training_module._Run._noisy_percentiles = original


def score(model: na.models.DenoiserModel, sigma: float) -> dict[str, float]:
    out = {}
    for name, clean in test_images().items():
        lo, hi = np.percentile(clean, [0.1, 99.9])
        rng = np.random.default_rng(0)
        noisy = clean + sigma / 255 * (hi - lo) * rng.standard_normal(clean.shape)
        den = na.denoise(model, noisy.astype(np.float32), device="cpu")
        mse = float(np.mean(((den - clean) / (hi - lo)) ** 2))
        out[name] = round(10 * np.log10(1 / mse), 3)
    return out


def table(runs: list[dict[str, Any]], input_psnr: dict[str, float]) -> list[dict[str, Any]]:
    """Mean PSNR over test images and seeds, per training noise, scored sigma and mapping."""
    rows = []
    for setting, (_, sigmas) in SETTINGS.items():
        for sigma in sigmas:
            row: dict[str, Any] = {"setting": setting, "sigma": sigma, "input": input_psnr[str(sigma)]}
            for mapping in MAPPINGS:
                mine = [r for r in runs if r["setting"] == setting and r["mapping"] == mapping]
                row[mapping] = round(
                    float(np.mean([np.mean(list(r["psnr"][str(sigma)].values())) for r in mine])), 3
                )
            row["difference"] = round(row["noisy-percentiles"] - row["clean-percentiles"], 3)
            rows.append(row)
    return rows


def render(results: dict[str, Any]) -> str:
    seconds = {m: np.mean([r["seconds"] for r in results["runs"] if r["mapping"] == m]) for m in MAPPINGS}
    lines = [
        "# Percentiles and synthetic noise",
        "",
        "Made by `python benchmarks/percentile_noise.py` "
        f"({results['steps']} steps, seeds {', '.join(map(str, results['seeds']))}; "
        f"{results['date']}, {results['machine']}). PSNR (dB) on the clean image's 0.1..99.9 "
        "percentile range, mean of camera, coins and page (16-bit, 100..3000 counts), mean over "
        "seeds. `noisy-percentiles`: training maps each pair by its noisy image's percentiles "
        "(the package); `clean-percentiles`: by the clean image's (the mapping switched off).",
        "",
        "| training noise | scored at sigma | noisy input | clean-percentiles | noisy-percentiles | difference |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["table"]:
        lines.append(
            f"| {row['setting']} | {row['sigma']} | {row['input']:.2f} | {row['clean-percentiles']:.2f} | "
            f"{row['noisy-percentiles']:.2f} | {row['difference']:+.2f} |"
        )
    lines += [
        "",
        "Per test image (mean over seeds), noisy-percentiles minus clean-percentiles:",
        "",
        "| training noise | scored at sigma | " + " | ".join(test_images()) + " |",
        "|---|---|" + "---|" * len(test_images()),
    ]
    for setting, (_, sigmas) in SETTINGS.items():
        for sigma in sigmas:
            cells = []
            for image in test_images():
                mean = {
                    m: np.mean(
                        [
                            r["psnr"][str(sigma)][image]
                            for r in results["runs"]
                            if r["setting"] == setting and r["mapping"] == m
                        ]
                    )
                    for m in MAPPINGS
                }
                cells.append(f"{mean['noisy-percentiles'] - mean['clean-percentiles']:+.2f}")
            lines.append(f"| {setting} | {sigma} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Training time per run (mean, same machine, other work beside): {seconds['clean-percentiles']:.0f} s "
        f"with clean percentiles, {seconds['noisy-percentiles']:.0f} s with noisy ones.",
        "",
        "Per image and seed: `percentile-noise.json`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--render", action="store_true", help="measure nothing; rewrite the .md from the JSON"
    )
    args = parser.parse_args()
    if args.render:
        results = json.loads((OUT / "percentile-noise.json").read_text())
        results["table"] = table(results["runs"], results["input_psnr"])
        write(results)
        return
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for setting, (_, sigmas) in SETTINGS.items():
        for mapping in MAPPINGS:
            for seed in seeds:
                model, seconds = train_one(setting, mapping, seed, args.steps)
                psnr = {str(s): score(model, s) for s in sigmas}
                runs.append(
                    {
                        "setting": setting,
                        "mapping": mapping,
                        "seed": seed,
                        "seconds": round(seconds, 1),
                        "psnr": psnr,
                    }
                )
                print(setting, mapping, seed, psnr, flush=True)
    input_psnr = {}
    for sigma in sorted({s for _, sig in SETTINGS.values() for s in sig}):
        # the noise is sigma/255 of the range: about 20*log10(255/sigma), measured on the same draws
        vals = []
        for clean in test_images().values():
            noise = sigma / 255 * np.random.default_rng(0).standard_normal(clean.shape)
            vals.append(10 * np.log10(1 / float(np.mean(noise**2))))
        input_psnr[str(sigma)] = round(float(np.mean(vals)), 3)
    results = {
        "steps": args.steps,
        "seeds": seeds,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads",
        "input_psnr": input_psnr,
        "table": table(runs, input_psnr),
        "runs": runs,
    }
    write(results)


def write(results: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for path, text in (
        (OUT / "percentile-noise.json", json.dumps(results, indent=1) + "\n"),
        (OUT / "percentile-noise.md", render(results)),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    print(render(results))


if __name__ == "__main__":
    main()
