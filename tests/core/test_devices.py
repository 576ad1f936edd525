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
