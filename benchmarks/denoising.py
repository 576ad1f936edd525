"""BSD68 / Set12 grey denoising table: our models, same-budget baselines, classical methods, published numbers.

Run by hand (not in CI), from the repository root, with ``DATA`` a folder holding ``bsd68/``
and ``set12/`` (and ``train400/``, read only to tune the TV weight on Train400's held-out
validation images):

    python benchmarks/denoising.py --data DATA                     # every row not yet measured
    python benchmarks/denoising.py --data DATA --methods bm3d tv   # only these rows
    python benchmarks/denoising.py --data DATA --redo budget-dncnn # remeasure one row
    python benchmarks/denoising.py --data DATA --model mine=PATH   # one more model row
    python benchmarks/denoising.py --data DATA --quick             # test: 2 Set12 images, sigma 25
    python benchmarks/denoising.py --data DATA --retime            # CPU time of every row, side by side

Writes ``docs/benchmarks/denoising.json`` and ``docs/benchmarks/denoising.md`` (``--quick``:
``denoising-quick.*``, so a test never overwrites real results). Each row is cached in the JSON
file: a rerun measures only the rows that are missing, whose images or sigmas changed, or whose
checkpoint file changed (its SHA-256 is kept); ``--redo NAME`` remeasures a row anyway.
Each row's CPU time is first measured on its own, when the row is scored; ``--retime`` measures
every row again in one pass, in turns (round 1: every row once, round 2: again, ...), so that
the load of a shared machine falls on all rows alike and the column compares them fairly.

Rows:

* ``addunet-bundled``: the bundled model ``addunet-gray-blind``;
* ``addunet-bundled-x2`` and ``addunet-bundled-x8``: the same model with the engine's
  self-ensemble of 2 and 8 orientations (``ensemble=2``: the mean over the image and its
  left-right mirror; ``ensemble=8``: over all flips and transposes; N forward passes, so N times
  the compute);
* ``budget-<name>``: every ``training/budget/<name>.safetensors`` present, trained with the
  same budget by ``benchmarks/select_config.py``;
* ``--model NAME=PATH``: any other checkpoint;
* ``bm3d`` (PyPI ``bm3d``), ``nlm``, ``tv`` and ``wavelet`` (scikit-image), given the noisy
  image and the true sigma; the TV weight is chosen per sigma on Train400's validation split;
* published numbers (BM3D, DnCNN-S, DnCNN-B, FFDNet, DRUNet, SwinIR), beside our BM3D and
  same-budget DnCNN rows or on rows of their own.

Scores follow the published tables' protocol (:mod:`napari_addunet.engine.evaluation`): the
classical methods reuse its noise, rounding and metric helpers, so every row sees exactly the
same noisy images. The test images are read from ``DATA`` and never copied.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cli_check import sha256

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "benchmarks"
BUDGET_DIR = ROOT / "training" / "budget"
SELECTION_JSON = OUT_DIR / "config-selection.json"
SIGMAS = (15.0, 25.0, 50.0)
DATASETS = ("bsd68", "set12")
DATASET_TITLES = {"bsd68": "BSD68", "set12": "Set12"}
FULL_SIZES = {"bsd68": 68, "set12": 12}  # images in the published test sets
BUNDLED = "addunet-gray-blind"
ENSEMBLE_ROWS = (2, 8)  # the bundled model again with these self-ensemble sizes
TIMING_SIDE = 1024  # models: one 1024 x 1024 float32 input
CROP_SIDE = 512  # classical methods: one 512 x 512 crop
TIMING_SIGMA = 25.0
TIMED_RUNS = 3  # median of 3, after 1 warm-up
LAYOUT = "the engine's memory layout on the CPU: channels-last where oneDNN is present"
TV_WEIGHTS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.10, 0.12, 0.14, 0.17, 0.20, 0.25, 0.30, 0.40)
NLM_RULE = "h = 0.8 * sigma/255, sigma = sigma/255, patch_size 5, patch_distance 6, fast_mode (scikit-image's example)"

# Published PSNR (dB) at sigma 15 / 25 / 50, protocol as above (DnCNN README, DPIR and SwinIR
# result tables, FFDNet's paper table 1). ``attach``: our row shown beside it.
PUBLISHED: dict[str, dict[str, Any]] = {
    "BM3D": {
        "params": None,
        "bsd68": (31.07, 28.57, 25.62),
        "set12": (32.37, 29.97, 26.72),
        "attach": "bm3d",
    },
    "DnCNN-S": {
        "params": 0.56e6,
        "bsd68": (31.73, 29.23, 26.23),
        "set12": (32.86, 30.44, 27.18),
        "attach": "budget-dncnn",
        "note": "one model per sigma",
    },
    "DnCNN-B": {"params": 0.67e6, "bsd68": (31.61, 29.16, 26.23), "set12": None, "note": "blind"},
    "FFDNet": {"params": 0.49e6, "bsd68": (31.63, 29.19, 26.29), "set12": (32.75, 30.43, 27.32)},
    "DRUNet": {"params": 32.6e6, "bsd68": (31.91, 29.48, 26.59), "set12": (33.25, 30.94, 27.90)},
    "SwinIR": {"params": 11.5e6, "bsd68": (31.97, 29.50, 26.58), "set12": (33.36, 31.01, 27.91)},
}
PUBLISHED_SIGMAS = (15.0, 25.0, 50.0)
CLASSICAL = ("bm3d", "nlm", "tv", "wavelet")


def _key(sigma: float) -> str:
    return f"{sigma:g}"


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


_SHA_NOW: dict[str, str | None] = {}


def _sha_now(source: str) -> str | None:
    """The SHA-256 of a model row's checkpoint as it is now (``None`` if it cannot be found)."""
    if source not in _SHA_NOW:
        import napari_addunet as na

        path = na.bundled_models().get(source) or Path(source)
        _SHA_NOW[source] = sha256(Path(path)) if Path(path).is_file() else None
    return _SHA_NOW[source]


