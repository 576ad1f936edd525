from __future__ import annotations

import pytest
import torch

import napari_addunet as na
from napari_addunet.engine.devices import DeviceError


def test_cpu_and_auto():
    assert na.resolve_device("cpu") == torch.device("cpu")
    assert na.resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = na.resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        assert auto.type == "mps"
    else:
        assert auto == torch.device("cpu")
    names = [d.name for d in na.available_devices()]
    assert names[-1] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        na.resolve_device("cuda:0")


def test_nonexistent_cuda_index_or_unknown_device():
    with pytest.raises(DeviceError):
        na.resolve_device(f"cuda:{torch.cuda.device_count() + 3}")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        na.resolve_device("tpu")


def test_mps_by_index_is_read_as_mps():
    # str(torch.device("mps", 0)) is "mps:0": the device an MPS tensor reports
    if torch.backends.mps.is_available():
        assert na.resolve_device(torch.device("mps", 0)).type == "mps"
    else:
        with pytest.raises(DeviceError, match="Apple MPS is not available"):
            na.resolve_device(torch.device("mps", 0))


def test_channels_last_is_preferred_on_cpu_with_onednn_not_on_mps():
    from napari_addunet.engine.devices import prefers_channels_last

    assert prefers_channels_last(torch.device("cpu")) is bool(torch.backends.mkldnn.is_available())
    assert prefers_channels_last(torch.device("cuda")) is True
    assert prefers_channels_last(torch.device("mps")) is False


def test_volumetric_layers_keep_their_layout():
    from napari_addunet.engine.devices import use_fast_layout

    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.Conv2d(4, 4, 3))
    assert use_fast_layout(net, torch.device("cpu")) is False
    assert all(p.is_contiguous() for p in net.parameters())


def test_cpu_zero_is_the_cpu():
    assert na.resolve_device("cpu:0") == torch.device("cpu")
    assert na.resolve_device(torch.device("cpu", 0)) == torch.device("cpu")
