"""Fashion-MNIST, read from its gzipped IDX files (no download).

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017; MIT licence) holds 70,000 grey 28 x 28
images of clothing in ten classes, 60,000 for training and 10,000 for testing. Debian and
Ubuntu ship the original files in the package ``dataset-fashion-mnist``, installed in
:data:`DEFAULT_FOLDER`; any folder holding the four files under their original names works.

The IDX format: a big-endian header (two zero bytes, a type code, the number of
dimensions, then one 32-bit size per dimension) followed by the values. Images are
type ``0x08`` (unsigned byte) with three dimensions, labels type ``0x08`` with one.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from .datasets import TrainingData

DEFAULT_FOLDER = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
LICENSE = "MIT"
CITATION = (
    "Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for "
    "Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017."
)

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SIZES = {"train": 60_000, "test": 10_000}
SIDE = 28
_UBYTE = 0x08


class FashionMNISTError(ValueError):
    """The Fashion-MNIST files are missing, truncated or not what they should be."""


def default_folder() -> Path:
    """Where the Debian package ``dataset-fashion-mnist`` installs the files."""
    return Path(DEFAULT_FOLDER)


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise FashionMNISTError(
            f"{path.name}: cannot be decompressed ({type(exc).__name__}: {exc}); the file is "
            f"truncated or corrupted: reinstall it (Debian/Ubuntu: apt-get install --reinstall "
            f"{DEBIAN_PACKAGE})"
        ) from exc


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read one gzipped IDX file of unsigned bytes with ``ndim`` dimensions.

    Parameters
    ----------
    path
        A ``*-idx?-ubyte.gz`` file.
    ndim
        The number of dimensions expected (3 for images, 1 for labels).

    Returns
    -------
    numpy.ndarray
        uint8 array of the shape the header gives.

    Raises
    ------
    FashionMNISTError
        A wrong magic number, type code or number of dimensions, or fewer (or more) values
        than the header announces.
    """
    path = Path(path)
    raw = _read_gz(path)
    head = 4 + 4 * ndim
    if len(raw) < 4:
        raise FashionMNISTError(f"{path.name}: {len(raw)} bytes, too short to be an IDX file")
    zero, kind, dims = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or kind != _UBYTE or dims != ndim:
        magic = int.from_bytes(raw[:4], "big")
        expected = (_UBYTE << 8) | ndim
        raise FashionMNISTError(
            f"{path.name}: magic number 0x{magic:08x}, expected 0x{expected:08x} (IDX file of unsigned "
            f"bytes with {ndim} dimension(s)); is this the right file?"
        )
    if len(raw) < head:
        raise FashionMNISTError(f"{path.name}: the header is cut short ({len(raw)} of {head} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape, dtype=np.int64))
    body = len(raw) - head
    if body != count:
        raise FashionMNISTError(
            f"{path.name}: the header announces shape {shape} ({count:,} values) but the file holds "
            f"{body:,}; it is truncated or corrupted"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape).copy()


def load_fashion_mnist(
    split: Literal["train", "test"] = "train",
    folder: str | os.PathLike | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one split of Fashion-MNIST.

    Parameters
    ----------
    split
        ``"train"`` (60,000 images) or ``"test"`` (10,000).
    folder
        The folder holding the four ``.gz`` files; default :data:`DEFAULT_FOLDER`.
    limit
        Keep only the first ``limit`` images (in file order); None keeps all.

    Returns
    -------
    images, labels
        ``uint8`` images ``(N, 28, 28)`` and ``int64`` labels ``(N,)`` in ``0..9``,
        indices into :data:`CLASS_NAMES`.

    Raises
    ------
    FashionMNISTError
        Missing folder or files (with how to install them), invalid or truncated files,
        images and labels that do not match.
    ValueError
        An unknown ``split`` or a negative ``limit``.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    base = Path(folder) if folder is not None else default_folder()
    names = FILES[split]
    missing = [n for n in names if not (base / n).is_file()]
    if missing:
        where = (
            f"the Debian/Ubuntu package {DEBIAN_PACKAGE} installs them there "
            f"(sudo apt-get install {DEBIAN_PACKAGE})"
            if folder is None
            else f"give the folder holding them, or install the Debian/Ubuntu package {DEBIAN_PACKAGE} "
            f"(files in {DEFAULT_FOLDER})"
        )
        raise FashionMNISTError(
            f"Fashion-MNIST {split} files not found in {base}: missing {', '.join(missing)}; {where}"
        )
    images = read_idx(base / names[0], 3)
    labels = read_idx(base / names[1], 1)
    if images.shape[1:] != (SIDE, SIDE):
        raise FashionMNISTError(
            f"{names[0]}: images are {images.shape[1]} x {images.shape[2]}, expected {SIDE} x {SIDE}"
        )
    if len(images) != len(labels):
        raise FashionMNISTError(
            f"{names[0]} holds {len(images):,} images but {names[1]} {len(labels):,} labels"
        )
    if len(labels) and int(labels.max()) >= len(CLASS_NAMES):
        raise FashionMNISTError(
            f"{names[1]}: label {int(labels.max())} is out of range (0..{len(CLASS_NAMES) - 1})"
        )
    if limit is not None:
        images, labels = images[: int(limit)], labels[: int(limit)]
    return images, labels.astype(np.int64)


# -- training data and evaluation on noisy images ------------------------------------------------------
NORMALIZATION: dict[str, float | str] = {"method": "range", "low": 0.0, "high": 255.0}


def training_data(images: np.ndarray, labels: np.ndarray) -> TrainingData:
    """Labelled clean images for :func:`~napari_addunet.engine.training.train`.

    Parameters
    ----------
    images, labels
        As returned by :func:`load_fashion_mnist` (any subset).

    Returns
    -------
    TrainingData
        Supervised data (synthetic noise is added during training), the ten
        :data:`CLASS_NAMES`, values mapped from ``[0, 255]`` to ``[0, 1]``.
    """
    from .datasets import clean_data

    return clean_data(
        np.asarray(images), labels=np.asarray(labels), class_names=CLASS_NAMES, normalization=NORMALIZATION
    )


def noisy_images(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """``images / 255`` (float32) plus Gaussian noise of ``sigma`` (on ``[0, 255]``), not clipped.

    The noise is drawn from ``numpy.random.default_rng([seed, round(1000 * sigma)])``: the same
    seed and sigma give the same noisy images in every run and for every model.
    """
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
    x = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    rng = np.random.default_rng([int(seed), int(round(1000 * sigma))])
    noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return x + noise


@dataclasses.dataclass(frozen=True)
class NoisyScores:
    """Classification and denoising scores on noisy images (see :func:`evaluate_noisy`).

    Attributes
    ----------
    images
        Number of images scored.
    sigma
        Noise level on ``[0, 255]``.
    accuracy
        Fraction classified right from the noisy input (None without a head).
    psnr, ssim
        Mean PSNR (dB) and SSIM of the denoised images, clipped to ``[0, 1]``.
    input_psnr, input_ssim
        The same for the noisy inputs, clipped to ``[0, 1]``.
    seconds
        Time taken (model and metrics).
    """

    images: int
    sigma: float
    accuracy: float | None
    psnr: float
    ssim: float
    input_psnr: float
    input_ssim: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate_noisy(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray | None,
    sigma: float,
    *,
    seed: int = 0,
    batch_size: int = 250,
) -> NoisyScores:
    """Classify and denoise noisy Fashion-MNIST images with one model.

    Each clean image is scaled to ``[0, 1]``, noise is added by :func:`noisy_images`
    (seeded, unclipped), the model runs on the noisy batch directly, the classification is
    the arg-max of its logits, and PSNR/SSIM compare the output clipped to ``[0, 1]`` with the
    clean image (data range 1, no border crop; SSIM with a Gaussian window of sigma 1.5).

    Parameters
    ----------
    model
        A model trained on images scaled to ``[0, 1]``, a checkpoint or a bundled name.
    images, labels
        uint8 images ``(N, 28, 28)`` and their labels (None: no accuracy).
    sigma
        Noise level on ``[0, 255]``.
    seed
        Seed of the noise.
    batch_size
        Images per forward pass.

    Returns
    -------
    NoisyScores
    """
    import torch

    from .checkpoint import resolve_model
    from .metrics import accuracy, batch_psnr_ssim

    t0 = time.perf_counter()
    net = resolve_model(model)
    net.eval()
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images must be a non-empty stack (N, H, W), got shape {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    clean = images.astype(np.float32) / np.float32(255.0)
    noisy = noisy_images(images, sigma, seed)
    device = next(net.parameters()).device
    outs, logits = [], []
    with torch.no_grad():
        for i in range(0, len(noisy), batch_size):
            batch = torch.from_numpy(noisy[i : i + batch_size, None]).to(device)
            out = net(batch)
            outs.append(out.denoised[:, 0].float().cpu().numpy())
            if out.logits is not None:
                logits.append(out.logits.float().cpu().numpy())
    denoised = np.clip(np.concatenate(outs), 0.0, 1.0)
    acc = None
    if labels is not None and logits:
        acc = accuracy(np.concatenate(logits), np.asarray(labels))
    p, s = batch_psnr_ssim(clean, denoised)
    ip, iss = batch_psnr_ssim(clean, np.clip(noisy, 0.0, 1.0))
    return NoisyScores(len(images), float(sigma), acc, p, s, ip, iss, time.perf_counter() - t0)