def earlier_weights(entry: dict[str, Any]) -> bool:
    """Whether a model row was scored on weights its checkpoint no longer holds.

    A rerun with ``--redo NAME`` remeasures it; until then its numbers describe other weights.
    """
    if entry.get("kind") != "model" or not entry.get("sha256") or not entry.get("source"):
        return False
    now = _sha_now(entry["source"])
    return now is not None and now != entry["sha256"]


def _shown_path(path: Path) -> str:
    """A path safe to write into a tracked file: relative to the repository, else its name."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _select_config() -> Any:
    """``benchmarks/select_config.py``: its candidates and its Train400 split."""
    import select_config

    return select_config


# -- the rows ---------------------------------------------------------------------------------
@dataclass
class Method:
    """One row to measure: a model checkpoint or a classical denoiser."""

    name: str
    kind: str  # "model" or "classical"
    label: str
    source: str = ""  # a bundled model's name or a checkpoint path (models only)
    file: Path | None = None  # the checkpoint file (models only)
    settings: dict[str, Any] = field(default_factory=dict)
    ensemble: int = 1  # self-ensemble size (models only)


def model_methods(extra: Sequence[str], unfinished: bool = False) -> list[Method]:
    """The bundled model, every finished same-budget checkpoint, and ``NAME=PATH`` extras.

    Parameters
    ----------
    extra
        ``NAME=PATH`` strings from ``--model``.
    unfinished
        Also take the ``training/budget`` checkpoints that ``config-selection.json`` does not
        list yet. ``select_config.py`` writes its best epoch there while it trains, and the
        scored final weights only when it is done, so such a file may be half trained.

    Returns
    -------
    list of Method
    """
    import napari_addunet as na

    rows: list[Method] = []
    bundled = na.bundled_models()
    if BUNDLED in bundled:
        rows.append(Method("addunet-bundled", "model", f"bundled `{BUNDLED}`", BUNDLED, bundled[BUNDLED]))
        for n in ENSEMBLE_ROWS:
            label = f"bundled `{BUNDLED}`, self-ensemble of {n} orientations ({n} forward passes)"
            rows.append(
                Method(f"addunet-bundled-x{n}", "model", label, BUNDLED, bundled[BUNDLED], ensemble=n)
            )
    candidates: dict[str, tuple[str, dict, str]] = {}
    try:
        candidates = _select_config().CANDIDATES
    except Exception as exc:  # noqa: BLE001 - descriptions are optional
        print(f"note: no candidate descriptions ({exc})", flush=True)
    selection = json.loads(SELECTION_JSON.read_text()) if SELECTION_JSON.exists() else {}
    steps = selection.get("setup", {}).get("steps")
    budget = f"same budget ({steps} steps)" if steps else "same budget"
    finished = set(selection.get("rows", {}))
    files = sorted(BUDGET_DIR.glob("*.safetensors")) if BUDGET_DIR.is_dir() else []
    order = list(candidates)
    files.sort(key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.stem))
    for f in files:
        if f.stem not in finished and not unfinished:
            print(
                f"note: {_shown_path(f)} skipped: not in {_shown_path(SELECTION_JSON)} yet "
                "(still training?); --unfinished takes it",
                flush=True,
            )
            continue
        desc = candidates[f.stem][2] if f.stem in candidates else f.stem
        label = f"{desc}; {budget}" + ("" if f.stem in finished else " (unfinished)")
        rows.append(Method(f"budget-{f.stem}", "model", label, _shown_path(f), f))
    for item in extra:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model expects NAME=PATH, got {item!r}")
        p = Path(path)
        if not p.is_file():
            raise SystemExit(f"--model {name}: no such file {p.name}")
        if name in CLASSICAL or any(m.name == name for m in rows):
            raise SystemExit(f"--model {name}: that name is already a row")
        rows.append(Method(name, "model", f"`{p.name}`", _shown_path(p), p))
    return rows


def classical_methods() -> list[Method]:
    """BM3D, non-local means, total variation and wavelet shrinkage, with their settings."""
    return [
        Method(
            "bm3d",
            "classical",
            "BM3D (PyPI `bm3d`)",
            settings={"sigma_psd": "sigma/255", "profile": "np", "num_threads": 1},
        ),
        Method("nlm", "classical", "non-local means (scikit-image)", settings={"rule": NLM_RULE}),
        Method(
            "tv",
            "classical",
            "total variation, Chambolle (scikit-image)",
            settings={"weight": "chosen per sigma on Train400's validation split"},
        ),
        Method(
            "wavelet",
            "classical",
            "wavelet BayesShrink (scikit-image)",
            settings={
                "method": "BayesShrink",
                "mode": "soft",
                "wavelet": "db1",
                "sigma": "sigma/255",
                "rescale_sigma": True,
            },
        ),
    ]


# -- data -------------------------------------------------------------------------------------
def load_datasets(data: Path, quick: bool) -> dict[str, dict[str, np.ndarray]]:
    """The test images, by dataset then file name (``quick``: Set12's first 2 only)."""
    from napari_addunet.engine.evaluation import load_eval_images
    from napari_addunet.engine.image_io import image_files

    names = ("set12",) if quick else DATASETS
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        folder = data / name
        if not folder.is_dir():
            raise SystemExit(f"--data must hold {', '.join(n + '/' for n in names)}; {name}/ is missing")
        files = image_files(folder)
        if quick:
            files = files[:2]
        out[name] = dict(load_eval_images([str(f) for f in files]))
    return out


def _crop(datasets: dict[str, dict[str, np.ndarray]]) -> tuple[np.ndarray, str]:
    """A 512 x 512 crop of the first image that large (else the first image, mirrored to size)."""
    images = [(n, a) for d in datasets.values() for n, a in d.items()]
    for name, img in images:
        if min(img.shape) >= CROP_SIDE:
            return np.ascontiguousarray(img[:CROP_SIDE, :CROP_SIDE]), f"top-left 512x512 of {name}"
    name, img = images[0]
    pad = [(0, max(0, CROP_SIDE - s)) for s in img.shape]
    big = np.pad(img, pad, mode="symmetric")
    return np.ascontiguousarray(big[:CROP_SIDE, :CROP_SIDE]), f"{name} mirrored to 512x512"


# -- timing -----------------------------------------------------------------------------------
def _median_seconds(fn: Callable[[], Any]) -> float:
    fn()  # warm-up
    times = []
    for _ in range(TIMED_RUNS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def forward_job(model: Any, x: torch.Tensor, ensemble: int = 1) -> Callable[[], Any]:
    """One timed call: a forward pass of ``x``, or the self-ensemble's ``ensemble`` passes.

    The model is first put in the memory layout the engine uses on the CPU (channels-last
    where oneDNN is present), so that the time is the one a user gets.
    """
    from napari_addunet.engine.devices import use_fast_layout
    from napari_addunet.engine.ensemble import ensemble_mean

    use_fast_layout(model, torch.device("cpu"))

    def run() -> None:
        with torch.no_grad():
            ensemble_mean(lambda v: model(v).denoised, x, ensemble)

    return run


def time_model(model: Any, ensemble: int = 1) -> float:
    """CPU seconds per megapixel: median of 3 runs on a 1024 x 1024 input, 1 thread."""
    torch.set_num_threads(1)
    x = torch.rand(1, 1, TIMING_SIDE, TIMING_SIDE, generator=torch.Generator().manual_seed(0))
    return _median_seconds(forward_job(model, x, ensemble)) / (TIMING_SIDE * TIMING_SIDE / 1e6)


TIMING_FIELDS = ("cpu_seconds_per_mp", "timing")


def _timings(doc: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {n: tuple(e.get(f) for f in TIMING_FIELDS) for n, e in doc["methods"].items()}


def merge_timings(
    fresh: dict[str, Any], timed: dict[str, Any], before: dict[str, tuple[Any, ...]]
) -> dict[str, Any]:
    """``fresh`` (the results file as it is now) with the times the pass changed in ``timed``."""
    now = _timings(timed)
    for name, values in now.items():
        if values != before.get(name) and name in fresh["methods"]:
            fresh["methods"][name].update(dict(zip(TIMING_FIELDS, values, strict=True)))
    return fresh


def retime(
    doc: dict[str, Any], methods: Sequence[Method], datasets: dict[str, dict[str, np.ndarray]], data: Path
) -> dict[str, Any]:
    """Time every measured row again, side by side: ``TIMED_RUNS`` interleaved rounds, medians.

    Models: a 1024 x 1024 forward pass; classical methods: the 512 x 512 crop at sigma 25, scaled
    to 1 MP; 1 thread, one warm-up each. Rows whose model file is missing keep their old time.
    Returns the record of the pass (rows, rounds, date, load).
    """
    import napari_addunet as na
    from napari_addunet.engine.evaluation import add_protocol_noise

    torch.set_num_threads(1)
    crop, where = _crop(datasets)
    noisy = add_protocol_noise(crop, TIMING_SIGMA)
    x = torch.rand(1, 1, TIMING_SIDE, TIMING_SIDE, generator=torch.Generator().manual_seed(0))
    jobs: dict[str, tuple[Callable[[], Any], float, str]] = {}
    for m in methods:
        entry = doc["methods"].get(m.name)
        if not entry or "error" in entry:
            continue
        if m.kind == "model":
            model = na.load_model(m.file if m.file is not None else m.source).eval()
            what = f"{TIMING_SIDE}x{TIMING_SIDE} float32 forward pass ({LAYOUT}) under torch.no_grad()"
            if m.ensemble > 1:
                what += f", self-ensemble of {m.ensemble} (that many passes)"
            jobs[m.name] = (forward_job(model, x, m.ensemble), TIMING_SIDE * TIMING_SIDE / 1e6, what)
        else:
            tv = entry.get("settings", {}).get("tuning", {}).get("chosen_weight")
            fn = classical_denoiser(m.name, tv)
            what = f"{where}, sigma 25, scaled to 1 MP"
            jobs[m.name] = (lambda fn=fn: fn(noisy, TIMING_SIGMA), CROP_SIDE * CROP_SIDE / 1e6, what)
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for name, (run, _, _) in jobs.items():
        print(f"[retime] warm-up {name}", flush=True)
        run()
    for r in range(TIMED_RUNS):
        for name, (run, _, _) in jobs.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
        print(f"[retime] round {r + 1}/{TIMED_RUNS} done", flush=True)
    for name, (_, megapixels, what) in jobs.items():
        entry = doc["methods"][name]
        entry["cpu_seconds_per_mp"] = round(statistics.median(times[name]) / megapixels, 4)
        entry["timing"] = f"{what}; side by side with every row, median of {TIMED_RUNS} rounds, 1 thread"
    return {
        "rows": list(jobs),
        "rounds": TIMED_RUNS,
        "date": datetime.date.today().isoformat(),
        "machine": _machine(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


# -- classical denoisers ----------------------------------------------------------------------
def tune_tv(data: Path, sigmas: Sequence[float]) -> dict[str, Any]:
    """The TV weight per sigma with the best mean PSNR on Train400's held-out validation images.

    The validation split is ``split_train400`` of ``benchmarks/select_config.py`` (every 20th
    image, sorted by name); the noise and scoring are the test protocol's. No test image is read.
    """
    from skimage.restoration import denoise_tv_chambolle

    from napari_addunet.engine.evaluation import _psnr, add_protocol_noise, load_eval_images, to_uint8

    folder = data / "train400"
    if not folder.is_dir():
        raise RuntimeError("no train400/ in --data to tune the TV weight on")
    _train, val = _select_config().split_train400(folder)
    images = load_eval_images([str(f) for f in val])
    table: dict[str, dict[str, float]] = {}
    chosen: dict[str, float] = {}
    at_edge: list[str] = []
    for s in sigmas:
        scores = {}
        noisy = [(clean, add_protocol_noise(clean, s)) for _n, clean in images]
        for w in TV_WEIGHTS:
            psnrs = [_psnr(c, to_uint8(denoise_tv_chambolle(x, weight=w)), 255.0) for c, x in noisy]
            scores[f"{w:g}"] = round(float(np.mean(psnrs)), 3)
        best = max(TV_WEIGHTS, key=lambda w: scores[f"{w:g}"])
        table[_key(s)], chosen[_key(s)] = scores, best
        if best in (TV_WEIGHTS[0], TV_WEIGHTS[-1]):
            at_edge.append(_key(s))
        print(f"[tv] sigma {s:g}: weight {best:g} (validation PSNR {scores[f'{best:g}']:.2f} dB)", flush=True)
    return {
        "images": f"<data>/train400, every 20th image sorted by name ({len(images)} images)",
        "grid": list(TV_WEIGHTS),
        "validation_psnr": table,
        "chosen_weight": chosen,
        "chosen_at_grid_edge": at_edge,
    }


def classical_denoiser(
    name: str, tv_weights: dict[str, float] | None = None
) -> Callable[[np.ndarray, float], np.ndarray]:
    """``f(noisy, sigma)``: the method's estimate of the clean image on ``[0, 1]``.

    Raises
    ------
    ImportError
        If the method's package is missing.
    """
    if name == "bm3d":
        import bm3d

        profile = bm3d.BM3DProfile()
        # its compiled core runs a thread pool of its own (0: as many as the machine has), which
        # no thread limit of the process reaches: one thread, as every other row is timed
        profile.num_threads = 1
        return lambda x, s: bm3d.bm3d(x, sigma_psd=s / 255.0, profile=profile)
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet

    if name == "nlm":
        return lambda x, s: denoise_nl_means(
            x, h=0.8 * s / 255.0, sigma=s / 255.0, fast_mode=True, patch_size=5, patch_distance=6
        )
    if name == "tv":
        weights = tv_weights or {}
        return lambda x, s: denoise_tv_chambolle(x, weight=weights[_key(s)])
    if name == "wavelet":
        return lambda x, s: denoise_wavelet(
            x, sigma=s / 255.0, method="BayesShrink", mode="soft", wavelet="db1", rescale_sigma=True
        )
    raise ValueError(f"unknown classical method {name}")


def evaluate_classical(
    fn: Callable[[np.ndarray, float], np.ndarray],
    images: dict[str, np.ndarray],
    sigmas: Sequence[float],
    name: str,
) -> Any:
    """:func:`napari_addunet.evaluate` for a classical denoiser: same noise, rounding and metrics."""
    from napari_addunet.engine.evaluation import (
        EvaluationReport,
        EvaluationRow,
        _psnr,
        _ssim,
        add_protocol_noise,
        to_uint8,
    )

    rows = []
    for s in sigmas:
        for img_name, clean in images.items():
            t0 = time.perf_counter()
            noisy = add_protocol_noise(clean, s)
            out = to_uint8(np.asarray(fn(noisy, s)))
            noisy8 = to_uint8(noisy)
            rows.append(
                EvaluationRow(
                    image=img_name,
                    sigma=float(s),
                    psnr=_psnr(clean, out, 255.0),
                    ssim=_ssim(clean, out, 255.0),
                    input_psnr=_psnr(clean, noisy8, 255.0),
                    input_ssim=_ssim(clean, noisy8, 255.0),
                    seconds=time.perf_counter() - t0,
                )
            )
        print(f"[{name}] sigma {s:g}: {len(images)} images done", flush=True)
    return EvaluationReport(model=name, rows=rows, sigmas=[float(s) for s in sigmas], images=list(images))


# -- measuring one row ------------------------------------------------------------------------
def _scores(report: Any) -> dict[str, Any]:
    """Means and per-image PSNR/SSIM of one dataset, rounded, plus the eval's seconds per image."""
    sig = {}
    for s in report.sigmas:
        m = report.mean(s)
        sig[_key(s)] = {
            **{k: round(v, 4) for k, v in m.items()},
            "per_image": {r.image: [round(r.psnr, 3), round(r.ssim, 4)] for r in report.rows if r.sigma == s},
        }
    return {
        "images": list(report.images),
        "sigmas": [_key(s) for s in report.sigmas],
        "seconds_per_image": round(float(np.mean([r.seconds for r in report.rows])), 4),
        "results": sig,
    }


def measure(
    method: Method, datasets: dict[str, dict[str, np.ndarray]], sigmas: Sequence[float], data: Path
) -> dict[str, Any]:
    """Score, cost and speed of one row; ``{"error": "not available: ..."}`` if it cannot run."""
    entry: dict[str, Any] = {
        "name": method.name,
        "kind": method.kind,
        "label": method.label,
        "date": datetime.date.today().isoformat(),
        "machine": _machine(),
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    if method.kind == "model":
        import napari_addunet as na

        model = na.load_model(method.file if method.file is not None else method.source).eval()
        entry.update(
            source=method.source,
            sha256=sha256(method.file) if method.file is not None else None,
            architecture=model.architecture,
            parameters=int(sum(p.numel() for p in model.parameters())),
            macs_per_pixel=int(round(na.macs_per_pixel(model))) * method.ensemble,
            ensemble=method.ensemble,
        )
        print(f"[{method.name}] {entry['parameters']:,} parameters; timing ...", flush=True)
        entry["cpu_seconds_per_mp"] = round(time_model(model, method.ensemble), 4)
        entry["timing"] = (
            f"1024x1024 float32 forward pass ({LAYOUT}) under torch.no_grad(), median of 3 after 1 warm-up, "
            "1 thread" + (f"; self-ensemble of {method.ensemble} passes" if method.ensemble > 1 else "")
        )
        runs = {}
        for ds, images in datasets.items():

            def progress(p: Any, ds: str = ds, n: int = len(images)) -> None:
                if p.done % n == 0:
                    print(f"[{method.name}] {ds} sigma {p.sigma:g}: {n} images done", flush=True)

            report = na.evaluate(
                model, images, sigmas, device="cpu", progress=progress, ensemble=method.ensemble
            )
            runs[ds] = _scores(report)
    else:
        try:
            settings = dict(method.settings)
            tv = None
            if method.name == "tv":
                tuning = tune_tv(data, sigmas)
                tv = tuning["chosen_weight"]
                settings["tuning"] = tuning
            fn = classical_denoiser(method.name, tv)
        except Exception as exc:  # noqa: BLE001 - recorded in the table instead of crashing
            entry["error"] = f"not available: {type(exc).__name__}: {exc}"
            print(f"[{method.name}] {entry['error']}", flush=True)
            return entry
        package = "bm3d" if method.name == "bm3d" else "scikit-image"
        entry.update(
            settings=settings, versions={package: _version(package)}, parameters=None, macs_per_pixel=None
        )
        crop, where = _crop(datasets)
        from napari_addunet.engine.evaluation import add_protocol_noise

        noisy = add_protocol_noise(crop, TIMING_SIGMA)
        print(f"[{method.name}] timing ...", flush=True)
        seconds = _median_seconds(lambda: fn(noisy, TIMING_SIGMA))
        entry["cpu_seconds_per_mp"] = round(seconds / (CROP_SIDE * CROP_SIDE / 1e6), 4)
        entry["timing"] = f"{where}, sigma 25, median of 3 after 1 warm-up, 1 thread, scaled to 1 MP"
        runs = {
            ds: _scores(evaluate_classical(fn, images, sigmas, method.name))
            for ds, images in datasets.items()
        }
    entry["datasets"] = runs
    entry["load_average_after"] = round(os.getloadavg()[0], 2)
    return entry


def is_current(
    entry: dict[str, Any] | None,
    method: Method,
    datasets: dict[str, dict[str, np.ndarray]],
    sigmas: Sequence[float],
) -> bool:
    """Whether a cached row still holds: same images and sigmas, and the same checkpoint file."""
    if not entry or "error" in entry or "datasets" not in entry:
        return False
    for ds, images in datasets.items():
        run = entry["datasets"].get(ds)
        if run is None or run["images"] != list(images) or run["sigmas"] != [_key(s) for s in sigmas]:
            return False
    if method.kind == "model" and method.file is not None and entry.get("sha256") != sha256(method.file):
        return False
    if method.kind == "classical":  # the settings it was measured with (the page describes today's)
        measured = {k: v for k, v in entry.get("settings", {}).items() if k != "tuning"}
        if measured != method.settings:
            return False
    return entry.get("ensemble", 1) == method.ensemble


# -- markdown ---------------------------------------------------------------------------------
def _fmt_params(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{int(n):,}"


def _fmt_macs(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e3:,.1f} k"


def _psnr_of(
    entry: dict[str, Any], ds: str, sigmas: Sequence[float], what: str = "psnr"
) -> list[float] | None:
    run = entry.get("datasets", {}).get(ds)
    if run is None:
        return None
    return [run["results"][_key(s)][what] for s in sigmas]


def _published(name: str, ds: str, sigmas: Sequence[float]) -> list[float] | None:
    values = PUBLISHED[name].get(ds)
    if values is None:
        return None
    by_sigma = dict(zip(PUBLISHED_SIGMAS, values, strict=True))
    if any(s not in by_sigma for s in sigmas):
        return None
    return [by_sigma[s] for s in sigmas]


def _join(values: list[float] | None, digits: int) -> str:
    return "-" if values is None else " / ".join(f"{v:.{digits}f}" for v in values)


def _ordered(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rank = {"addunet-bundled": 0} | {f"addunet-bundled-x{n}": n for n in ENSEMBLE_ROWS}
    entries = list(doc.get("methods", {}).values())

    def key(e: dict[str, Any]) -> tuple:
        name = e["name"]
        if name in rank:
            return (0, rank[name], "")
        if name.startswith("budget-"):
            return (1, e.get("order", 99), name)
        if e["kind"] == "model":
            return (2, 0, name)
        return (3, CLASSICAL.index(name) if name in CLASSICAL else 99, name)

    return sorted(entries, key=key)


def _attached(name: str) -> str | None:
    return next((p for p, v in PUBLISHED.items() if v.get("attach") == name), None)


def own_threads(entry: dict[str, Any]) -> bool:
    """Whether a BM3D row was timed with the library's own thread pool (before it was set to 1)."""
    return entry.get("name") == "bm3d" and entry.get("settings", {}).get("num_threads") != 1


def outside_timing_pass(doc: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether a row's CPU time was not measured in the document's side-by-side pass.

    Such a row was timed alone when it was scored after the pass, or in an earlier pass because
    its model file was missing when the pass ran; its time does not compare with the others.
    """
    run = doc.get("timing_run")
    return bool(run) and (entry["name"] not in run["rows"] or "side by side" not in entry.get("timing", ""))


def table(doc: dict[str, Any], ds: str) -> list[str]:
    """The markdown table of one dataset."""
    sigmas = [float(s) for s in doc["sigmas"]]
    sig = "/".join(f"{s:g}" for s in sigmas)
    pub_sig = "/".join(f"{s:g}" for s in PUBLISHED_SIGMAS)
    lines = [
        f"| method | params | MACs/px | CPU s/MP (1 thread) | eval s/image | PSNR {sig} | SSIM {sig} | published PSNR {pub_sig} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    entries = _ordered(doc)
    shown = set()
    for e in entries:
        pub = _attached(e["name"])
        pub_text = "-"
        if pub is not None and PUBLISHED[pub].get(ds) is not None:
            pub_text = f"{pub}: {_join(list(PUBLISHED[pub][ds]), 2)}"
            shown.add(pub)
        label = f"`{e['name']}`: {e['label']}"
        if earlier_weights(e):
            label += (
                f" **(scored {e.get('date', '?')} on earlier weights of this checkpoint; "
                f"`--redo {e['name']}` remeasures it)**"
            )
        if "error" in e:
            lines.append(f"| {label} | - | - | - | - | {e['error']} | - | {pub_text} |")
            continue
        run = e.get("datasets", {}).get(ds)
        if run is None:
            continue
        lines.append(
            f"| {label} | {_fmt_params(e.get('parameters'))} | {_fmt_macs(e.get('macs_per_pixel'))} | "
            f"{e['cpu_seconds_per_mp']:.2f}{'*' if outside_timing_pass(doc, e) else ''}"
            f"{'†' if own_threads(e) else ''} | "
            f"{run['seconds_per_image']:.2f} | "
            f"{_join(_psnr_of(e, ds, sigmas), 2)} | {_join(_psnr_of(e, ds, sigmas, 'ssim'), 4)} | {pub_text} |"
        )
    for name, v in PUBLISHED.items():
        if name in shown or v.get(ds) is None:
            continue
        note = f", {v['note']}" if v.get("note") else ""
        lines.append(
            f"| {name} (published{note}) | {_fmt_params(v['params'])} | - | - | - | - | - | {_join(list(v[ds]), 2)} |"
        )
    return lines


def _above(ours: list[dict[str, Any]], ref: list[float], ds: str, sigmas: Sequence[float]) -> list[str]:
    """Names of the rows whose PSNR is above ``ref`` at every sigma."""
    return [e["name"] for e in ours if all(a > b for a, b in zip(_psnr_of(e, ds, sigmas), ref, strict=True))]


def _names(names: list[str], of: int) -> str:
    return (
        ", ".join(f"`{n}`" for n in names) if names else "none"
    ) + f" ({len(names)} of {of} measured rows)"


def reading(doc: dict[str, Any], ds: str) -> list[str]:
    """Statements computed from the numbers of one dataset.

    Comparisons with published means are made only on the complete test set.
    """
    sigmas = [float(s) for s in doc["sigmas"]]
    scored = [e for e in _ordered(doc) if "error" not in e and ds in e.get("datasets", {})]
    ours = [e for e in scored if not earlier_weights(e)]
    if not ours:
        return ["- No row measured yet."]
    at = "at every sigma" if len(sigmas) > 1 else f"at sigma {sigmas[0]:g}"
    out = [f"- Noisy input: {_join(_psnr_of(ours[0], ds, sigmas, 'input_psnr'), 2)} dB."]
    for ref_name in ("bm3d", "budget-dncnn"):
        ref_entry = next((e for e in ours if e["name"] == ref_name), None)
        if ref_entry is not None:
            above = _above(
                [e for e in ours if e is not ref_entry], _psnr_of(ref_entry, ds, sigmas), ds, sigmas
            )
            out.append(f"- Above our `{ref_name}` run {at}: {_names(above, len(ours) - 1)}.")
    n, full = len(ours[0]["datasets"][ds]["images"]), FULL_SIZES.get(ds)
    complete = full is None or n == full
    if not complete:
        out.append(f"- Only {n} of the {full} images were scored: no comparison with the published means.")
    else:
        for pub in PUBLISHED:
            ref = _published(pub, ds, sigmas)
            if ref is not None:
                out.append(
                    f"- Above published {pub} {at}: {_names(_above(ours, ref, ds, sigmas), len(ours))}."
                )
        for name, pub in (("bm3d", "BM3D"), ("budget-dncnn", "DnCNN-S")):
            e = next((e for e in ours if e["name"] == name), None)
            ref = _published(pub, ds, sigmas)
            if e is None or ref is None:
                continue
            diff = [a - b for a, b in zip(_psnr_of(e, ds, sigmas), ref, strict=True)]
            out.append(
                f"- `{name}` minus published {pub}: "
                + " / ".join(f"{d:+.2f}" for d in diff)
                + f" dB (sigma {'/'.join(f'{s:g}' for s in sigmas)})."
            )
    pubs = {p: _published(p, ds, sigmas) for p in PUBLISHED}
    pubs = {p: v for p, v in pubs.items() if v is not None}
    for i, s in enumerate(sigmas):
        best = max(ours, key=lambda e: _psnr_of(e, ds, sigmas)[i])
        value = _psnr_of(best, ds, sigmas)[i]
        text = f"- Best measured row at sigma {s:g}: `{best['name']}`, {value:.2f} dB"
        if complete and pubs:
            top = max(pubs, key=lambda p: pubs[p][i])
            text += f" ({value - pubs[top][i]:+.2f} dB from the best published, {top})"
        out.append(text + ".")
    models = [e for e in ours if e["kind"] == "model"]
    if models:
        mean = {e["name"]: float(np.mean(_psnr_of(e, ds, sigmas))) for e in models}
        fast = min(models, key=lambda e: e["cpu_seconds_per_mp"])
        best = max(models, key=lambda e: mean[e["name"]])
        out.append(
            f"- Of the model rows, `{fast['name']}` is the fastest ({fast['cpu_seconds_per_mp']:.2f} s/MP, "
            f"mean PSNR over the sigmas {mean[fast['name']]:.2f} dB) and `{best['name']}` the most accurate "
            f"({mean[best['name']]:.2f} dB, {best['cpu_seconds_per_mp']:.2f} s/MP)."
        )
    left_out = [e["name"] for e in scored if earlier_weights(e)]
    if left_out:
        out.append(
            f"- Left out of these statements, scored on earlier weights of their checkpoint: {_names(left_out, len(scored))}."
        )
    return out


def markdown(doc: dict[str, Any]) -> str:
    """The whole ``denoising.md``."""
    quick = doc.get("quick", False)
    command = "python benchmarks/denoising.py --data <data>" + (" --quick" if quick else "")
    from napari_addunet.engine.evaluation import PROTOCOL

    machines = sorted({e.get("machine", "?") for e in doc.get("methods", {}).values() if "machine" in e})
    loads = [
        v
        for e in doc.get("methods", {}).values()
        for v in (e.get("load_average_before"), e.get("load_average_after"))
        if v is not None
    ]
    dates = sorted({e["date"] for e in doc.get("methods", {}).values() if "date" in e})
    lines = [
        "# Grey-level Gaussian denoising: BSD68 and Set12" + (" (quick test run)" if quick else ""),
        "",
        f"Generated by `{command}` (with `<data>` a folder holding `bsd68/`, `set12/` and `train400/`); "
        "do not edit by hand. Each row is cached in the JSON file beside this one: a rerun measures only "
        "missing rows, and `--redo NAME` remeasures one.",
        "",
        "## Protocol",
        "",
        f"As in DPIR's test script and the published tables: {PROTOCOL}. Every row sees the same noisy "
        "images: the classical methods reuse the protocol's noise, rounding and metrics "
        "(`napari_addunet.engine.evaluation`) and are given the true sigma. Models: the bundled model, "
        "the models trained with one shared budget by `benchmarks/select_config.py` "
        "(`training/budget/`), and any `--model` given. BM3D: PyPI `bm3d` with `sigma_psd = sigma/255` "
        "and its profile's `num_threads = 1`. "
        f"Non-local means: {NLM_RULE}. Wavelet: BayesShrink, soft thresholds, db1, "
        "`sigma = sigma/255`, `rescale_sigma=True`. TV (Chambolle): weight chosen per sigma from "
        f"{', '.join(f'{w:g}' for w in TV_WEIGHTS)} by mean PSNR on the 20 held-out Train400 images "
        "(every 20th, sorted by name), never on a test set"
        + _tv_choice(doc)
        + ". Published numbers: DnCNN README (BM3D, DnCNN-S, DnCNN-B), FFDNet's paper, DPIR's and "
        "SwinIR's result tables; `published PSNR` stands beside our own BM3D run and beside our "
        "same-budget DnCNN (DnCNN-S: one model per sigma), and on rows of its own otherwise.",
        "",
        "Cost: parameters; multiply-accumulates per pixel (`napari_addunet.macs_per_pixel`); CPU seconds "
        "per megapixel with 1 thread: for models, the median of 3 forward passes of a 1024x1024 float32 "
        "input after 1 warm-up under `torch.no_grad()`, in the engine's memory layout on the CPU "
        "(channels-last where torch has oneDNN); for classical methods, the same on one 512x512 "
        "crop at sigma 25, scaled to 1 MP. `eval s/image` is the mean wall time per image of the scoring "
        "run (noise, denoising and metrics), also with 1 thread." + _timing_run_note(doc),
        "",
        f"Machine: {'; '.join(machines) or '?'}. Measured {', '.join(dates) or '?'}"
        + (
            f"; load average between {min(loads):.1f} and {max(loads):.1f} (shared cores: timings are noisy)"
            if loads
            else ""
        )
        + ".",
    ]
    for ds in doc.get("datasets", []):
        n = len(doc.get("images", {}).get(ds, []))
        lines += ["", f"## {DATASET_TITLES.get(ds, ds)} ({n} images)", "", *table(doc, ds)]
        full = FULL_SIZES.get(ds)
        if full is not None and n != full:
            lines += ["", f"Only {n} of the {full} images: the published means are not comparable."]
    lines += ["", "## Reading the table", ""]
    for ds in doc.get("datasets", []):
        lines += [f"{DATASET_TITLES.get(ds, ds)}:", "", *reading(doc, ds), ""]
    return "\n".join(lines).rstrip() + "\n"


def _tv_choice(doc: dict[str, Any]) -> str:
    tv = doc.get("methods", {}).get("tv", {})
    tuning = tv.get("settings", {}).get("tuning")
    if not tuning:
        return ""
    chosen = ", ".join(f"{w:g} at sigma {s}" for s, w in tuning["chosen_weight"].items())
    edge = tuning.get("chosen_at_grid_edge")
    return f" (chosen: {chosen}" + (f"; at the grid's edge for sigma {', '.join(edge)}" if edge else "") + ")"


# -- files ------------------------------------------------------------------------------------
def _paths(quick: bool) -> tuple[Path, Path]:
    stem = "denoising-quick" if quick else "denoising"
    return OUT_DIR / f"{stem}.json", OUT_DIR / f"{stem}.md"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"methods": {}}


def _timing_run_note(doc: dict[str, Any]) -> str:
    run = doc.get("timing_run")
    if not run:
        return " Each row was timed when it was scored, so the CPU column mixes machine loads."
    before, after = run["load_average"]
    outside = [
        n for n, e in doc["methods"].items() if "error" not in e and outside_timing_pass(doc, {"name": n} | e)
    ]
    return (
        f" The CPU column comes from one side-by-side pass (`--retime`) on {run['date']} over "
        f"{len(run['rows'])} rows in {run['rounds']} interleaved rounds (load average {before:.1f} before, "
        f"{after:.1f} after), so its rows compare fairly."
        + (
            f" Rows marked * ({', '.join(f'`{n}`' for n in outside)}) were not in that pass: timed alone "
            "when scored after it, or in an earlier pass because their model file is not on this machine "
            "(`training/budget/README.md` says how to make it again); their times do not compare with "
            "the others."
            if outside
            else ""
        )
        + (
            " The BM3D times (its CPU column, marked †, and its eval s/image) were taken with the library's own thread pool (its default: as many "
            "threads as the machine has), not 1 thread; the next run of this script measures the row "
            "again with one."
            if any(own_threads({"name": n} | e) for n, e in doc["methods"].items() if "error" not in e)
            else ""
        )
    )


def _write(doc: dict[str, Any], quick: bool) -> None:
    from napari_addunet.engine.atomic import atomic_write_text

    out_json, out_md = _paths(quick)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_json, json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out_md, markdown(doc))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder holding bsd68/, set12/ (and train400/)")
    p.add_argument("--methods", nargs="+", metavar="NAME", help="measure only these rows (default: all)")
    p.add_argument(
        "--redo", nargs="+", default=[], metavar="NAME", help="remeasure these rows ('all': every row)"
    )
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="one more model row")
    p.add_argument(
        "--quick", action="store_true", help="Set12's first 2 images at sigma 25, to denoising-quick.*"
    )
    p.add_argument(
        "--unfinished",
        action="store_true",
        help="also score training/budget files not in config-selection.json",
    )
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    p.add_argument(
        "--retime", action="store_true", help="time every measured row again, side by side, in one pass"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass

    methods = model_methods(args.model, args.unfinished) + classical_methods()
    order = {m.name: i for i, m in enumerate(methods)}
    if args.list:
        for m in methods:
            print(f"{m.name}: {m.label}")
        return
    known = set(order)
    for name in [*(args.methods or []), *(n for n in args.redo if n != "all")]:
        if name not in known:
            raise SystemExit(f"unknown row {name!r}; rows: {', '.join(order)}")
    selected = [m for m in methods if not args.methods or m.name in args.methods]

    sigmas = (TIMING_SIGMA,) if args.quick else SIGMAS
    datasets = load_datasets(args.data, args.quick)
    out_json, _ = _paths(args.quick)
    for m in selected:
        doc = _load(out_json)
        cached = doc["methods"].get(m.name)
        if "all" not in args.redo and m.name not in args.redo and is_current(cached, m, datasets, sigmas):
            print(f"{m.name}: cached, skipped", flush=True)
            continue
        entry = measure(m, datasets, sigmas, args.data)
        entry["order"] = order[m.name]
        doc = _load(out_json)  # another run may have added rows meanwhile
        doc["methods"][m.name] = entry
        doc.update(
            quick=args.quick,
            sigmas=[_key(s) for s in sigmas],
            datasets=list(datasets),
            images={ds: list(images) for ds, images in datasets.items()},
        )
        _write(doc, args.quick)
        if "error" not in entry:
            summary = {ds: _join(_psnr_of(entry, ds, sigmas), 2) for ds in datasets}
            per_image = {ds: entry["datasets"][ds]["seconds_per_image"] for ds in datasets}
            print(
                f"{m.name}: PSNR {summary}; s/image {per_image}; CPU s/MP {entry['cpu_seconds_per_mp']}",
                flush=True,
            )
    doc = _load(out_json)
    if args.retime and doc.get("methods"):
        before = _timings(doc)
        run = retime(doc, [m for m in methods if m.name in doc["methods"]], datasets, args.data)
        doc = merge_timings(_load(out_json), doc, before)  # rows written meanwhile by another run stay
        doc["timing_run"] = run
    if doc.get("methods"):
        _write(doc, args.quick)  # refresh the markdown (e.g. after code changes)
    print(f"wrote {_shown_path(out_json)} and its .md", flush=True)


if __name__ == "__main__":
    main()
