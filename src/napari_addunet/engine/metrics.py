"""Image quality and classification metrics: PSNR, SSIM, accuracy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _pair(reference: Any, estimate: Any) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if ref.shape != est.shape:
        raise ValueError(f"images differ in shape: reference {ref.shape}, estimate {est.shape}")
    return ref, est


def psnr(reference: Any, estimate: Any, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``.

    Parameters
    ----------
    reference, estimate
        Arrays of the same shape (computed in float64).
    data_range
        Peak value: 1 for images in ``[0, 1]``, 255 for 8-bit images.

    Returns
    -------
    float
        ``inf`` for identical images.
    """
    ref, est = _pair(reference, estimate)
    mse = float(np.mean((ref - est) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(reference: Any, estimate: Any, data_range: float = 1.0) -> float:
    """Structural similarity of two 2-D images (Wang et al. 2004).

    Gaussian window of sigma 1.5 (11x11), ``K1=0.01``, ``K2=0.03``, population covariance:
    the settings of the original MATLAB code used in the denoising literature.

    Parameters
    ----------
    reference, estimate
        2-D arrays of the same shape, at least 4x4 (the Gaussian window is cropped to
        the largest odd size that fits below 11x11).
    data_range
        Peak value (1 or 255).
    """
    from skimage.metrics import structural_similarity

    ref, est = _pair(reference, estimate)
    if ref.ndim != 2:
        raise ValueError(f"ssim takes 2-D images, got shape {ref.shape}")
    win = 11 if min(ref.shape) >= 11 else (min(ref.shape) // 2) * 2 - 1
    if win < 3:
        raise ValueError(f"ssim needs images of at least 4x4 pixels, got {ref.shape}")
    return float(
        structural_similarity(
            ref,
            est,
            data_range=data_range,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            win_size=win,
        )
    )


def batch_psnr_ssim(
    reference: np.ndarray, estimate: np.ndarray, data_range: float = 1.0
) -> tuple[float, float]:
    """Mean PSNR and SSIM over a batch ``(n, 1, H, W)`` or ``(n, H, W)``.

    Identical pairs (infinite PSNR) are left out of the PSNR mean, which is infinite only
    when every pair is identical; the SSIM mean covers every pair.
    """
    ref = np.asarray(reference).reshape(-1, *np.asarray(reference).shape[-2:])
    est = np.asarray(estimate).reshape(ref.shape)
    values = [(psnr(r, e, data_range), ssim(r, e, data_range)) for r, e in zip(ref, est, strict=True)]
    finite = [p for p, _ in values if math.isfinite(p)]
    mean_psnr = float(np.mean(finite)) if finite else math.inf
    return mean_psnr, float(np.mean([s for _, s in values]))


def accuracy(predictions: Any, labels: Any) -> float:
    """Fraction of correct predictions.

    Parameters
    ----------
    predictions
        Class indices ``(n,)`` or scores/logits ``(n, classes)`` (the arg-max is taken).
    labels
        True class indices ``(n,)``.
    """
    pred = np.asarray(predictions)
    lab = np.asarray(labels).ravel()
    if pred.ndim not in (1, 2) or len(pred) != len(lab):
        raise ValueError(
            f"accuracy takes class indices (n,) or scores (n, classes) and labels (n,); got "
            f"predictions of shape {pred.shape} and labels of shape {lab.shape}"
        )
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if lab.size == 0:
        raise ValueError("accuracy of an empty set")
    return float(np.mean(pred == lab))
