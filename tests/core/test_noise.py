"""Synthetic degradations: blur kernels, noise models, blind-spot masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_addunet.engine.blindspot import blindspot_mask
from napari_addunet.engine.noise import NoiseError, NoiseModel, blur, gaussian_kernel, motion_kernel


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- kernels ------------------------------------------------------------------------------------
def test_gaussian_kernel_is_normalised_symmetric_and_peaked():
    k = gaussian_kernel(7, 1.5)
    assert k.shape == (7, 7) and k.dtype == np.float32
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    assert k.argmax() == 3 * 7 + 3


@pytest.mark.parametrize("angle, axis", [(0, "row"), (90, "col")])
def test_motion_kernel_is_a_line_in_the_motion_direction(angle, axis):
    k = motion_kernel(9, angle)
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    line = k[4, :] if axis == "row" else k[:, 4]
    assert line.sum() == pytest.approx(1.0, abs=1e-5)
    assert (line > 0).sum() == 9


def test_motion_kernel_diagonal_and_length():
    k = motion_kernel(9, 45, length=5)
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    assert k[4, 4] > 0 and k[2, 6] > 0 and k[6, 2] > 0  # up-right and down-left of the centre
    assert k[0, 8] == 0 and k[0, 0] == 0  # beyond the length, and off the line


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: gaussian_kernel(4, 1.0), "odd"),
        (lambda: gaussian_kernel(5, 0.0), "sigma must be > 0"),
        (lambda: motion_kernel(5, 0, length=7), "motion length"),
    ],
)
def test_bad_kernels(call, match):
    with pytest.raises(NoiseError, match=match):
        call()


def test_blur_with_a_delta_is_identity_and_keeps_constants():
    x = torch.rand(3, 1, 12, 10)
    delta = torch.zeros(5, 5)
    delta[2, 2] = 1
    torch.testing.assert_close(blur(x, delta), x)
    const = torch.full((2, 1, 8, 8), 0.7)
    ks = torch.from_numpy(np.stack([gaussian_kernel(5, 1.0), motion_kernel(5, 30)]))
    torch.testing.assert_close(blur(const, ks), const)


def test_blur_is_a_convolution_not_a_correlation():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1
    k = torch.zeros(3, 3)
    k[0, 2] = 1  # impulse response: the kernel itself
    y = blur(x, k)
    assert y[0, 0, 3, 5] == 1


# -- noise models ----------------------------------------------------------------------------------
def test_gaussian_fixed_sigma_has_that_std_and_is_seeded():
    clean = torch.full((4, 1, 64, 64), 0.5)
    nm = NoiseModel(sigma=(25, 25))
    a = nm.degrade(clean, gen(1))
    b = nm.degrade(clean, gen(1))
    c = nm.degrade(clean, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float((a - clean).std()) == pytest.approx(25 / 255, rel=0.03)
    assert a.min() < 0.5 - 3 * 25 / 255  # not clipped


def test_blind_sigma_range_gives_each_image_its_own_level():
    clean = torch.zeros(64, 1, 32, 32)
    noisy = NoiseModel(sigma=(5, 50)).degrade(clean, gen())
    stds = noisy.flatten(1).std(dim=1) * 255
    assert stds.min() > 3.5 and stds.max() < 53
    assert stds.max() - stds.min() > 25


def test_poisson_gaussian_variance_follows_the_signal():
    clean = torch.cat([torch.full((1, 1, 128, 128), 0.2), torch.full((1, 1, 128, 128), 0.8)])
    nm = NoiseModel("poisson_gaussian", sigma=(5, 5), photons=(50, 50))
    noisy = nm.degrade(clean, gen())
    for i, level in enumerate((0.2, 0.8)):
        expected = level / 50 + (5 / 255) ** 2
        assert float((noisy[i] - clean[i]).var()) == pytest.approx(expected, rel=0.1)
        assert float(noisy[i].mean()) == pytest.approx(level, abs=0.01)


def test_blur_then_noise_and_blur_only():
    clean = torch.zeros(2, 1, 32, 32)
    clean[..., 16, 16] = 1
    blurred = NoiseModel("none", blur="gaussian", blur_size=5, blur_sigma=(1, 1)).degrade(clean, gen())
    torch.testing.assert_close(blurred[0, 0, 14:19, 14:19], torch.from_numpy(gaussian_kernel(5, 1.0)))
    moved = NoiseModel("gaussian", sigma=(10, 10), blur="motion", blur_size=7).degrade(clean, gen())
    assert moved.shape == clean.shape


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "salt"}, "unknown noise model"),
        ({"blur": "box"}, "unknown blur"),
        ({"sigma": (30, 10)}, "sigma range"),
        ({"photons": (0, 10)}, "photons range"),
        ({"kind": "none"}, "degrades nothing"),
        ({"blur": "gaussian", "blur_size": 4}, "odd"),
    ],
)
def test_bad_noise_settings(kwargs, match):
    with pytest.raises(NoiseError, match=match):
        NoiseModel(**kwargs)


def test_describe_is_json():
    text = json.dumps(NoiseModel("poisson_gaussian", blur="gaussian").describe())
    assert "photons_at_1" in text and "sigma_255" in text


# -- blind spots -------------------------------------------------------------------------------------
def test_blindspot_replaces_masked_pixels_by_a_neighbour_never_themselves():
    h = w = 24
    values = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).repeat(3, 1, 1, 1)
    masked, mask = blindspot_mask(values, fraction=1 / 16, radius=2, generator=gen())
    assert mask.dtype == torch.bool and mask.shape == (3, 1, h, w)
    assert int(mask.sum()) == 3 * (h // 4) * (w // 4)  # one per 4x4 cell
    torch.testing.assert_close(masked[~mask.expand_as(masked)], values[~mask.expand_as(values)])
    b, _, ys, xs = torch.nonzero(mask, as_tuple=True)
    src = masked[b, 0, ys, xs].long()
    sy, sx = src // w, src % w
    assert torch.all((sy != ys) | (sx != xs))
    assert torch.all((sy - ys).abs() <= 2) and torch.all((sx - xs).abs() <= 2)


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.25])
def test_blindspot_masks_about_the_fraction_asked_and_never_every_pixel(fraction):
    _, mask = blindspot_mask(torch.rand(4, 1, 64, 64), fraction, 2, gen())
    share = float(mask.float().mean())
    assert 0.5 * fraction <= share <= fraction * 1.5 and share <= 0.25


@pytest.mark.parametrize("fraction", [0.3, 0.45, 0.5, 0.0])
def test_blindspot_refuses_fractions_that_would_mask_whole_cells(fraction):
    with pytest.raises(ValueError, match=r"mask fraction must be in \(0, 0.25\]"):
        blindspot_mask(torch.rand(1, 1, 32, 32), fraction, 2, gen())
    from napari_addunet.engine.training_config import TrainingConfig

    with pytest.raises(ValueError, match="mask_fraction"):
        TrainingConfig.from_dict({"mask_fraction": fraction})


def test_blindspot_is_seeded():
    x = torch.rand(2, 1, 16, 16)
    a = blindspot_mask(x, 0.05, 3, gen(5))
    b = blindspot_mask(x, 0.05, 3, gen(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="radius"):
        blindspot_mask(x, 0.05, 8, gen())
