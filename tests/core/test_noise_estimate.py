"""The blind noise estimate (median absolute Haar diagonal coefficient)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_addunet._sample_data import make_noisy_camera, make_noisy_stack
from napari_addunet.engine.noise_estimate import estimate_sigma, estimate_sigma_planes, plane_sigma


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_white_noise_is_measured(sigma):
    rng = np.random.default_rng(0)
    noisy = 0.5 + sigma * rng.standard_normal((256, 256))
    assert plane_sigma(noisy) == pytest.approx(sigma, rel=0.05)


def test_smooth_content_hardly_matters():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:256, :256]
    ramp = (xx + 2 * yy) / 768.0 + 0.2 * np.sin(xx / 20.0)
    assert plane_sigma(ramp + 0.05 * rng.standard_normal(ramp.shape)) == pytest.approx(0.05, rel=0.06)
    assert plane_sigma(ramp) < 0.005


def test_camera_sample_in_its_own_units():
    noisy, clean = make_noisy_camera()
    assert estimate_sigma(noisy) == pytest.approx(25 / 255, rel=0.1)
    assert estimate_sigma(clean) < 0.3 * 25 / 255
    # units follow the data: the same image on [0, 255]
    assert estimate_sigma(noisy * 255) == pytest.approx(estimate_sigma(noisy) * 255, rel=1e-6)


def test_stack_rgb_and_axes():
    noisy, _ = make_noisy_stack(shape=(8, 64, 64))
    per_plane = estimate_sigma_planes(noisy)
    assert per_plane.shape == (8,)
    assert estimate_sigma(noisy) == pytest.approx(np.median(per_plane))
    rng = np.random.default_rng(2)
    rgb = 0.5 + 0.1 * rng.standard_normal((64, 64, 3))
    assert estimate_sigma(rgb, rgb=True) == pytest.approx(0.1, rel=0.1)
    assert estimate_sigma(np.moveaxis(rgb, -1, 0), axes="CYX") == pytest.approx(0.1, rel=0.1)
    # X before Y is read in the right orientation
    assert estimate_sigma(rgb[..., 0].T, axes="XY") == pytest.approx(plane_sigma(rgb[..., 0]))


def test_large_stacks_are_sampled():
    stack = np.random.default_rng(3).standard_normal((100, 16, 16))
    assert estimate_sigma_planes(stack).shape == (32,)


def test_degenerate_input():
    assert math.isnan(plane_sigma(np.ones((1, 10))))
    assert math.isnan(estimate_sigma(np.full((8, 8), np.nan)))
    with pytest.raises(ValueError, match="empty"):
        estimate_sigma(np.zeros((0, 8)))
    with pytest.raises(ValueError, match="2-D"):
        plane_sigma(np.zeros((2, 4, 4)))


def test_padding_and_clipped_background_are_left_out():
    rng = np.random.default_rng(4)
    x = 100 + 5 * rng.standard_normal((256, 256))
    x[:, :140] = 0  # black padding over more than half the blocks: the estimate was 0
    assert plane_sigma(x) == pytest.approx(5, rel=0.05)
    saturated = np.minimum(x, np.percentile(x[:, 140:], 30))  # a saturated majority
    saturated[:, :140] = 0
    assert plane_sigma(saturated) > 1
    assert plane_sigma(np.zeros((8, 8))) == 0.0 and plane_sigma(np.full((8, 8), 7, np.uint8)) == 0.0


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.5, 2.5])
def test_low_noise_on_integer_data_is_not_stuck_on_a_few_values(sigma):
    rng = np.random.default_rng(5)
    x = np.clip(rng.normal(100, sigma, (512, 512)).round(), 0, 255).astype(np.uint8)
    observed = float(np.std(x.astype(np.float64) - 100))  # the noise after rounding
    # the plain median of multiples of 0.5 gave 0.741 for sigma 0.5 and 1.0, 2.224 for 2.0 and 2.5
    assert plane_sigma(x) == pytest.approx(observed, rel=0.06)
    assert plane_sigma(x.astype(np.float32)) == plane_sigma(x)  # integer values in a float array
    # 8-bit data scaled to [0, 1] are as quantised: 0.741 / 255 for sigma 1 and 2.224 / 255 for 2
    assert plane_sigma(x / 255.0) * 255 == pytest.approx(plane_sigma(x), rel=0.01)
    assert plane_sigma((x / 255.0).astype(np.float32)) * 255 == pytest.approx(plane_sigma(x), rel=0.01)


def test_integer_data_with_huge_values_is_estimated_in_little_memory(monkeypatch):
    import napari_addunet.engine.noise_estimate as ne

    rng = np.random.default_rng(6)
    x = (1000 + 5 * rng.standard_normal((64, 64))).round().astype(np.int32)
    clean = plane_sigma(x)
    asked = []
    real = np.bincount

    def bincount(values, *args, **kwargs):  # a bin per integer up to the largest: 2^31 of them
        asked.append(int(values.max()) + 1)
        if asked[-1] > 10**7:
            raise MemoryError(f"{asked[-1]} bins")
        return real(values, *args, **kwargs)

    monkeypatch.setattr(ne.np, "bincount", bincount)
    hot = x.copy()
    hot[10, 10] = 2**31 - 1  # one saturated pixel
    assert plane_sigma(hot) == pytest.approx(clean, rel=0.05)
    assert all(n <= 10**7 for n in asked)
