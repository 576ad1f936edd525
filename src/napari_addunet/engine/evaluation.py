"""Benchmark evaluation with the protocol of the published grey-level denoising tables.

For every image and noise level ``sigma`` (on ``[0, 255]``), as in DPIR's
``main_dpir_denoising.py``:

1. the 8-bit image is scaled to ``[0, 1]`` as float32;
2. ``np.random.seed(0)`` is called (before each image, so every image gets the same
   noise stream whatever the order), and ``np.random.normal(0, sigma / 255, shape)`` is
   added in place (the noisy image stays float32 and is **not** clipped);
3. the model runs on that noisy image directly, without any normalisation;
4. the output is clipped to ``[0, 1]``, scaled by 255 and rounded to uint8;
5. PSNR is computed between the 8-bit output and the 8-bit original, with no border
   cropped; SSIM likewise (Gaussian window, sigma 1.5, as the MATLAB reference code).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .ensemble import EnsembleError, check_ensemble, ensemble_mean
from .metrics import psnr as _psnr
from .metrics import ssim as _ssim

PROTOCOL = (
    "8-bit image scaled to [0, 1] float32; np.random.seed(0) before each image; noise "
    "N(0, (sigma/255)^2) added as float, not clipped; model run on the noisy image directly; "
    "output clipped to [0, 1] and rounded to uint8; PSNR and SSIM on uint8, no border crop"
)


class EvaluationError(ValueError):
    """Images or settings that the evaluation protocol cannot use."""


@dataclasses.dataclass(frozen=True)
class EvaluationProgress:
    """Progress of :func:`evaluate`: ``done`` of ``total`` (image, sigma) runs finished."""

    done: int
    total: int
    image: str
    sigma: float


@dataclasses.dataclass(frozen=True)
class EvaluationRow:
    """Scores of one image at one noise level (``input_*``: the noisy input, rounded to uint8)."""

    image: str
    sigma: float
    psnr: float
    ssim: float
    input_psnr: float
    input_ssim: float
    seconds: float


@dataclasses.dataclass
class EvaluationReport:
    """Per-image scores and their means, as a table or JSON."""

    model: str
    rows: list[EvaluationRow]
    sigmas: list[float]
    images: list[str]
    ensemble: int = 1

    def mean(self, sigma: float) -> dict[str, float]:
        """Mean PSNR/SSIM (and of the noisy inputs) over the images at one noise level."""
        rows = [r for r in self.rows if r.sigma == sigma]
        if not rows:
            raise KeyError(f"no results at sigma {sigma}")
        return {
            k: float(np.mean([getattr(r, k) for r in rows]))
            for k in ("psnr", "ssim", "input_psnr", "input_ssim")
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: protocol, model, and per sigma the mean and per-image scores."""
        results = {}
        for s in self.sigmas:
            rows = [r for r in self.rows if r.sigma == s]
            results[_sigma_key(s)] = {
                "mean": self.mean(s),
                "images": [{k: v for k, v in dataclasses.asdict(r).items() if k != "sigma"} for r in rows],
            }
        return {
            "protocol": PROTOCOL,
            "model": self.model,
            "ensemble": self.ensemble,
            "sigmas": self.sigmas,
            "images": self.images,
            "results": results,
        }

    def to_json(self, indent: int = 2) -> str:
        """Strict JSON: an infinite PSNR (an image restored exactly, e.g. the noisy input at
        sigma 0) is written as ``null``, which every JSON reader accepts."""
        return json.dumps(finite_or_none(self.to_dict()), indent=indent, allow_nan=False)

    def table(self, per_image: bool = True) -> str:
        """A plain-text table: one row per image and sigma, then the means."""
        width = max([len("image"), len("mean")] + [len(n) for n in self.images])
        head = (
            f"{'image':<{width}}  {'sigma':>5}  {'PSNR':>7}  {'SSIM':>6}  "
            + f"{'noisy PSNR':>10}  {'noisy SSIM':>10}"
        )
        lines = [head, "-" * len(head)]
        for s in self.sigmas:
            if per_image:
                for r in (r for r in self.rows if r.sigma == s):
                    lines.append(
                        f"{r.image:<{width}}  {s:>5g}  {r.psnr:7.2f}  {r.ssim:6.4f}  "
                        f"{r.input_psnr:10.2f}  {r.input_ssim:10.4f}"
                    )
            m = self.mean(s)
            lines.append(
                f"{'mean':<{width}}  {s:>5g}  {m['psnr']:7.2f}  {m['ssim']:6.4f}  "
                f"{m['input_psnr']:10.2f}  {m['input_ssim']:10.4f}"
            )
        return "\n".join(lines)


