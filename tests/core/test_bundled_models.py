"""The bundled weights: they load in a fresh install and still denoise as when they were made."""

from __future__ import annotations

from pathlib import Path

import pytest

import napari_addunet as na
from napari_addunet.engine.evaluation import SELF_CHECK_SIGMAS, self_check


def test_load_model_without_arguments_returns_the_bundled_denoiser():
    model = na.load_model()
    assert model.architecture == "addunet"
    assert "addunet-gray-blind" in na.bundled_models()
    assert Path(model.source_path) == Path(na.bundled_models()["addunet-gray-blind"])
    training = model.metadata["training"]
    assert "command" in training and "Train400" in str(training)


@pytest.mark.parametrize("name", ["addunet-gray-blind", "addunet-fashion-mnist"])
def test_bundled_denoiser_improves_psnr_as_recorded(name):
    """Recompute the self-check stored when the weights were made (camera crop, sigma 15/25/50)."""
    model = na.load_model(name)
    recorded = model.metadata["self_check"]
    now = self_check(model)
    assert set(now) == {f"{s:g}" for s in SELF_CHECK_SIGMAS} == set(recorded)
    for sigma, row in now.items():
        # a real denoiser: clearly above the noisy input at every noise level
        assert row["psnr"] > row["input_psnr"] + 2.0, (sigma, row)
        # the same weights as the ones that were checked when the file was made
        assert row["psnr"] == pytest.approx(recorded[sigma]["psnr"], abs=0.02), (sigma, row, recorded[sigma])
        assert row["input_psnr"] == pytest.approx(recorded[sigma]["input_psnr"], abs=1e-3)
