"""Dask input: a lazy result equal to the numpy path, float16, NaN checks, and a LocalCluster run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_addunet.engine.inference import denoise, predict
from napari_addunet.engine.normalization import NonFiniteError
from napari_addunet.models import create_model

da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("addunet", width=4, kernels=(3, 3)).eval()


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    return (np.random.default_rng(0).random((6, 90, 110)) * 3000).astype(np.uint16)


def test_dask_result_is_lazy_and_equal(model, stack):
    expected = denoise(model, stack, device="cpu", tile=48)
    lazy = denoise(model, da.from_array(stack, chunks=(2, 90, 110)), device="cpu", tile=48)
    assert isinstance(lazy, da.Array) and lazy.dtype == np.float32 and lazy.shape == stack.shape
    assert lazy.numblocks[0] == 6  # one plane per block
    np.testing.assert_array_equal(lazy.compute(), expected)  # same tiles, same statistics


def test_dask_chunks_split_in_y_and_x(model, stack):
    expected = denoise(model, stack, device="cpu", tile=48)
    lazy = denoise(model, da.from_array(stack, chunks=(1, 30, 40)), device="cpu", tile=48)
    assert lazy.numblocks[1] > 1 and lazy.numblocks[2] > 1
    # overlapping blocks: equal up to float rounding (relative to the 0..3000 range)
    assert np.abs(lazy.compute() - expected).max() <= 1e-4 * 3000


def test_dask_pooling_model_blocks_are_aligned():
    torch.manual_seed(1)
    pooling = create_model("addunet", width=3, kernels=(3, 3, 3), multiscale=True).eval()
    x = np.random.default_rng(1).random((5, 150, 130), dtype=np.float32)
    expected = denoise(pooling, x, device="cpu", normalization="none", tile=0)
    lazy = denoise(pooling, da.from_array(x, chunks=(1, 50, 45)), device="cpu", normalization="none", tile=96)
    assert np.abs(lazy.compute() - expected).max() <= 1e-4


@pytest.mark.parametrize("ensemble", [1, 8])
def test_dask_last_block_thinner_than_the_overlap_stays_on_the_pooling_grid(ensemble):
    # 290 rows in 128-row blocks leave 34, less than the 40-row overlap this model needs: dask
    # would re-chunk the axis itself and put a block edge at row 250, off the 8-pixel grid.
    torch.manual_seed(0)
    pooling = create_model("addunet", width=4, kernels=(3, 3, 3, 3), multiscale=True).eval()
    assert pooling.size_multiple == 8
    x = np.random.default_rng(1).random((290, 37), dtype=np.float32)
    expected = denoise(pooling, x, axes="YX", device="cpu", tile=0, ensemble=ensemble)
    lazy = denoise(
        pooling, da.from_array(x, chunks=(60, 37)), axes="YX", device="cpu", tile=128, ensemble=ensemble
    )
    assert lazy.numblocks[0] > 1
    assert np.abs(lazy.compute() - expected).max() <= 1e-5


def test_float16_dask_array(model):
    x = (np.random.default_rng(2).random((5, 40, 50)) * 100).astype(np.float16)
    lazy = denoise(model, da.from_array(x, chunks=(1, 20, 50)), device="cpu")
    out = lazy.compute()
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, denoise(model, x, device="cpu"), atol=1e-4 * 100)


def test_dask_channels_split_per_channel(model):
    x = (
        np.random.default_rng(3).random((3, 2, 40, 40), dtype=np.float32)
        * np.array([1, 100])[None, :, None, None]
    )
    expected = denoise(model, x, axes="ZCYX", device="cpu")
    lazy = denoise(model, da.from_array(x, chunks=(3, 2, 40, 40)), axes="ZCYX", device="cpu")
    np.testing.assert_allclose(lazy.compute(), expected, rtol=1e-5, atol=1e-5 * 100)


def test_dask_nan_found_block_by_block(model):
    x = np.random.default_rng(4).random((5, 32, 32), dtype=np.float32)
    x[3, 10, 12] = np.nan
    lazy = denoise(model, da.from_array(x, chunks=(1, 16, 32)), device="cpu")  # building stays cheap
    with pytest.raises(NonFiniteError, match=r"\(z=3, y=10, x=12\)"):
        lazy.compute()
    filled = denoise(model, da.from_array(x, chunks=(1, 16, 32)), device="cpu", nan_policy="mask").compute()
    np.testing.assert_array_equal(np.isnan(filled), np.isnan(x))
    np.testing.assert_allclose(filled, denoise(model, x, device="cpu", nan_policy="mask"), atol=1e-5)


def test_eager_option_and_predict_on_dask(model, stack):
    d = da.from_array(stack, chunks=(1, 90, 110))
    eager = denoise(model, d, device="cpu", lazy=False)
    assert isinstance(eager, np.ndarray)
    np.testing.assert_array_equal(eager, denoise(model, stack, device="cpu"))
    assert isinstance(predict(model, d, device="cpu").denoised, np.ndarray)
    as_dask = denoise(model, stack, device="cpu", lazy=True)
    assert isinstance(as_dask, da.Array)
    # one plane per block against batches of planes: the CPU's channels-last convolutions
    # round differently per batch size, so the two agree to float rounding, not bit for bit
    np.testing.assert_allclose(as_dask.compute(), eager, rtol=1e-6, atol=1e-6 * float(np.abs(eager).max()))
    # predict(lazy=True): fine for a model without a head (nothing to classify now)...
    lazy = predict(model, d, device="cpu", lazy=True)
    assert isinstance(lazy.denoised, da.Array) and lazy.probabilities is None
    # ...and for one with a head, the advice names a call that takes it (was "classify=False")
    headed = create_model("addunet", width=4, kernels=(3, 3), num_classes=2).eval()
    with pytest.raises(ValueError, match=r"napari_addunet.denoise\(\.\.\., lazy=True\)"):
        predict(headed, d, device="cpu", lazy=True)


def test_zarr_to_dask_to_zarr(model, tmp_path):
    zarr = pytest.importorskip("zarr")
    data = (np.random.default_rng(5).random((6, 40, 44)) * 255).astype(np.uint8)
    z = zarr.create_array(
        store=str(tmp_path / "in.zarr"), shape=data.shape, chunks=(1, 20, 44), dtype="uint8"
    )
    z[:] = data
    lazy = denoise(model, da.from_zarr(z), device="cpu")
    lazy.to_zarr(str(tmp_path / "out.zarr"))
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[:]
    assert np.abs(out - denoise(model, data, device="cpu")).max() <= 1e-4 * 255


def test_lazy_graph_pickles(model, stack):
    # what a distributed scheduler does with the graph: the model travels with it
    import pickle

    lazy = denoise(model, da.from_array(stack, chunks=(1, 90, 110)), device="cpu", tile=48)
    copy = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(copy.compute(), lazy.compute())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_local_cluster(model, stack):
    distributed = pytest.importorskip("distributed")
    expected = denoise(model, stack, device="cpu", tile=48)
    d = da.from_array(stack, chunks=(1, 45, 110))
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        lazy = denoise(model, d, device="cpu", tile=48)
        result = client.compute(lazy).result()
    assert np.abs(result - expected).max() <= 1e-4 * 3000
    # the model still works where it is after the cluster ran copies of it
    assert all(p.device.type == "cpu" for p in model.parameters())
