"""Denoising a layer snapshot into new layer data (no napari needed)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_addunet import create_model
from napari_addunet.engine.inference import InferenceCancelled, denoise
from napari_addunet.engine.layer_run import (
    LayerError,
    LayerSnapshot,
    iter_layer_denoise,
    run_layer_denoise,
)
from napari_addunet.engine.readout import METADATA_KEY


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("addunet", width=4, kernels=(3, 3)).eval()


def _snapshot(data, **kw):
    return LayerSnapshot(
        name="cells", data=data, scale=(2.0, 1.0, 1.0)[-data.ndim :], translate=(0.0,) * data.ndim, **kw
    )


def test_layers_carry_name_geometry_and_record(model):
    stack = np.random.default_rng(0).random((5, 32, 32)).astype(np.float32)
    result = run_layer_denoise(
        model, _snapshot(stack, axis_labels=("z", "y", "x")), residual=True, device="cpu"
    )
    (den, den_kw, kind), (res, res_kw, _) = result.layers
    assert kind == "image" and den_kw["name"] == "cells [denoised]" and res_kw["name"] == "cells [residual]"
    assert den_kw["scale"] == (2.0, 1.0, 1.0) and den_kw["axis_labels"] == ("z", "y", "x")
    np.testing.assert_allclose(den, denoise(model, stack, device="cpu"), rtol=1e-6)
    np.testing.assert_allclose(res, stack - den, atol=1e-6)
    record = den_kw["metadata"][METADATA_KEY]
    assert record["input_name"] == "cells" and record["plane_grid"] == (5,) and record["gates"] is None
    assert result.record.megapixels == pytest.approx(5 * 32 * 32 / 1e6)
    assert result.record.sigma_before > 0 and result.record.sigma_after > 0  # an untrained model
    rows = dict(result.record.rows())
    assert rows["gates"] == "learned" and rows["axes"] == "ZYX"
    assert rows["megapixels"] == pytest.approx(0.00512)  # not rounded to 0.005 before it is shown


def test_gates_are_recorded_and_used(model):
    image = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    result = run_layer_denoise(model, _snapshot(image), gates=(0.0, 2.0), device="cpu")
    assert result.record.gates == (0.0, 2.0)
    np.testing.assert_allclose(
        result.denoised, denoise(model, image, gates=(0.0, 2.0), device="cpu"), rtol=1e-6
    )
    assert result.layers[0][1]["metadata"][METADATA_KEY]["gates"] == (0.0, 2.0)


def test_classification_per_plane():
    torch.manual_seed(0)
    clf = create_model("addunet", width=4, kernels=(3, 3), num_classes=3).eval()
    stack = np.random.default_rng(2).random((6, 24, 24)).astype(np.float32)
    result = run_layer_denoise(clf, _snapshot(stack), device="cpu")
    assert result.record.probabilities.shape == (6, 3) and len(result.record.labels) == 6
    assert result.record.class_names == ["class_0", "class_1", "class_2"]
    off = run_layer_denoise(clf, _snapshot(stack), device="cpu", classify=False)
    assert off.record.probabilities is None


def test_classify_without_head_is_refused_before_any_work(model):
    gen = iter_layer_denoise(model, _snapshot(np.zeros((8, 8), np.float32)), classify=True)
    with pytest.raises(LayerError, match="no classification head"):
        next(gen)


def test_cancel_gives_no_result(model):
    cancel = threading.Event()
    gen = iter_layer_denoise(
        model, _snapshot(np.zeros((10, 64, 64), np.float32)), cancel=cancel, device="cpu", tile=32
    )
    next(gen)
    cancel.set()
    with pytest.raises(InferenceCancelled):
        for _ in gen:
            pass


@pytest.mark.parametrize("at", ["estimating the noise", "end"])
def test_cancel_after_the_last_tile_still_gives_no_result(model, at, monkeypatch):
    import napari_addunet.engine.layer_run as layer_run

    cancel = threading.Event()
    if at == "end":  # set while the noise is being estimated, after the check before it
        real = layer_run._sigma
        monkeypatch.setattr(layer_run, "_sigma", lambda *a: (cancel.set(), real(*a))[1])
    gen = iter_layer_denoise(model, _snapshot(np.zeros((32, 32), np.float32)), cancel=cancel, device="cpu")
    with pytest.raises(InferenceCancelled, match="no layer was added"):
        for event in gen:
            if at in getattr(event, "message", ""):
                cancel.set()


class FakeLayer:
    """Just enough of a napari layer."""

    class Affine:
        affine_matrix = np.eye(3)

    def __init__(self, data, cls_name="Image", multiscale=False):
        self.__class__ = type(cls_name, (FakeLayer,), {})
        self.name, self.data, self.multiscale, self.rgb = "fake", data, multiscale, False
        self.scale, self.translate, self.rotate, self.shear = (1.0, 1.0), (0.0, 0.0), np.eye(2), np.zeros(1)
        self.affine, self.axis_labels, self.units, self.contrast_limits = (
            self.Affine(),
            ("y", "x"),
            None,
            (0.0, 1.0),
        )


def test_snapshot_checks_the_layer():
    snap = LayerSnapshot.from_layer(FakeLayer(np.zeros((4, 4))))
    assert snap.geometry()["axis_labels"] == ("y", "x")
    with pytest.raises(LayerError, match="Labels layer"):
        LayerSnapshot.from_layer(FakeLayer(np.zeros((4, 4)), "Labels"))
    with pytest.raises(LayerError, match="empty"):
        LayerSnapshot.from_layer(FakeLayer(np.zeros((0, 4))))
    with pytest.raises(LayerError, match="multiscale"):
        LayerSnapshot.from_layer(FakeLayer(np.zeros((4, 4)), multiscale=True))


def test_rgba_layers_keep_their_alpha(model):
    rng = np.random.default_rng(3)
    rgba = (100 + 20 * rng.standard_normal((24, 28, 4))).clip(0, 255).astype(np.uint8)
    rgba[..., 3] = np.where(rng.random((24, 28)) > 0.5, 255, 0)
    snap = LayerSnapshot(name="logo", data=rgba, scale=(1.0, 1.0), translate=(0.0, 0.0), rgb=True)
    result = run_layer_denoise(model, snap, residual=True, device="cpu")
    (den, _, _), (res, _, _) = result.layers
    assert den.shape == rgba.shape
    np.testing.assert_array_equal(den[..., 3], rgba[..., 3])  # alpha untouched, not denoised
    # the residual shows where the input's pixels are (its alpha was 255 - 255 = 0: invisible)
    np.testing.assert_array_equal(res[..., 3], rgba[..., 3])
    np.testing.assert_allclose(res[..., :3], rgba[..., :3].astype(np.float32) - den[..., :3], atol=1e-4)
    np.testing.assert_allclose(
        den[..., :3], denoise(model, rgba[..., :3], axes="YXC", device="cpu"), rtol=1e-6
    )
    # the noise estimate is of the colours: a constant alpha would pull the median to 0
    from napari_addunet.engine.noise_estimate import estimate_sigma

    assert result.record.sigma_before == pytest.approx(estimate_sigma(rgba[..., :3], "YXC"))
    assert result.record.megapixels == pytest.approx(24 * 28 * 3 / 1e6)  # the alpha is not processed
    # the same with the axes typed: the alpha is kept, not denoised as a fourth channel
    typed = run_layer_denoise(model, snap, axes="YXC", device="cpu")
    np.testing.assert_array_equal(typed.layers[0][0], den)


def test_a_lazy_layer_is_read_plane_by_plane_for_the_noise_estimate(model, monkeypatch):
    da = pytest.importorskip("dask.array")
    from napari_addunet.engine import layer_run

    given = []
    real = layer_run.estimate_sigma

    def spy(data, axes=None, rgb=None):
        given.append(type(data).__module__.split(".")[0])
        return real(data, axes, rgb)

    monkeypatch.setattr(layer_run, "estimate_sigma", spy)
    stack = np.random.default_rng(5).random((40, 24, 24)).astype(np.float32)
    result = run_layer_denoise(model, _snapshot(da.from_array(stack, chunks=(1, 24, 24))), device="cpu")
    # the input's estimate reads the dask array's sampled planes; it was first loaded whole
    assert given[0] == "dask" and given[1] == "numpy"
    plain = run_layer_denoise(model, _snapshot(stack), device="cpu")
    assert result.record.sigma_before == pytest.approx(plain.record.sigma_before)
