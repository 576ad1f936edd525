"""Sample data, opened through the plugin in a real napari viewer, and as plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_addunet import _sample_data

PLUGIN = "napari-addunet"


def _noise_rms(noisy: np.ndarray, clean: np.ndarray) -> float:
    return float(np.sqrt(np.mean((noisy.astype(np.float64) - clean.astype(np.float64)) ** 2)))


def test_open_noisy_2d_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "noisy_2d")

    assert [layer.name for layer in viewer.layers] == ["camera [clean]", "camera [noisy]"]
    clean, noisy = (viewer.layers[name] for name in ("camera [clean]", "camera [noisy]"))
    for layer in (clean, noisy):
        assert layer.data.shape == (512, 512)
        assert layer.data.dtype == np.float32
        assert layer.ndim == 2
    assert clean.data.min() >= 0.0 and clean.data.max() <= 1.0
    # Unclipped Gaussian noise of sigma 25/255, within sampling error (262144 draws).
    assert _noise_rms(noisy.data, clean.data) == pytest.approx(25 / 255, rel=0.02)
    assert float(np.mean(noisy.data - clean.data)) == pytest.approx(0.0, abs=2e-3)
    assert noisy.metadata["noise"]["sigma"] == pytest.approx(25 / 255)
    # The noisy image is on top, so it is what the user sees first.
    assert viewer.layers.selection.active is noisy


def test_open_noisy_3d_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "noisy_3d")

    assert [layer.name for layer in viewer.layers] == ["stack [clean]", "stack [noisy]"]
    clean, noisy = (viewer.layers[name] for name in ("stack [clean]", "stack [noisy]"))
    for layer in (clean, noisy):
        assert layer.data.shape == _sample_data.STACK_SHAPE == (32, 128, 128)
        assert layer.data.dtype == np.float32
        assert tuple(layer.scale) == pytest.approx(_sample_data.STACK_SCALE)
    assert viewer.dims.ndim == 3
    assert clean.data.min() >= 0.0 and clean.data.max() == pytest.approx(1.0)

    # Poisson-Gaussian: the noise variance is clean / photons + read_noise**2 on average.
    photons, read = _sample_data.STACK_PHOTONS, _sample_data.STACK_READ_NOISE
    expected = np.sqrt(np.mean(clean.data) / photons + read**2)
    assert _noise_rms(noisy.data, clean.data) == pytest.approx(expected, rel=0.03)
    # ... and it is signal dependent: brighter voxels are noisier.
    residual = noisy.data - clean.data
    bright, dark = clean.data > 0.5, clean.data < 0.1
    assert residual[bright].std() > 2 * residual[dark].std()
    assert noisy.metadata["noise"]["model"] == "poisson-gaussian"


def test_samples_are_deterministic():
    first, second = _sample_data.noisy_3d(), _sample_data.noisy_3d()
    for (a, _, _), (b, _, _) in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    noisy_a, _ = _sample_data.make_noisy_camera(seed=1)
    noisy_b, _ = _sample_data.make_noisy_camera(seed=2)
    assert not np.array_equal(noisy_a, noisy_b)


def test_stack_has_structure():
    """The clean stack is not empty or flat: blobs and filaments stand out from the background."""
    clean = _sample_data.make_clean_stack()
    background = np.median(clean)
    assert background < 0.15
    assert np.mean(clean > 0.3) > 0.01
    # Structure varies along z too (a real 3D stack, not one image repeated).
    assert np.abs(np.diff(clean.mean(axis=(1, 2)))).max() > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"photons": 0}, "photons"), ({"read_noise": -1.0}, "read_noise"), ({"shape": (4, 64, 64)}, "shape")],
)
def test_stack_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _sample_data.make_noisy_stack(**kwargs)
