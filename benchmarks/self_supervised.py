"""Noise2Void (noisy images only) against supervised training, on BSD68.

Run by hand (not in CI), from the repository root, with ``DATA`` the folder that holds
``train400/`` and ``bsd68/``::

    python benchmarks/self_supervised.py --data DATA                 # every row, sigma 25
    python benchmarks/self_supervised.py --data DATA --only n2v-test  # one row (results merge)
    python benchmarks/self_supervised.py --data DATA --sigmas 25,50   # more noise levels

The question a user without clean images asks: how much do I lose by training on my noisy
images alone? Every row trains the same network (AddUNet Real, multi-scale, width 64, the
configuration chosen on the Train400 validation split) with the same budget (``--steps``
steps of ``--batch-size`` patches of ``--patch-size`` pixels, AdamW, cosine schedule, one
seed), at one known noise level, through the package's own loop (``napari_addunet.train``):

* ``n2v-test``: Noise2Void on the 68 noisy BSD68 images themselves, the very images it is
  then scored on (no clean image is read for training: the user's situation of training on
  the data to denoise);
* ``n2v-train400``: Noise2Void on the 400 Train400 images, each noised once with its own
  seed (noisy images of other scenes, as in the Noise2Void paper's BSD68 experiment);
* ``supervised-train400``: the clean Train400 images with fresh synthetic noise at every
  step (the supervised reference at the same budget).

Each model's last weights are scored with the published tables' protocol
(``napari_addunet.evaluate``: numpy seed 0 per image, unclipped noise, output rounded to 8
bits), whose noisy inputs are exactly the images ``n2v-test`` trained on. The table also
shows, read from ``docs/benchmarks/denoising.json`` (not recomputed), the bundled blind model
and the classical denoisers at the same sigma.

Writes ``docs/benchmarks/self-supervised.json`` and ``.md``; a row already measured with
the same settings is skipped (``--redo`` measures it again), and rows of other settings
(``--steps 4000``, ``--mask-fraction 0.05``) are kept beside the others. Models are kept in
``training/self-supervised/`` (not tracked). ``--render`` measures nothing and rewrites the
``.md`` from the JSON files, for when ``denoising.json`` has changed (a rebundled model).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "benchmarks" / "self-supervised.json"
OUT_MD = ROOT / "docs" / "benchmarks" / "self-supervised.md"
DENOISING_JSON = ROOT / "docs" / "benchmarks" / "denoising.json"
MODELS_DIR = ROOT / "training" / "self-supervised"

NETWORK = {"multiscale": True, "kernels": (3, 3, 3, 3), "convs_per_level": 2, "width": 64}
NETWORK_LABEL = "AddUNet Real, multi-scale, width 64, 4 levels of two 3x3 convolutions"
ROWS: dict[str, str] = {
    "n2v-test": "Noise2Void on the noisy test images themselves",
    "n2v-train400": "Noise2Void on noisy Train400 (one noise draw per image)",
    "supervised-train400": "supervised on clean Train400 (fresh noise every step)",
}
SUPERVISED_ROWS = {"supervised-train400"}
REFERENCES: dict[str, str] = {
    "addunet-bundled": "bundled blind model (supervised, long training)",
    "bm3d": "BM3D",
    "nlm": "non-local means (scikit-image)",
}
IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".bmp"}


def _select_config() -> Any:
    """``benchmarks/select_config.py``: its equal-budget training settings."""
    import select_config

    return select_config


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name; refuses a missing or empty folder."""
    if not folder.is_dir():
        raise SystemExit(f"no folder {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {folder}")
    return files


def read_gray8(path: Path) -> np.ndarray:
    """An 8-bit grey image as a 2-D uint8 array."""
    from napari_addunet.engine.evaluation import load_eval_images

    ((_, image),) = load_eval_images([str(path)])
    return image


def noisy_images(files: list[Path], sigma: float, *, protocol: bool, seed: int = 0) -> list[np.ndarray]:
    """Noisy float32 versions on ``[0, 1]`` (not clipped) of 8-bit images.

    ``protocol=True`` gives exactly the evaluation protocol's noisy inputs (numpy seed 0 for
    every image); otherwise image ``i`` gets noise of its own seed ``seed + i``.
    """
    from napari_addunet.engine.evaluation import add_protocol_noise

    out = []
    for i, f in enumerate(files):
        image = read_gray8(f)
        if protocol:
            out.append(add_protocol_noise(image, sigma))
        else:
            x = image.astype(np.float32) / 255.0
            x += np.random.RandomState(seed + i).normal(0, sigma / 255.0, x.shape).astype(np.float32)
            out.append(x)
    return out