def finite_or_none(value: Any) -> Any:
    """``value`` (nested dicts and lists) with infinite and NaN floats as None, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def _sigma_key(s: float) -> str:
    return f"{s:g}"


# -- images -----------------------------------------------------------------------------------
def load_eval_images(images: Any) -> list[tuple[str, np.ndarray]]:
    """8-bit grey images with names from a folder, files, arrays or a ``{name: array}`` mapping."""
    from .image_io import ImageIOError, image_files, read_image

    items: list[tuple[str, Any]] = []
    if isinstance(images, Mapping):
        items = [(str(k), v) for k, v in images.items()]
    elif isinstance(images, (str, os.PathLike)) or (
        isinstance(images, Sequence) and all(isinstance(i, (str, os.PathLike)) for i in images)
    ):
        paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        for p in map(Path, paths):
            if not p.exists():
                raise EvaluationError(f"{p.name}: no such file or folder")
            files = image_files(p)
            if p.is_dir() and not files:
                raise EvaluationError(f"no images in folder {p.name}")
            for f in files:
                try:
                    img = read_image(f)
                except ImageIOError as exc:
                    raise EvaluationError(str(exc)) from exc
                if img.rgb:
                    raise EvaluationError(f"{f.name} is a colour image; the protocol here is for grey images")
                items.append((f.name, np.asarray(img.data)))
    elif isinstance(images, np.ndarray):
        items = [("image 0", images)]
    elif isinstance(images, Sequence):
        if any(isinstance(i, (str, os.PathLike)) for i in images):
            raise EvaluationError(
                "images mixes file names and arrays; pass files (or folders) only, arrays only, "
                "or a {name: array} mapping"
            )
        items = [(f"image {i}", a) for i, a in enumerate(images)]
    else:
        raise EvaluationError(f"images: expected a folder, files or arrays, got {type(images).__name__}")
    if not items:
        raise EvaluationError("no images to evaluate on")
    out = []
    for name, a in items:
        arr = np.asarray(a)
        arr = arr.reshape(arr.shape[-2:]) if arr.ndim > 2 and math.prod(arr.shape[:-2]) == 1 else arr
        if arr.ndim == 3 and arr.shape[-1] == 1:  # (H, W, 1): a grey image with a channel axis
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise EvaluationError(f"{name} has shape {arr.shape}; the protocol takes 2-D grey images")
        if arr.dtype != np.uint8:
            raise EvaluationError(
                f"{name} is {arr.dtype}; the published protocol is defined on 8-bit images (uint8)"
            )
        out.append((name, arr))
    return out


# -- the protocol -----------------------------------------------------------------------------
def add_protocol_noise(image: np.ndarray, sigma: float) -> np.ndarray:
    """The noisy input of the protocol: ``float32(image / 255)`` plus seeded Gaussian noise, unclipped."""
    x = image.astype(np.float32) / np.float32(255.0)
    # the values of ``np.random.seed(0); np.random.normal(...)``, without resetting the caller's
    # global generator
    x += np.random.RandomState(0).normal(0, sigma / 255.0, x.shape)  # in place: stays float32
    return x


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Clip to ``[0, 1]``, scale by 255, round: the protocol's 8-bit output."""
    return np.uint8((np.clip(x, 0, 1) * 255.0).round())


def run_model(model: Any, x: np.ndarray, device: torch.device, ensemble: int = 1) -> np.ndarray:
    """The model's output on a 2-D float image, with no normalisation and no clipping.

    ``ensemble`` > 1 averages over that many orientations of the image
    (:mod:`~napari_addunet.engine.ensemble`).
    """
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(device)
        return ensemble_mean(lambda v: model(v).denoised, t, ensemble)[0, 0].cpu().numpy()


def check_sigmas(sigmas: Any) -> list[float]:
    """``sigmas`` (one number or several) as a list of distinct non-negative floats."""
    if isinstance(sigmas, bool | np.bool_):
        raise EvaluationError(f"sigmas must be numbers, got {sigmas!r}")
    if isinstance(sigmas, np.ndarray) and sigmas.ndim == 0:
        sigmas = sigmas.item()
    values = [sigmas] if isinstance(sigmas, int | float | np.number) else sigmas
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise EvaluationError(f"sigmas must be a number or a list of numbers, got {type(sigmas).__name__}")
    try:
        sig = [float(s) for s in values]
    except (TypeError, ValueError):
        raise EvaluationError(f"sigmas must be numbers, got {list(values)}") from None
    if not sig or any(not math.isfinite(s) or s < 0 for s in sig):
        raise EvaluationError(f"sigmas must be non-negative numbers, got {list(values)}")
    twice = sorted({s for s in sig if sig.count(s) > 1})
    if twice:
        raise EvaluationError(f"sigma {twice[0]:g} is listed twice; the means would count its images twice")
    keys = [_sigma_key(s) for s in sig]
    same = next((k for k in keys if keys.count(k) > 1), None)
    if same is not None:
        close = [repr(s) for s in sig if _sigma_key(s) == same]
        raise EvaluationError(
            f"sigmas {' and '.join(close)} are both reported as {same}; give levels that differ visibly"
        )
    return sig


