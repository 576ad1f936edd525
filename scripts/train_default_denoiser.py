"""Train the bundled default denoiser (blind Gaussian, sigma in [0, 55] on [0, 255]).

Interim script until the training engine lands; resumable from its own state file.

Usage::

    python scripts/train_default_denoiser.py --data PATH/TO/train400 --minutes 25 \
        --out src/napari_addunet/weights/addunet-gray-blind.safetensors --state runs/default-state.pt
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage import io

import napari_addunet as na


def load_images(folder: Path) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".tif", ".bmp"})
    return [io.imread(p).astype(np.float32) / 255.0 for p in files]


def sample(images: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    out = np.empty((n, 1, size, size), np.float32)
    for i in range(n):
        img = images[rng.integers(len(images))]
        y = rng.integers(img.shape[0] - size + 1)
        x = rng.integers(img.shape[1] - size + 1)
        p = img[y : y + size, x : x + size]
        p = np.rot90(p, rng.integers(4))
        if rng.integers(2):
            p = p[:, ::-1]
        out[i, 0] = p
    return torch.from_numpy(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / (a - b).pow(2).mean()))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=25)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images = load_images(args.data)
    val, train = images[:20], images[20:]  # validation split by image
    model = na.create_model("addunet")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step, best, elapsed = 0, -math.inf, 0.0
    if args.state.exists():
        st = torch.load(args.state, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, best, elapsed = st["step"], st["best"], st["elapsed"]
        rng = np.random.default_rng(args.seed + step)
        print(f"resumed at step {step}", flush=True)
    vrng = np.random.default_rng(1234)
    vclean = sample(val, 64, 96, vrng)
    vsig = torch.from_numpy(vrng.uniform(5, 55, (64, 1, 1, 1)).astype(np.float32)) / 255
    vnoisy = vclean + vsig * torch.from_numpy(vrng.standard_normal(vclean.shape).astype(np.float32))
    t0 = time.time() - elapsed
    while step < args.steps and (time.time() - t0) < args.minutes * 60:
        lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        clean = sample(train, args.batch, args.patch, rng)
        sig = torch.from_numpy(rng.uniform(0, 55, (args.batch, 1, 1, 1)).astype(np.float32)) / 255
        noisy = clean + sig * torch.randn_like(clean)
        loss = (model(noisy).denoised - clean).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                v = psnr(model(vnoisy).denoised.clamp(0, 1), vclean)
            print(
                f"step {step} loss {loss.item():.5f} val_psnr {v:.2f} lr {lr:.2e} t {time.time() - t0:.0f}s",
                flush=True,
            )
            if v > best:
                best = v
                na.save_model(
                    model,
                    args.out,
                    normalization={
                        "method": "range",
                        "low": 0.0,
                        "high": 1.0,
                        "note": "trained on images scaled to [0, 1]",
                    },
                    training={
                        "data": "DnCNN Train400 (380 images; 20 held out for validation)",
                        "noise": {"model": "gaussian", "sigma_range_255": [0, 55]},
                        "steps": step,
                        "batch": args.batch,
                        "patch": args.patch,
                        "seconds": round(time.time() - t0),
                        "val_psnr_db": round(v, 3),
                        "command": "python scripts/train_default_denoiser.py "
                        + " ".join(a for a in sys.argv[1:] if not a.startswith("/")),
                        "stage": "interim",
                    },
                )
            args.state.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.state.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                    "best": best,
                    "elapsed": time.time() - t0,
                },
                tmp,
            )
            tmp.replace(args.state)
    print(f"done: step {step}, best val PSNR {best:.2f} dB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
