"""Percentiles of the noisy image: training with synthetic noise maps pairs as inference will."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata

from napari_addunet.engine.datasets import clean_data, noisy_data
from napari_addunet.engine.noise import NoiseModel
from napari_addunet.engine.noisy_percentiles import SAMPLE, NoisyPercentiles, pixel_sample


def counts(img: np.ndarray, low: float = 100, high: float = 3000) -> np.ndarray:
    """A 16-bit microscope-like image: ``img`` stretched to ``low``..``high`` counts."""
    a = img.astype(np.float64)
    return (low + (a - a.min()) / (a.max() - a.min()) * (high - low)).astype(np.uint16)


def measured(raw: np.ndarray, noisy: np.ndarray, low: float = 0.1, high: float = 99.9) -> tuple[float, float]:
    """The noisy image's percentiles in the clean image's normalised units."""
    lo, hi = np.percentile(raw, [low, high])
    lo_n, hi_n = np.percentile(noisy, [low, high])
    return (lo_n - lo) / (hi - lo), (hi_n - lo_n) / (hi - lo)


def test_gaussian_estimate_matches_the_percentiles_of_a_really_noisy_image():
    raw = counts(skdata.camera())
    data = clean_data([raw])
    assert data.normalization["method"] == "percentile"
    est = NoisyPercentiles(data.pixel_samples, data.percentile_points, 0.1, 99.9, "gaussian")
    lo, hi = np.percentile(raw, [0.1, 99.9])
    for sigma in (15, 25, 50):
        noisy = raw + sigma / 255 * (hi - lo) * np.random.default_rng(sigma).standard_normal(raw.shape)
        true_lo, true_scale = measured(raw, noisy)
        got_lo, got_scale = est.affine(0, sigma)
        assert got_lo == pytest.approx(true_lo, abs=0.01)
        assert got_scale == pytest.approx(true_scale, abs=0.015)
    assert measured(raw, noisy)[1] > 1.4  # at sigma 50 the noisy range is much wider: it matters


def test_poisson_gaussian_estimate_matches_a_really_noisy_image():
    raw = counts(skdata.moon(), 0, 4000)
    data = clean_data([raw])
    est = NoisyPercentiles(data.pixel_samples, data.percentile_points, 0.1, 99.9, "poisson_gaussian")
    lo, hi = np.percentile(raw, [0.1, 99.9])
    x = (raw - lo) / (hi - lo)
    rng = np.random.default_rng(3)
    photons, sigma = 8.0, 10.0
    y = rng.poisson(np.clip(x, 0, None) * photons) / photons + sigma / 255 * rng.standard_normal(x.shape)
    true_lo, true_scale = measured(x, y)
    got_lo, got_scale = est.affine(0, sigma, photons)
    assert got_lo == pytest.approx(true_lo, abs=0.02)
    assert got_scale == pytest.approx(true_scale, abs=0.03)
    assert true_scale > 1.2


def test_no_noise_changes_nothing_and_sigmas_between_whole_ones_interpolate():
    data = clean_data([counts(skdata.camera())])
    est = NoisyPercentiles(data.pixel_samples, data.percentile_points, 0.1, 99.9, "gaussian")
    assert est.affine(0, 0.0) == (0.0, 1.0)
    a, b, mid = est.affine(0, 20.0), est.affine(0, 21.0), est.affine(0, 20.25)
    assert mid[0] == pytest.approx(0.75 * a[0] + 0.25 * b[0])
    assert mid[1] == pytest.approx(0.75 * a[1] + 0.25 * b[1])
    assert b[1] > a[1] > 1.0 and b[0] < a[0] < 0.0


def test_planes_share_their_stack_estimate_and_channels_get_their_own():
    cam, moon = counts(skdata.camera()[:128, :128]), counts(skdata.moon()[:128, :128], 0, 60000)
    stack = np.stack([cam, moon, cam, moon, cam])  # 5 planes: normalised as one stack
    channels = np.stack([cam, moon])  # 2 planes: maybe channels, normalised apart
    data = clean_data([stack, channels])
    s = data.pixel_samples
    assert len(s) == 7 and all(s[i] is s[0] for i in range(5))
    assert s[5] is not s[6]
    est = NoisyPercentiles(s, data.percentile_points, 0.1, 99.9, "gaussian")
    assert len(est.images) == 3
    assert est.affine(0, 30) == est.affine(4, 30)
    # a subset (a validation split) keeps each plane's sample
    sub = data.subset([4, 6])
    assert sub.pixel_samples[0] is s[4] and sub.pixel_samples[1] is s[6]


def test_samples_only_where_percentiles_meet_synthetic_noise():
    eight_bit = clean_data([skdata.camera()])  # 8-bit: the fixed range 0..255
    assert eight_bit.normalization["method"] == "range" and eight_bit.pixel_samples is None
    assert noisy_data([counts(skdata.camera())]).pixel_samples is None
    small = clean_data([counts(skdata.camera()[:128, :128])])
    assert small.pixel_samples[0].values is small.inputs[0]  # a small image is its own sample
    big = np.zeros((600, 600), np.uint16)
    assert pixel_sample(big).values.size == SAMPLE and pixel_sample(big[:100]).values.size == 60000
    # a large image: every pixel of its tails, and a weighted sample of the rest
    spots = np.zeros((600, 600), np.uint16)
    spots.flat[::997] = 500  # 362 bright pixels, 0.1 %
    sample = pixel_sample(spots)
    assert (sample.values == 500).sum() == 362 and sample.weights[sample.values == 500].tolist() == [
        1.0
    ] * 362
    assert sample.weights.sum() == pytest.approx(spots.size)


def test_unknown_noise_kind_is_refused():
    with pytest.raises(ValueError, match="noise model 'none'"):
        NoisyPercentiles([np.zeros(4)], [(0.0, 1.0)], 0.1, 99.9, "none")


def test_degrade_with_levels_draws_exactly_what_degrade_draws():
    clean = torch.rand(4, 1, 16, 16)
    for model in (NoiseModel(sigma=(5, 50)), NoiseModel("poisson_gaussian", sigma=(0, 10), photons=(5, 50))):
        plain = model.degrade(clean, torch.Generator().manual_seed(1))
        noisy, sigma, photons = model.degrade_with_levels(clean, torch.Generator().manual_seed(1))
        torch.testing.assert_close(plain, noisy, rtol=0, atol=0)
        assert sigma.shape == (4,) and ((sigma >= 5) & (sigma <= 50)).all() or model.kind != "gaussian"
        assert (photons is None) == (model.kind == "gaussian")


@pytest.mark.parametrize("spots", [240, 300])  # about 0.1 % of the pixels: either side of the switch
def test_a_large_sparse_image_is_estimated_with_the_mapping_its_pixels_got(spots):
    from napari_addunet.engine.normalization import percentile_bounds

    raw = np.zeros((512, 512), np.uint16)
    rng = np.random.default_rng(9)
    raw.flat[rng.choice(raw.size, spots, replace=False)] = 40000
    data = clean_data([raw])
    est = NoisyPercentiles(data.pixel_samples, data.percentile_points, 0.1, 99.9, "gaussian")
    lo, hi = percentile_bounds(raw.astype(np.float64).ravel(), 0.1, 99.9)  # how the clean one was mapped
    for sigma in (5, 25):
        noisy = raw + sigma / 255 * (hi - lo) * np.random.default_rng(sigma).standard_normal(raw.shape)
        n_lo, n_hi = percentile_bounds(noisy.ravel(), 0.1, 99.9)  # how inference maps the noisy one
        got_lo, got_scale = est.affine(0, sigma)
        # the sample's own percentiles picked the other mapping: scales 8 times too wide
        assert got_lo == pytest.approx((n_lo - lo) / (hi - lo), abs=0.02)
        assert got_scale == pytest.approx((n_hi - n_lo) / (hi - lo), rel=0.1)
