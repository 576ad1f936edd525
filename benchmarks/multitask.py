"""Joint denoising and classification on Fashion-MNIST: accuracy, PSNR and gates against lambda.

Run by hand (not in CI), from the repository root::

    python benchmarks/multitask.py            # 12 runs; writes docs/benchmarks/multitask.{json,md}
                                              # and docs/images/multitask-gates.png
    python benchmarks/multitask.py --quick    # a few steps per run, to check that it works;
                                              # writes runs/multitask-quick/ (not tracked)

Needs Fashion-MNIST (Debian/Ubuntu package ``dataset-fashion-mnist``, or ``--folder``).

For each noise level sigma (25 and 50 on ``[0, 255]``, fixed within a run) it trains, through
the package's training loop (``napari_addunet.train``), with Gaussian noise added on the fly:

* a joint AddUNet (denoising + classification head on the bottleneck) at
  ``lambda in {0, 0.1, 1, 10}`` (``L = L_den + lambda L_cls``);
* a classification-only AddUNet of the same size (``denoise_weight=0``, ``lambda=1``);
* a classic U-Net with the same classification head, at ``lambda=1``.

Each trained model (the epoch with the lowest validation loss) is scored on the Fashion-MNIST
test set: accuracy of the class read from the noisy input, and PSNR/SSIM of the denoised
image (seeded noise, the same for every model). Results are cached per run in the JSON file,
keyed by the run's settings: a rerun only trains the runs that are missing or whose settings
changed, and an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = (25.0, 50.0)
LAMBDAS = (0.0, 0.1, 1.0, 10.0)

# AddUNet sized for 28 x 28 images and a CPU budget: 4 levels with stride-2 down-sampling
# (28 -> padded 32 -> 16 -> 8 -> 4). In a 300-step trial it classified far better than the
# constant-resolution model of the same width and kernels, whose residual encoder is linear
# after the stem (see TRIAL).
ADDUNET = {"width": 32, "kernels": (5, 3, 3, 1), "multiscale": True}
LR = 2e-3
TRIAL = (
    "Choice of size (one 300-step run each, sigma 25, lambda 1, batch 64, validated on the 1,000 "
    "held-out training images, 1 thread): constant resolution, lr 1e-3: accuracy 0.478, 22.79 dB, "
    "75 s; the same with a plain encoder: 0.408, 20.90 dB, 70 s; with two convolutions per level: "
    "0.576, 20.32 dB, 131 s; multiscale, lr 1e-3: 0.717, 24.18 dB, 60 s; multiscale, lr 2e-3: "
    "0.767, 24.12 dB, 74 s (the one used)."
)
# Classic U-Net of a similar parameter count: 16-32-64 channels, 28 -> 14 -> 7 pixels.
UNET = {"base_width": 16, "depth": 2}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much data and how many steps each run gets."""

    train_images: int  # first N of the 60,000 training images (minus the validation block)
    val_images: int  # the last N training images: model selection after each epoch
    test_images: int  # first N of the 10,000 test images
    epochs: int
    steps_per_epoch: int
    batch_size: int

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