def training_data(name: str, sigma: float, train_files: list[Path], test_files: list[Path], seed: int) -> Any:
    """The training data of a row (no clean image of the test set is ever part of it)."""
    import napari_addunet as na

    if name == "n2v-test":
        return na.noisy_data(noisy_images(test_files, sigma, protocol=True), normalization="none")
    if name == "n2v-train400":
        return na.noisy_data(
            noisy_images(train_files, sigma, protocol=False, seed=1000 + seed), normalization="none"
        )
    if name == "supervised-train400":
        return na.clean_data(
            [str(f) for f in train_files], normalization={"method": "range", "low": 0, "high": 255}
        )
    raise ValueError(f"unknown row {name!r}; rows: {', '.join(ROWS)}")


def row_settings(args: argparse.Namespace, network: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a row's result depends on (a cached row with other settings is measured again)."""
    network = NETWORK if network is None else network
    return {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "lr": args.lr,
        "mask_fraction": args.mask_fraction,
        "seed": args.seed,
        "bf16": args.bf16,
        "network": {k: list(v) if isinstance(v, tuple) else v for k, v in network.items()},
    }


def run_row(
    name: str,
    sigma: float,
    args: argparse.Namespace,
    train_files: list[Path],
    test_files: list[Path],
    network: dict[str, Any] | None = None,
    models_dir: Path = MODELS_DIR,
) -> dict[str, Any]:
    """Train one row's model at one sigma and score its last weights on the test images."""
    import napari_addunet as na

    data = training_data(name, sigma, train_files, test_files, args.seed)
    torch.manual_seed(args.seed)
    model = na.create_model("addunet", **(network or NETWORK))
    config = _select_config().budget_config(args, sigma, sigma)
    config.update(mask_fraction=args.mask_fraction, cpu_bf16=args.bf16)
    models_dir.mkdir(parents=True, exist_ok=True)
    settings = row_settings(args, network)
    out = models_dir / model_file_name(name, sigma, settings)
    command = (
        f"python benchmarks/self_supervised.py --data <data> --only {name} --sigmas {sigma:g} "
        f"--steps {args.steps} --batch-size {args.batch_size} --patch-size {args.patch_size} "
        f"--lr {args.lr} --mask-fraction {args.mask_fraction} --seed {args.seed}"
        + (" --bf16" if args.bf16 else "")
    )
    last: dict[str, torch.Tensor] = {}

    def keep_last(event: Any) -> None:
        _log(name, sigma, event)
        if type(event).__name__ == "EpochDone":  # the weights as they are after each epoch
            last.clear()
            last.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    t0 = time.perf_counter()
    result = na.train(data, model, config, callback=keep_last)
    seconds = time.perf_counter() - t0
    # the last weights, not the epoch with the lowest training loss the run returns: every
    # row gets exactly the same budget
    final = result.model
    final.load_state_dict(last)
    final.eval()
    steps = result.history[-1]["step"] if result.history else 0
    final.metadata.setdefault("training", {})["weights"] = f"the last, after step {steps}"
    na.save_model(final, out, overwrite=True, command=command)
    report = na.evaluate(final, [str(f) for f in test_files], [sigma], device="cpu")
    mean = report.mean(sigma)
    return {
        "name": name,
        "sigma": sigma,
        "description": ROWS[name],
        "mode": data.mode,
        "training_images": len(data.sources),
        "steps": result.history[-1]["step"] if result.history else 0,
        "train_seconds": round(seconds, 1),
        "psnr": round(mean["psnr"], 3),
        "ssim": round(mean["ssim"], 4),
        "input_psnr": round(mean["input_psnr"], 3),
        "parameters": sum(p.numel() for p in final.parameters()),
        "settings": settings,
        "model_file": out.name,
        "scored": "last weights",
        "date": datetime.date.today().isoformat(),
        "command": command,
    }


def _log(name: str, sigma: float, event: Any) -> None:
    if type(event).__name__ == "EpochDone":
        print(
            f"[{name} sigma {sigma:g}] epoch {event.epoch}/{event.epochs} step {event.step} "
            f"loss {event.train.total:.5f} {event.samples_per_second:.1f} patches/s",
            flush=True,
        )


def references(sigma: float, denoising: dict[str, Any] | None) -> list[dict[str, Any]]:
    """BSD68 rows of the denoising table at ``sigma`` (those measured at that sigma)."""
    rows = []
    methods = (denoising or {}).get("methods", {})
    for key, label in REFERENCES.items():
        try:
            res = methods[key]["datasets"]["bsd68"]["results"][f"{sigma:g}"]
        except KeyError:
            continue
        rows.append({"name": key, "description": label, "psnr": res["psnr"], "ssim": res.get("ssim")})
    return rows


def _key(name: str, sigma: float, settings: dict[str, Any]) -> str:
    """A row's place in the JSON file: its name, noise level and every setting it depends on.

    A supervised row does not mask pixels, so its mask fraction is left out: runs that differ
    only in it share the supervised row instead of training it again.
    """
    if name in SUPERVISED_ROWS:
        settings = _budget(settings)
    return f"{name}@{sigma:g} " + json.dumps(settings, sort_keys=True)


def model_file_name(name: str, sigma: float, settings: dict[str, Any]) -> str:
    """The file of a row's trained model: one per row, so runs with other settings keep theirs."""
    digest = hashlib.sha256(_key(name, sigma, settings).encode()).hexdigest()[:10]
    return f"{name}-s{sigma:g}-{digest}.safetensors"


def _budget(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that make a supervised and a Noise2Void row comparable (all but the mask)."""
    return {k: v for k, v in settings.items() if k != "mask_fraction"}


def _variant(row: dict[str, Any]) -> str:
    s = row["settings"]
    text = f"{row['steps']} steps x {s['batch_size']} patches of {s['patch_size']}, lr {s['lr']:g}"
    text += ", bfloat16" if s.get("bf16") else ""
    return text + (f", mask {s['mask_fraction']:g}" if row.get("mode") == "noise2void" else "")


def rows_at(doc: dict[str, Any], sigma: float) -> list[dict[str, Any]]:
    """The trained rows at one noise level: in the order of ``ROWS``, then by steps and mask."""
    rows = [r for r in doc["rows"].values() if r["sigma"] == sigma and r["name"] in ROWS]
    order = list(ROWS)
    return sorted(rows, key=lambda r: (order.index(r["name"]), r["steps"], r["settings"]["mask_fraction"]))


def markdown(doc: dict[str, Any], denoising: dict[str, Any] | None) -> str:
    lines = [
        "# Noise2Void against supervised training (BSD68)",
        "",
        "Generated by `python benchmarks/self_supervised.py --data <data>` (with `--bf16` for rows "
        "that say bfloat16: the settings are part of a row's key); do not edit by hand.",
        "",
        f"Every trained row: {NETWORK_LABEL}, trained through the package's loop with one budget "
        "(settings below), at the noise level it is scored at, and scored on its last weights with "
        "the published tables' protocol on the 68 BSD68 images. `n2v-test` trains on exactly the "
        "noisy images it is then scored on, without their clean versions; the reference rows are "
        "read from [denoising.md](denoising.md) (trained otherwise, not part of this budget).",
        "",
        f"Machine: {doc.get('machine', '?')}; train seconds are wall time on shared cores (noisy).",
        "",
        "\\* Rows without a record of being scored on their last weights were scored on the weights "
        "of the epoch with the lowest training loss (what the training loop returns when nothing is "
        "held out), so their budget may have been shorter than stated, and a difference between "
        "such a row and one scored on its last weights mixes the two rules (marked * below); "
        "`--redo` measures them again.",
    ]
    sigmas = sorted({r["sigma"] for r in doc["rows"].values()})
    for sigma in sigmas:
        rows = rows_at(doc, sigma)
        lines += [
            "",
            f"## sigma {sigma:g}",
            "",
            "| row | PSNR (dB) | SSIM | train s | training |",
            "|---|---:|---:|---:|---|",
        ]
        for r in rows:
            earlier = (
                "" if r.get("scored") == "last weights" else " (scored on its best epoch by training loss *)"
            )
            lines.append(
                f"| {r['name']}: {r['description']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                f"{r['train_seconds']:.0f} | {_variant(r)}{earlier} |"
            )
        for r in references(sigma, denoising):
            ssim = f"{r['ssim']:.4f}" if r.get("ssim") is not None else "-"
            lines.append(
                f"| {r['name']}: {r['description']} | {r['psnr']:.2f} | {ssim} | - | see denoising.md |"
            )
        if rows:
            lines += ["", f"Noisy input: {rows[0]['input_psnr']:.2f} dB."]
        lines += [""] + [f"- {line}" for line in findings(sigma, doc, denoising)]
    return "\n".join(lines) + "\n"


def findings(sigma: float, doc: dict[str, Any], denoising: dict[str, Any] | None) -> list[str]:
    """Differences stated from the numbers (nothing here is written by hand)."""
    rows = rows_at(doc, sigma)
    ref = {r["name"]: r["psnr"] for r in references(sigma, denoising)}
    out = []
    for r in rows:
        if r["name"] == "supervised-train400":
            continue
        label = f"{r['name']} ({_variant(r)})"
        sup = [
            q
            for q in rows
            if q["name"] == "supervised-train400" and _budget(q["settings"]) == _budget(r["settings"])
        ]
        if sup:
            mixed = (
                " *"
                if (r.get("scored") == "last weights") != (sup[0].get("scored") == "last weights")
                else ""
            )
            out.append(
                f"{label} minus supervised-train400 (same network and budget): "
                f"{r['psnr'] - sup[0]['psnr']:+.2f} dB{mixed}"
            )
        for name in ("bm3d", "nlm"):
            if name in ref:
                out.append(f"{label} minus {name}: {r['psnr'] - ref[name]:+.2f} dB")
    return out


def _load() -> dict[str, Any]:
    doc = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {"rows": {}}
    # keyed as _key keys them now (rows written before a key rule changed keep their place)
    doc["rows"] = {_key(r["name"], r["sigma"], r["settings"]): r for r in doc["rows"].values()}
    return doc


def _write(doc: dict[str, Any]) -> None:
    from napari_addunet.engine.atomic import atomic_write_text

    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT_JSON, json.dumps(doc, indent=2) + "\n")
    _write_markdown(doc)


def _write_markdown(doc: dict[str, Any]) -> None:
    from napari_addunet.engine.atomic import atomic_write_text

    denoising = json.loads(DENOISING_JSON.read_text()) if DENOISING_JSON.exists() else None
    atomic_write_text(OUT_MD, markdown(doc, denoising))


def _sigmas(text: str) -> list[float]:
    from napari_addunet.engine.evaluation import check_sigmas

    return check_sigmas([float(v) for v in text.split(",") if v.strip()])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="folder with train400/ and bsd68/ (needed unless --render)")
    p.add_argument("--only", nargs="+", choices=list(ROWS))
    p.add_argument("--sigmas", type=_sigmas, default=[25.0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--mask-fraction", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPUs with native bfloat16)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--redo", action="store_true")
    p.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite the .md from the JSON files (after denoising.json changed)",
    )
    args = p.parse_args(argv)
    if args.render:
        if not OUT_JSON.exists():
            raise SystemExit(f"{OUT_JSON.name} does not exist yet: measure the rows first")
        _write_markdown(_load())  # the measurements stay as they are
        print(f"wrote {OUT_MD.name}")
        return
    if args.data is None:
        p.error("--data is required to measure rows (only --render goes without it)")
    if args.threads:
        torch.set_num_threads(args.threads)
    train_files = image_files(args.data / "train400")
    test_files = image_files(args.data / "bsd68")
    for sigma in args.sigmas:
        for name in args.only or list(ROWS):
            doc = _load()
            key = _key(name, sigma, row_settings(args))
            if key in doc["rows"] and not args.redo:
                print(f"{name} at sigma {sigma:g}: already measured with these settings, skipped")
                continue
            row = run_row(name, sigma, args, train_files, test_files)
            doc = _load()  # another process may have added rows meanwhile
            doc["rows"][key] = row
            doc["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
            _write(doc)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
