"""Convolution chains computed in bands of rows: the same values as the whole pass, less memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_addunet.models.banded import band_halo, run_in_bands


def chain(*layers: nn.Module) -> list[nn.Module]:
    torch.manual_seed(0)
    seq = nn.Sequential(*layers).eval()
    for m in seq.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics that are not the identity
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return list(seq)


CHAINS = {
    "two 3x3": lambda: chain(
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1)
    ),
    "9x9 then 1x1": lambda: chain(nn.Conv2d(3, 5, 9, padding=4), nn.LeakyReLU(0.1), nn.Conv2d(5, 2, 1)),
    "dilated, batch norm": lambda: chain(
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 5, padding=2),
    ),
    "non-square kernel": lambda: chain(
        nn.Conv2d(2, 3, (5, 3), padding=(2, 1)), nn.ReLU(), nn.Conv2d(3, 3, (3, 7), padding=(1, 3))
    ),
}


@pytest.mark.parametrize("name", CHAINS)
@pytest.mark.parametrize("rows", [1, 4, 7, 50])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bands_match_the_whole_pass(name, rows, channels_last):
    layers = CHAINS[name]()
    c = layers[0].in_channels
    x = torch.randn(2, c, 23, 17)
    if channels_last:
        layers = [m.to(memory_format=torch.channels_last) for m in layers]
        x = x.contiguous(memory_format=torch.channels_last)
    before = x.clone()
    with torch.no_grad():
        whole = nn.Sequential(*layers)(x)
        banded = run_in_bands(layers, x, rows)
    torch.testing.assert_close(banded, whole, rtol=0, atol=1e-6)
    assert torch.equal(x, before)  # the input is only read
    assert banded.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_halo_is_the_sum_of_row_paddings():
    assert band_halo(CHAINS["two 3x3"]()) == 2
    assert band_halo(CHAINS["9x9 then 1x1"]()) == 4
    assert band_halo(CHAINS["dilated, batch norm"]()) == 4
    assert band_halo(CHAINS["non-square kernel"]()) == 3


@pytest.mark.parametrize(
    "layers",
    [
        [nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1)],  # must start with a convolution
        [nn.Conv2d(2, 2, 3, padding=1, stride=2)],
        [nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")],
        [nn.Conv2d(2, 2, 3, padding=0)],  # not 'same'
        [nn.Conv2d(2, 2, 3, padding="same")],
        [nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)],  # training mode: batch statistics
        [nn.Conv2d(2, 2, 3, padding=1), nn.MaxPool2d(2)],
        [],
    ],
)
def test_chains_that_cannot_be_banded_are_refused(layers):
    assert band_halo(layers) is None
    if layers:
        with pytest.raises(ValueError, match="cannot be computed in bands"):
            run_in_bands(layers, torch.zeros(1, 2, 8, 8), 2)


def test_rows_must_be_positive():
    with pytest.raises(ValueError, match="rows must be at least 1"):
        run_in_bands(CHAINS["two 3x3"](), torch.zeros(1, 4, 8, 8), 0)