def evaluate(
    model: Any,
    images: Any,
    sigmas: Sequence[float] = (15, 25, 50),
    *,
    device: str | torch.device | None = "cpu",
    progress: Callable[[EvaluationProgress], None] | None = None,
    ensemble: int = 1,
) -> EvaluationReport:
    """PSNR/SSIM of a denoiser with the protocol of the published tables.

    Parameters
    ----------
    model
        A model, a ``.safetensors`` checkpoint or a bundled model's name. It must take
        images on ``[0, 1]`` (the protocol bypasses the model's normalisation).
    images
        A folder, image files, 2-D uint8 arrays, or a ``{name: array}`` mapping.
    sigmas
        Noise levels on ``[0, 255]``: one number or several, each once.
    device
        Where to run the model (the model is moved there and left in eval mode).
    progress
        Called after each (image, sigma).
    ensemble
        Self-ensemble size (1, 2, 4 or 8): the output is the mean over that many orientations
        of the noisy image (:mod:`~napari_addunet.engine.ensemble`); 1 (default) is off.

    Returns
    -------
    EvaluationReport
    """
    from .checkpoint import resolve_model
    from .devices import resolve_device, use_fast_layout

    sig = check_sigmas(sigmas)
    try:
        ensemble = check_ensemble(ensemble)
    except EnsembleError as exc:
        raise EvaluationError(str(exc)) from exc
    net = resolve_model(model)
    dev = resolve_device(device)
    net = net.to(dev).eval()
    use_fast_layout(net, dev)
    name = Path(getattr(net, "source_path", "") or "").name or net.architecture
    data = load_eval_images(images)
    rows: list[EvaluationRow] = []
    total, done = len(data) * len(sig), 0
    for s in sig:
        for img_name, clean in data:
            t0 = time.perf_counter()
            noisy = add_protocol_noise(clean, s)
            raw = run_model(net, noisy, dev, ensemble)
            if not np.isfinite(raw).all():  # to_uint8 would score NaN as black
                bad = int((~np.isfinite(raw)).sum())
                raise EvaluationError(
                    f"{name} gives {bad} non-finite values (NaN or inf) on {img_name} at sigma {s:g}: "
                    "the weights are damaged or the model diverged in training"
                )
            out = to_uint8(raw)
            noisy8 = to_uint8(noisy)
            rows.append(
                EvaluationRow(
                    image=img_name,
                    sigma=s,
                    psnr=_psnr(clean, out, 255.0),
                    ssim=_ssim(clean, out, 255.0),
                    input_psnr=_psnr(clean, noisy8, 255.0),
                    input_ssim=_ssim(clean, noisy8, 255.0),
                    seconds=time.perf_counter() - t0,
                )
            )
            done += 1
            if progress is not None:
                progress(EvaluationProgress(done, total, img_name, s))
    return EvaluationReport(model=name, rows=rows, sigmas=sig, images=[n for n, _ in data], ensemble=ensemble)


# -- the bundled models' self-check -----------------------------------------------------------------
SELF_CHECK_SIGMAS = (15.0, 25.0, 50.0)


def self_check_image() -> np.ndarray:
    """The self-check image: the central 128 x 128 crop of scikit-image's camera (uint8)."""
    from skimage import data

    return np.ascontiguousarray(data.camera()[192:320, 192:320])


def self_check(model: Any, sigmas: Sequence[float] = SELF_CHECK_SIGMAS) -> dict[str, dict[str, float]]:
    """Protocol PSNR of ``model`` and of its noisy input on :func:`self_check_image`.

    Stored in a bundled model's metadata (``self_check``) when it is made, and recomputed by
    the tests, so that a damaged or replaced weight file cannot land unnoticed.

    Returns
    -------
    dict
        ``{"15": {"psnr": ..., "input_psnr": ...}, ...}``, keyed by sigma.
    """
    report = evaluate(model, {"camera-crop": self_check_image()}, sigmas, device="cpu")
    return {
        _sigma_key(s): {
            "psnr": round(report.mean(s)["psnr"], 4),
            "input_psnr": round(report.mean(s)["input_psnr"], 4),
        }
        for s in report.sigmas
    }