FULL = Budget(
    train_images=59_000, val_images=1_000, test_images=10_000, epochs=5, steps_per_epoch=200, batch_size=64
)
QUICK = Budget(
    train_images=2_000, val_images=200, test_images=500, epochs=2, steps_per_epoch=10, batch_size=16
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the benchmark."""

    sigma: float
    name: str  # "addunet", "addunet-classify" or "unet"
    lam: float
    denoise_weight: float = 1.0

    @property
    def key(self) -> str:
        return f"sigma{self.sigma:g}/{self.name}/lambda{self.lam:g}"

    @property
    def architecture(self) -> str:
        return "unet" if self.name == "unet" else "addunet"

    @property
    def settings(self) -> dict[str, Any]:
        return dict(UNET if self.name == "unet" else ADDUNET)

    def training_config(self, budget: Budget, seed: int) -> dict[str, Any]:
        return {
            "epochs": budget.epochs,
            "steps_per_epoch": budget.steps_per_epoch,
            "batch_size": budget.batch_size,
            "patch_size": 28,
            "lr": LR,
            "warmup_steps": min(100, budget.steps // 10),
            "augment": False,  # rotations would change what some classes look like
            "lambda_cls": self.lam,
            "denoise_weight": self.denoise_weight,
            "sigma_min": self.sigma,
            "sigma_max": self.sigma,
            "val_patches": budget.val_images,
            "seed": seed,
            "device": "cpu",
        }


def plan(sigmas: tuple[float, ...] = SIGMAS) -> list[Run]:
    """The runs, in the order they are trained."""
    runs = []
    for s in sigmas:
        runs += [Run(s, "addunet", lam) for lam in LAMBDAS]
        runs.append(Run(s, "addunet-classify", 1.0, denoise_weight=0.0))
        runs.append(Run(s, "unet", 1.0))
    return runs


# -- one run ----------------------------------------------------------------------------------------
def fingerprint(run: Run, budget: Budget, seed: int) -> dict[str, Any]:
    """Everything a cached result depends on; a change retrains the run."""
    return {
        "architecture": run.architecture,
        "model_settings": {k: list(v) if isinstance(v, tuple) else v for k, v in run.settings.items()},
        "training": run.training_config(budget, seed),
        "budget": dataclasses.asdict(budget),
        "test_noise_seed": seed,
    }


def train_and_score(run: Run, data: dict[str, Any], budget: Budget, seed: int) -> dict[str, Any]:
    """Train one run and score its best model on the test images."""
    import napari_addunet as na
    from napari_addunet.engine.fashion_mnist import evaluate_noisy

    t0 = time.perf_counter()
    result = na.train(
        data["train"],
        run.architecture,
        run.training_config(budget, seed),
        validation=data["val"],
        model_settings=run.settings,
    )
    train_seconds = time.perf_counter() - t0
    model = result.model
    scores = evaluate_noisy(model, data["test_images"], data["test_labels"], run.sigma, seed=seed)
    gates = list(model.gates) if hasattr(model, "gates") else None
    best = result.best
    return {
        "sigma": run.sigma,
        "model": run.name,
        "architecture": run.architecture,
        "lambda": run.lam,
        "denoise_weight": run.denoise_weight,
        "parameters": model.num_parameters(),
        "accuracy": scores.accuracy,
        "psnr": scores.psnr,
        "ssim": scores.ssim,
        "input_psnr": scores.input_psnr,
        "input_ssim": scores.input_ssim,
        "test_images": scores.images,
        "gates": gates,
        "best_epoch": best.epoch if best else None,
        "val_accuracy": best.accuracy if best else None,
        "val_psnr": best.psnr if best else None,
        "steps": result.step,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(scores.seconds, 1),
        "history": [
            {
                k: h[k]
                for k in ("epoch", "train_denoise", "train_classify", "val_psnr", "val_accuracy", "gates")
            }
            for h in result.history
        ],
    }


# -- results file -----------------------------------------------------------------------------------
def load_results(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"runs": {}}
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path.name} is not valid JSON ({exc}); move it away to start afresh") from exc
    out.setdefault("runs", {})
    return out


def environment(threads: int) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads,
    }


# -- report -----------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _trend(values: list[float], tol: float) -> str:
    """'rises', 'falls', 'flat' (all within tol) or 'mixed' along increasing lambda."""
    if max(values) - min(values) <= tol:
        return "flat"
    steps = np.diff(values)
    if np.all(steps >= -tol) and values[-1] - values[0] > tol:
        return "rises"
    if np.all(steps <= tol) and values[0] - values[-1] > tol:
        return "falls"
    return "mixed"


def _se(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` test images."""
    return math.sqrt(max(accuracy * (1.0 - accuracy), 1e-12) / n)


def _signed(values: list[float], spec: str) -> str:
    return ", ".join(format(v, "+" + spec) for v in values)


def findings(runs: dict[str, dict[str, Any]], sigmas: tuple[float, ...]) -> list[str]:
    """Statements computed from the numbers (no claim without its numbers)."""
    out: list[str] = []
    gate_tol = 0.02
    patterns = []
    for s in sigmas:
        joint = [runs.get(Run(s, "addunet", lam).key) for lam in LAMBDAS]
        if any(r is None for r in joint):
            out.append(f"sigma {s:g}: not all joint runs are done; no conclusions drawn.")
            continue
        acc = [r["accuracy"] for r in joint]
        psnr = [r["psnr"] for r in joint]
        n = joint[0]["test_images"]
        se = _se(float(np.mean(acc[1:])), n)
        lam_txt = ", ".join(f"{lam:g}" for lam in LAMBDAS)
        out.append(
            f"**sigma {s:g}, joint AddUNet, lambda = {lam_txt}:** test accuracy "
            + " / ".join(f"{a:.3f}" for a in acc)
            + ", PSNR "
            + " / ".join(f"{p:.2f}" for p in psnr)
            + f" dB (noisy input {joint[0]['input_psnr']:.2f} dB). Lambda 0 trains no classifier (its "
            + "accuracy is that of the untrained head). From lambda 0.1 to 10 the PSNR changes by "
            + f"{psnr[-1] - psnr[1]:+.2f} dB ({_trend(psnr[1:], 0.02)}) and the accuracy by "
            + f"{acc[-1] - acc[1]:+.3f}; the test-sampling standard error of one accuracy here is "
            + f"{se:.4f} ({n:,} images), so accuracy differences below about {2.5 * se:.3f} are not "
            + "distinguishable. Adding the classification loss at lambda 0.1 changed the PSNR by "
            + f"{psnr[1] - psnr[0]:+.2f} dB against denoising alone."
        )
        depth = len(joint[0]["gates"])
        g = np.array([r["gates"] for r in joint])  # (lambdas, levels)
        trends = [_trend(list(g[:, j]), gate_tol) for j in range(depth)]
        detail = "; ".join(
            f"level {j} ({trends[j]}): " + " / ".join(f"{v:.3f}" for v in g[:, j]) for j in range(depth)
        )
        out.append(f"Gates against lambda (shallow to deep; 'flat': within {gate_tol}): {detail}.")
        out.append(
            "Change of each gate (shallow to deep) when the classification loss is switched on "
            f"(lambda 0 -> 0.1): {_signed(list(g[1] - g[0]), '.3f')}; from lambda 0.1 to 10: "
            f"{_signed(list(g[-1] - g[1]), '.3f')}. All gates stay between {g.min():.2f} and "
            f"{g.max():.2f}: no level is switched off."
        )
        shallow, deep = trends[: depth // 2], trends[depth // 2 :]
        if all(t == "rises" for t in shallow) and all(t == "falls" for t in deep):
            patterns.append((s, "shallow rise, deep fall"))
        elif all(t == "falls" for t in shallow) and all(t == "rises" for t in deep):
            patterns.append((s, "shallow fall, deep rise"))
        else:
            patterns.append((s, None))
        cls_only = runs.get(Run(s, "addunet-classify", 1.0, 0.0).key)
        unet = runs.get(Run(s, "unet", 1.0).key)
        j1 = joint[LAMBDAS.index(1.0)]
        if cls_only:
            diff = j1["accuracy"] - cls_only["accuracy"]
            same = abs(diff) < 2.5 * _se(j1["accuracy"], n)
            out.append(
                f"Classification only (same AddUNet, denoise_weight 0, lambda 1) reaches accuracy "
                f"{cls_only['accuracy']:.3f}, the joint model at lambda 1 {j1['accuracy']:.3f} ({diff:+.3f}: "
                + ("indistinguishable" if same else "joint better" if diff > 0 else "joint worse")
                + "); the joint model also denoises, at the cost of "
                + f"{(j1['train_seconds'] - cls_only['train_seconds']) / 60:.1f} more training minutes."
            )
        if unet:
            out.append(
                f"U-Net at lambda 1 ({unet['parameters']:,} parameters): accuracy {unet['accuracy']:.3f}, "
                f"{unet['psnr']:.2f} dB, {unet['train_seconds'] / 60:.1f} training minutes; AddUNet "
                f"({j1['parameters']:,}): {j1['accuracy']:.3f}, {j1['psnr']:.2f} dB, "
                f"{j1['train_seconds'] / 60:.1f} minutes (difference {j1['accuracy'] - unet['accuracy']:+.3f}, "
                f"{j1['psnr'] - unet['psnr']:+.2f} dB, at the same number of steps)."
            )
    if patterns:
        found = [f"sigma {s:g}: {p}" for s, p in patterns if p]
        if len(found) == len(patterns):
            out.append("Gate pattern along lambda: " + "; ".join(found) + ".")
        else:
            out.append(
                "Neither 'shallow gates rise and deep gates fall as lambda grows' nor the reverse holds "
                "at "
                + " and ".join(f"sigma {s:g}" for s, p in patterns if not p)
                + (" (" + "; ".join(found) + ")" if found else "")
                + ", so these runs do not support the paper's statement that shallow gates favour "
                "reconstruction and deep ones discrimination."
            )
    last = [r for r in runs.values() if r.get("best_epoch") is not None and r.get("history")]
    if last and all(r["best_epoch"] == len(r["history"]) for r in last):
        out.append(
            "Every run was still improving: its best validation epoch was its last. Longer training "
            "would raise the numbers; the comparison is at an equal, short budget."
        )
    return out


def markdown(results: dict[str, Any], budget: Budget, sigmas: tuple[float, ...], figure: str) -> str:
    runs = results["runs"]
    env = results.get("environment", {})
    done = [r for r in (runs.get(p.key) for p in plan(sigmas)) if r]
    total_min = sum(r["train_seconds"] + r["eval_seconds"] for r in done) / 60
    quick = budget == QUICK
    lines = [
        "# Joint denoising and classification on Fashion-MNIST" + (" (quick check)" if quick else ""),
        "",
        "Written by `benchmarks/multitask.py` from `multitask.json`; regenerate with:",
        "",
        "```bash",
        "python benchmarks/multitask.py" + (" --quick" if quick else ""),
        "```",
        "",
    ]
    if quick:
        lines += [
            "**Quick check: a few steps per run on a small subset. The numbers below only show that "
            "the benchmark runs; they say nothing about the models.**",
            "",
        ]
    lines += [
        "## Setup",
        "",
        "- Data: Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017; MIT licence), read from the IDX files "
        "of the Debian package `dataset-fashion-mnist`. Training: the first "
        f"{budget.train_images:,} training images; validation (model selection after each epoch, "
        f"lowest validation loss): the last {budget.val_images:,} training images; test: the first "
        f"{budget.test_images:,} test images.",
        f"- Noise: Gaussian, sigma {' and '.join(f'{s:g}' for s in sigmas)} on [0, 255], the same "
        "sigma throughout a run; added on the fly in training. Test inputs: image / 255 plus "
        "seeded noise (`numpy.random.default_rng([0, 1000 sigma])`), not clipped, the same for every "
        "model.",
        "- Scores: accuracy of the class predicted from the noisy input; PSNR (dB) and SSIM of the "
        "output clipped to [0, 1] against the clean image (data range 1, SSIM with a Gaussian "
        "window of sigma 1.5). `input` columns: the noisy input clipped to [0, 1].",
        f"- AddUNet: width {ADDUNET['width']}, kernels {tuple(ADDUNET['kernels'])} (shallow to deep), "
        "residual encoder (Real AddUNet), stride-2 down-sampling between levels (the `multiscale` "
        "extension: 28 x 28 padded to 32, then 16, 8, 4), global residual; classification head "
        "(global average pooling, 64 hidden units, 10 classes) on the bottleneck. U-Net: base width "
        f"{UNET['base_width']}, depth {UNET['depth']} (28 -> 14 -> 7 pixels), same head on its "
        "bottleneck.",
        f"- Training: {budget.epochs} epochs x {budget.steps_per_epoch} steps = {budget.steps} steps, "
        f"batch {budget.batch_size} whole images, AdamW, lr {LR:g}, cosine schedule with warm-up, "
        "no augmentation, seed 0; `L = w L_den + lambda L_cls` (MSE, cross-entropy), w = 1 "
        "except for classification only (w = `denoise_weight` = 0, lambda 1).",
        f"- Machine: torch {env.get('torch', '?')}, {env.get('machine', '?')}, "
        f"{env.get('torch_threads', '?')} torch thread(s) of {env.get('logical_cpus', '?')} logical "
        f"CPUs, shared with other jobs. Measured compute time of the {len(done)} runs: "
        f"{total_min:.1f} min (training and test scoring).",
        f"- {TRIAL}",
        "",
        "## Results",
        "",
        "| sigma | model | lambda | parameters | accuracy | PSNR | SSIM | input PSNR | input SSIM "
        "| gates (shallow to deep) | best epoch | minutes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    labels = {
        "addunet": "AddUNet joint",
        "addunet-classify": "AddUNet classify only",
        "unet": "U-Net joint",
    }
    for p in plan(sigmas):
        r = runs.get(p.key)
        if r is None:
            lines.append(f"| {p.sigma:g} | {labels[p.name]} | {p.lam:g} | not run | | | | | | | | |")
            continue
        gates = ", ".join(f"{g:.3f}" for g in r["gates"]) if r["gates"] else "-"
        notes = []
        if p.name == "addunet" and p.lam == 0:
            notes.append("head untrained")
        if p.name == "addunet-classify":
            notes.append("decoder and gates untrained")
        name = labels[p.name] + (f" ({'; '.join(notes)})" if notes else "")
        minutes = (r["train_seconds"] + r["eval_seconds"]) / 60
        lines.append(
            f"| {p.sigma:g} | {name} | {p.lam:g} | {r['parameters']:,} | {_fmt(r['accuracy'], '.4f')} "
            f"| {r['psnr']:.2f} | {r['ssim']:.4f} | {r['input_psnr']:.2f} | {r['input_ssim']:.4f} "
            f"| {gates} | {r['best_epoch']} | {minutes:.1f} |"
        )
    lines += [
        "",
        f"![Gates and scores against lambda]({figure})",
        "",
        "Top: the learned gate alpha of each AddUNet level against lambda (x axis: 0, 0.1, 1, 10 "
        "equally spaced, i.e. logarithmic with 0 placed one step left of 0.1). Bottom: test accuracy "
        "and PSNR against lambda.",
        "",
        "## What the numbers show",
        "",
    ]
    lines += [f"- {f}" for f in findings(runs, sigmas)]
    lines += [
        "",
        "Reading the gates: in this implementation the classification head reads the bottleneck "
        "(the last encoder state), which does not depend on the gates, so the cross-entropy sends no "
        "gradient to them; lambda moves the gates only through the encoder features the decoder "
        "has to work with. The paper's statement that shallow gates favour reconstruction and deep "
        "ones discrimination is therefore tested here only in this indirect sense, at one model "
        "size, one seed and a short training budget. The run-to-run variation (other seeds) was not "
        "measured, so small differences in a gate or in accuracy should not be read as effects.",
        "",
    ]
    return "\n".join(lines)


def figure(results: dict[str, Any], sigmas: tuple[float, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_addunet.engine.atomic import atomic_write

    runs = results["runs"]
    x = np.arange(len(LAMBDAS))
    fig, axes = plt.subplots(2, len(sigmas), figsize=(5.2 * len(sigmas), 8.0), squeeze=False)
    kernels = ADDUNET["kernels"]
    sizes = [32 // 2**j for j in range(len(kernels))]
    for c, s in enumerate(sigmas):
        joint = [runs.get(Run(s, "addunet", lam).key) for lam in LAMBDAS]
        ax = axes[0, c]
        have = [i for i, r in enumerate(joint) if r]
        if have:
            depth = len(joint[have[0]]["gates"])
            for j in range(depth):
                ax.plot(
                    x[have],
                    [joint[i]["gates"][j] for i in have],
                    marker="o",
                    label=f"level {j} (k={kernels[j]}, {sizes[j]} px)"
                    + (" shallow" if j == 0 else "")
                    + (" deep" if j == depth - 1 else ""),
                )
        ax.set_title(f"AddUNet gates, sigma {s:g}")
        ax.set_xticks(x, [f"{lam:g}" for lam in LAMBDAS])
        ax.set_xlabel("lambda (weight of the classification loss)")
        ax.set_ylabel("gate alpha")
        ax.grid(alpha=0.3)
        if have:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        ax = axes[1, c]
        if have:
            ax.plot(x[have], [joint[i]["accuracy"] for i in have], marker="o", color="C0")
        ax.set_ylabel("test accuracy", color="C0")
        ax.set_xticks(x, [f"{lam:g}" for lam in LAMBDAS])
        ax.set_xlabel("lambda")
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        if have:
            ax2.plot(x[have], [joint[i]["psnr"] for i in have], marker="s", color="C3")
            ax2.axhline(joint[have[0]]["input_psnr"], color="C3", ls=":", lw=1)
        ax2.set_ylabel("test PSNR (dB); dotted: noisy input", color="C3")
        ax.set_title(f"accuracy and PSNR, sigma {s:g}")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


# -- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few steps per run, into runs/multitask-quick/")
    ap.add_argument("--folder", type=Path, default=None, help="folder of the Fashion-MNIST .gz files")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="run keys to (re)run, e.g. sigma25/unet/lambda1")
    ap.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the JSON, train nothing"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from napari_addunet.engine.fashion_mnist import load_fashion_mnist, training_data

    budget = QUICK if args.quick else FULL
    if args.quick:
        out_dir = ROOT / "runs" / "multitask-quick"
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, md_path, png_path = (
            out_dir / "multitask.json",
            out_dir / "multitask.md",
            out_dir / "multitask-gates.png",
        )
        fig_ref = png_path.name
    else:
        json_path = ROOT / "docs" / "benchmarks" / "multitask.json"
        md_path = json_path.with_suffix(".md")
        png_path = ROOT / "docs" / "images" / "multitask-gates.png"
        fig_ref = "../images/multitask-gates.png"
    sigmas = SIGMAS
    results = load_results(json_path)

    def save() -> None:
        from napari_addunet.engine.atomic import atomic_write_text

        atomic_write_text(json_path, json.dumps(results, indent=1, sort_keys=True) + "\n")
        atomic_write_text(md_path, markdown(results, budget, sigmas, fig_ref))
        figure(results, sigmas, png_path)

    todo = []
    for run in plan(sigmas):
        cached = results["runs"].get(run.key)
        wanted = args.only is None or run.key in args.only
        if wanted and (cached is None or cached.get("fingerprint") != fingerprint(run, budget, args.seed)):
            todo.append(run)
        elif wanted and args.only is not None:
            todo.append(run)
    if args.report_only:
        todo = []
    print(f"{len(todo)} run(s) to do, {len(plan(sigmas)) - len(todo)} cached", flush=True)

    if todo:
        images, labels = load_fashion_mnist("train", args.folder)
        n_train, n_val = budget.train_images, budget.val_images
        if n_train + n_val > len(images):
            raise SystemExit(f"{n_train} + {n_val} images asked, the training set has {len(images)}")
        test_images, test_labels = load_fashion_mnist("test", args.folder, limit=budget.test_images)
        data = {
            "train": training_data(images[:n_train], labels[:n_train]),
            "val": training_data(images[-n_val:], labels[-n_val:]),
            "test_images": test_images,
            "test_labels": test_labels,
        }
        results["environment"] = environment(args.threads)
        results["budget"] = dataclasses.asdict(budget)
        for i, run in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {run.key} ...", flush=True)
            load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
            record = train_and_score(run, data, budget, args.seed)
            record["fingerprint"] = fingerprint(run, budget, args.seed)
            record["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            record["load_average_before"] = round(load_before, 2)
            results["runs"][run.key] = record
            save()
            print(
                f"    accuracy {_fmt(record['accuracy'], '.4f')}  PSNR {record['psnr']:.2f} dB "
                f"(input {record['input_psnr']:.2f})  SSIM {record['ssim']:.4f}  gates "
                + (",".join(f"{g:.3f}" for g in record["gates"]) if record["gates"] else "-")
                + f"  {record['train_seconds']:.0f}+{record['eval_seconds']:.0f} s",
                flush=True,
            )
    save()
    print(f"wrote {md_path.relative_to(ROOT)}, {json_path.name} and {png_path.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
