"""PSNR, SSIM and accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from napari_addunet.engine.metrics import accuracy, batch_psnr_ssim, psnr, ssim


def test_psnr_by_hand():
    a = np.zeros((4, 4))
    b = np.full((4, 4), 0.1)
    assert psnr(a, b) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert psnr(a, a) == math.inf
    u = np.zeros((8, 8), np.uint8)
    v = u.copy()
    v[0, 0] = 16  # MSE = 256 / 64 = 4
    assert psnr(u, v, 255) == pytest.approx(10 * math.log10(255**2 / 4))


def test_psnr_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((3, 3)), np.zeros((3, 4)))


def test_ssim_matches_the_reference_settings():
    rng = np.random.default_rng(0)
    a = rng.random((40, 40))
    b = a + rng.normal(0, 0.1, a.shape)
    ref = structural_similarity(
        a, b, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(a, b) == pytest.approx(ref)
    assert ssim(a, a) == pytest.approx(1.0)
    assert 0 < ssim(a, b) < 1


def test_ssim_on_small_patches_and_errors():
    rng = np.random.default_rng(1)
    a = rng.random((8, 8))
    assert ssim(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2-D"):
        ssim(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))
    for side in (2, 3):  # a 3x3 image leaves no odd window of at least 3 inside it
        with pytest.raises(ValueError, match="at least 4x4"):
            ssim(np.zeros((side, side)), np.zeros((side, side)))
    b = rng.random((4, 4))
    assert ssim(b, b) == pytest.approx(1.0)


def test_batch_means():
    rng = np.random.default_rng(2)
    ref = rng.random((3, 1, 16, 16))
    est = ref + 0.05
    p, s = batch_psnr_ssim(ref, est)
    assert p == pytest.approx(psnr(ref[0, 0], est[0, 0]))
    assert s == pytest.approx(np.mean([ssim(r[0], e[0]) for r, e in zip(ref, est, strict=True)]))


def test_accuracy_from_indices_and_logits():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    logits = np.array([[2.0, 0.1], [0.0, 1.0], [3.0, -1.0]])
    assert accuracy(logits, [0, 1, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"predictions of shape \(2,\) and labels of shape \(3,\)"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match=r"predictions of shape \(4, 1, 3\)"):  # was "4 predictions for 4"
        accuracy(np.zeros((4, 1, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r"predictions of shape \(\)"):  # was an IndexError
        accuracy(np.int64(3), [3])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
