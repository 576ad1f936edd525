"""The exponential moving average of weights used by training (``ema_decay``)."""

from __future__ import annotations

import pytest
import torch

from napari_addunet.engine.weight_average import WeightAverage


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))


def fill(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_updates_follow_the_warm_up_then_the_decay():
    model = Tiny()
    fill(model, 0.0)
    avg = WeightAverage(model, 0.5)
    fill(model, 1.0)
    model.count.fill_(7)
    avg.update(model)  # first rate: min(0.5, 1 / 10) = 0.1 -> 0.1 * 0 + 0.9 * 1
    assert torch.allclose(avg.tensors["conv.weight"], torch.full_like(avg.tensors["conv.weight"], 0.9))
    assert int(avg.tensors["count"]) == 7  # integer buffers are copied
    assert avg.rate() == pytest.approx(2 / 11)
    for _ in range(20):
        avg.update(model)
    assert avg.rate() == 0.5  # the warm-up has reached the decay
    fill(model, 3.0)
    before = avg.tensors["conv.bias"].clone()
    avg.update(model)
    assert torch.allclose(avg.tensors["conv.bias"], 0.5 * before + 0.5 * 3.0)


def test_applied_swaps_the_average_in_and_restores_the_model_even_on_error():
    model = Tiny()
    fill(model, 0.0)
    avg = WeightAverage(model, 0.9)
    fill(model, 2.0)
    with avg.applied(model):
        assert float(model.conv.weight.detach().abs().max()) == 0.0
    assert torch.all(model.conv.weight == 2.0)
    with pytest.raises(RuntimeError, match="boom"), avg.applied(model):
        raise RuntimeError("boom")
    assert torch.all(model.conv.weight == 2.0)


def test_state_round_trip_and_mismatches_are_refused():
    model = Tiny()
    avg = WeightAverage(model, 0.9)
    fill(model, 1.0)
    avg.update(model)
    again = WeightAverage(Tiny(), 0.9)
    again.load_state_dict(avg.state_dict())
    assert again.updates == 1
    assert all(torch.equal(again.tensors[k], avg.tensors[k]) for k in avg.tensors)

    other = torch.nn.Conv2d(1, 3, 3)
    with pytest.raises(ValueError, match="does not belong"):
        WeightAverage(other, 0.9).load_state_dict(avg.state_dict())
    wide = Tiny()
    wide.conv = torch.nn.Conv2d(1, 4, 3)
    with pytest.raises(ValueError, match="shape"):
        WeightAverage(wide, 0.9).load_state_dict(avg.state_dict())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5])
def test_a_decay_outside_the_open_interval_is_refused(decay):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        WeightAverage(Tiny(), decay)
