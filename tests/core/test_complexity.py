"""Multiply-accumulates per pixel, counted on the real layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import napari_addunet as na
from napari_addunet.engine.complexity import macs_per_pixel


def test_one_convolution_counts_its_kernel():
    model = nn.Conv2d(3, 5, 3, padding=1)
    model.in_channels = 3
    assert macs_per_pixel(model, size=16) == 3 * 5 * 9


@pytest.mark.parametrize("size", [64, 512])  # 512: tall enough for the banded no-gradient pass
def test_dncnn_matches_the_hand_count(size):
    first, middle, last = 1 * 64 * 9, 15 * 64 * 64 * 9, 64 * 1 * 9
    assert macs_per_pixel(na.create_model("dncnn"), size=size) == first + middle + last


def test_addunet_count_does_not_depend_on_banding():
    """A multi-scale Real AddUNet runs level 0 in bands without calling its layer modules;
    the count must still see every layer, at any size."""
    torch.manual_seed(0)
    model = na.create_model("addunet", width=8, kernels=(3, 3, 3), multiscale=True, convs_per_level=2)
    small, large = macs_per_pixel(model, size=32), macs_per_pixel(model, size=256)
    c = 8
    level0 = 1 * c * 9 + 4 * c * c * 9 + c * 1  # stem, 2 encoder + 2 decoder convs, output
    assert small == large
    assert small > level0


def test_a_bundled_name_is_measured_and_bad_arguments_are_named():
    by_name = macs_per_pixel("addunet-gray-blind", size=32)
    assert by_name == macs_per_pixel(na.load_model("addunet-gray-blind"), size=32)
    assert na.receptive_field("addunet-gray-blind") == na.receptive_field(na.load_model())
    for size in (0, -4, 1.5, True):
        with pytest.raises(ValueError, match="size must be a positive number of pixels"):
            macs_per_pixel(na.create_model("dncnn", depth=3, width=4), size=size)
    with pytest.raises(TypeError, match="expected a model, a .safetensors file .* got int"):
        macs_per_pixel(5)
    with pytest.raises(na.CheckpointError, match="no bundled model named 'addunet'"):
        na.receptive_field("addunet")  # an architecture's name is not a model
    with pytest.raises(TypeError, match="load_model takes a .safetensors file .* got int"):
        na.load_model(5)


def test_a_failing_count_leaves_the_model_in_its_training_mode():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("not today")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="not today"):
        macs_per_pixel(model, size=16)
    assert model.training and not model.conv._forward_hooks


def test_half_precision_models_are_counted_like_float32_ones():
    model = na.create_model("unet", base_width=2, depth=1)
    expected = na.macs_per_pixel(model, size=8)
    assert na.macs_per_pixel(model.half(), size=8) == expected  # was a dtype mismatch error
