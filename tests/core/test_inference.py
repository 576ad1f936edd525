"""The inference API on numpy-like input: layouts, dtypes, bad input, gates, devices, progress, cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_addunet.engine.axes import AxesError
from napari_addunet.engine.devices import DeviceError
from napari_addunet.engine.inference import (
    EmptyInputError,
    InferenceCancelled,
    PredictResult,
    Progress,
    denoise,
    iter_denoise,
    predict,
)
from napari_addunet.engine.normalization import DTypeError, NonFiniteError, NormalizationError
from napari_addunet.models import DenoiserModel, ModelConfig, create_model
from napari_addunet.models.addunet import GateError


def _tiny(**kw) -> DenoiserModel:
    torch.manual_seed(kw.pop("seed", 0))
    return create_model("addunet", width=4, kernels=(3, 3), **kw).eval()


def _identity(**kw) -> DenoiserModel:
    """AddUNet whose output layer is zero: with the global residual it returns its input."""
    model = _tiny(**kw)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.zero_()
    return model


@pytest.fixture(scope="module")
def model() -> DenoiserModel:
    return _tiny()


@pytest.fixture(scope="module")
def identity() -> DenoiserModel:
    return _identity()


def _run2d(model, x, **kw):
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        t = t[None, None] if t.ndim == 2 else t[None]
        return model(t).denoised[0].numpy().squeeze()


# -- layouts ------------------------------------------------------------------------------------
LAYOUTS = [
    ("YX", (20, 24)),
    ("ZYX", (3, 20, 24)),
    ("TYX", (2, 20, 24)),
    ("TZYX", (2, 3, 20, 24)),
    ("YXC", (20, 24, 3)),
    ("YXC", (20, 24, 4)),
    ("CYX", (2, 20, 24)),
    ("ZCYX", (3, 2, 20, 24)),
    ("CZYX", (2, 3, 20, 24)),
    ("TCYX", (2, 2, 20, 24)),
    ("TZCYX", (2, 2, 2, 20, 24)),
]


@pytest.mark.parametrize(("axes", "shape"), LAYOUTS)
def test_every_layout_is_processed_plane_by_plane(model, axes, shape):
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = denoise(model, data, axes=axes, device="cpu", normalization="none", tile=16, overlap=10)
    assert out.shape == data.shape and out.dtype == np.float32
    # each 2-D plane equals the model on that plane alone
    moved = np.moveaxis(data, [axes.index("Y"), axes.index("X")], [-2, -1]).reshape(-1, 20, 24)
    result = np.moveaxis(out, [axes.index("Y"), axes.index("X")], [-2, -1]).reshape(-1, 20, 24)
    for plane, got in zip(moved, result, strict=True):
        np.testing.assert_allclose(got, _run2d(model, plane), atol=1e-5)


def test_inferred_layouts(model):
    rgb = np.random.default_rng(1).integers(0, 255, (16, 18, 3), dtype=np.uint8)
    result = predict(model, rgb, device="cpu")
    assert result.axes == "YXC" and result.denoised.shape == rgb.shape
    stack = np.random.default_rng(2).random((6, 16, 18), dtype=np.float32)
    assert predict(model, stack, device="cpu").axes == "ZYX"
    with pytest.raises(AxesError, match="axes="):
        denoise(model, stack[:3], device="cpu")
    assert denoise(model, stack[:3], axes="CYX", device="cpu").shape == (3, 16, 18)


def test_channels_are_normalised_per_channel(model):
    rng = np.random.default_rng(3)
    data = np.stack([rng.random((20, 20)) * 10, rng.random((20, 20)) * 5000 + 100]).astype(np.float32)
    both = denoise(model, data, axes="CYX", device="cpu")
    for c in range(2):
        np.testing.assert_allclose(both[c], denoise(model, data[c], device="cpu"), rtol=1e-5, atol=1e-3)


def test_stack_is_normalised_once_for_all_planes(model):
    data = np.random.default_rng(4).random((5, 20, 20)).astype(np.float32) * np.arange(1, 6)[:, None, None]
    stack = denoise(model, data, device="cpu")
    single = denoise(model, data[4], device="cpu")
    assert not np.allclose(stack[4], single, atol=1e-3)  # different statistics: whole stack vs one slice
    np.testing.assert_allclose(denoise(model, data, axes="TYX", device="cpu"), stack)


def test_multichannel_model_takes_channels_together():
    model = _tiny(in_channels=3, seed=5)
    data = np.random.default_rng(5).random((4, 16, 18, 3), dtype=np.float32)
    out = denoise(model, data, axes="ZYXC", device="cpu", normalization="none", tile=0)
    for z in range(4):
        expected = _run2d(model, np.moveaxis(data[z], -1, 0))
        np.testing.assert_allclose(np.moveaxis(out[z], -1, 0), expected, atol=1e-5)
    with pytest.raises(AxesError, match="takes 3 input channels but the data has 2"):
        denoise(model, data[..., :2], axes="ZYXC", device="cpu")


def test_five_d_array(model):
    data = np.random.default_rng(6).random((2, 3, 2, 12, 14), dtype=np.float32)
    with pytest.raises(AxesError, match="Pass axes="):
        denoise(model, data, device="cpu")
    out = denoise(model, data, axes="TZCYX", device="cpu")
    assert out.shape == data.shape and np.isfinite(out).all()
    r = predict(_tiny(num_classes=2), data, axes="TZCYX", device="cpu")
    assert r.plane_axes == "TZC" and r.probabilities.shape == (12, 2)
    assert r.probabilities.reshape(r.plane_grid + (2,)).shape == (2, 3, 2, 2)


# -- dtypes and intensities ----------------------------------------------------------------------
DTYPES = [
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_maps_back_to_input_range(identity, dtype):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    if info is not None:
        lo, hi = max(info.min, -1000), min(info.max, 60000)
        data = rng.integers(lo, hi, (5, 17, 19)).astype(dtype)
    else:
        data = (rng.random((5, 17, 19)) * 500 - 100).astype(dtype)
    out = denoise(identity, data, device="cpu")
    assert out.dtype == np.float32 and out.shape == data.shape
    # identity network: normalise then map back must give the input values
    np.testing.assert_allclose(
        out, data.astype(np.float64), rtol=1e-5, atol=1e-3 * max(1, np.ptp(data)) * 1e-3
    )


def test_output_in_input_units(model):
    x = np.random.default_rng(8).random((24, 24))
    small = denoise(model, x, device="cpu")
    big = denoise(model, x * 1000 + 50, device="cpu")
    np.testing.assert_allclose(big, small * 1000 + 50, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize(
    "dtype,match",
    [(bool, "boolean"), (np.complex64, "complex"), ("U3", "numeric"), (object, "numeric")],
)
def test_refused_dtypes(model, dtype, match):
    data = np.zeros((8, 8), dtype=dtype)
    with pytest.raises(DTypeError, match=match):
        denoise(model, data, device="cpu")


def test_normalization_methods(identity, model):
    x = np.random.default_rng(9).integers(0, 255, (20, 20)).astype(np.uint8)
    for spec in (
        {"method": "range", "low": 0, "high": 255},
        "range",
        "none",
        {"method": "percentile", "low": 1},
    ):
        np.testing.assert_allclose(denoise(identity, x, device="cpu", normalization=spec), x, atol=1e-3)
    a = denoise(model, x, device="cpu", normalization={"method": "range", "low": 0, "high": 255})
    model.metadata["normalization"] = {"method": "range", "low": 0, "high": 255}
    try:
        np.testing.assert_array_equal(denoise(model, x, device="cpu"), a)
    finally:
        model.metadata.pop("normalization")
    for bad in ({"method": "zscore"}, {"method": "percentile", "low": 50, "high": 10}, 3):
        with pytest.raises(NormalizationError):
            denoise(model, x, device="cpu", normalization=bad)


# -- NaN / Inf, empty, tiny -----------------------------------------------------------------------
def test_nan_and_inf_are_named(model):
    x = np.random.default_rng(10).random((5, 16, 16), dtype=np.float32)
    x[1, 3, 5] = np.nan
    x[2, 0, 0] = np.inf
    x[3, 7, 7] = -np.inf
    with pytest.raises(NonFiniteError, match=r"3 of 1280 NaN/Inf.*\(z=1, y=3, x=5\)"):
        denoise(model, x, device="cpu")


@pytest.mark.parametrize("policy", ["fill", "mask"])
def test_nan_policies(model, policy):
    x = np.random.default_rng(11).random((16, 16), dtype=np.float32)
    x[2, 3] = np.nan
    x[5, 5] = np.inf
    out = denoise(model, x, device="cpu", nan_policy=policy)
    bad = ~np.isfinite(x)
    if policy == "fill":
        assert np.isfinite(out).all()
    else:
        np.testing.assert_array_equal(np.isnan(out), bad)
    clean = x.copy()
    clean[bad] = np.median(x[~bad])
    np.testing.assert_allclose(out[~bad], denoise(model, clean, device="cpu")[~bad], atol=1e-5)


def test_all_nan_is_refused(model):
    with pytest.raises(NonFiniteError, match="no finite values"):
        denoise(model, np.full((8, 8), np.nan), device="cpu", nan_policy="fill")
    with pytest.raises(ValueError, match="nan_policy"):
        denoise(model, np.zeros((8, 8)), device="cpu", nan_policy="ignore")


@pytest.mark.parametrize(
    "shape,axes", [((0, 10), None), ((10, 0), None), ((6, 0, 10), None), ((0, 5, 5), "ZYX")]
)
def test_empty_arrays_are_refused(model, shape, axes):
    with pytest.raises(EmptyInputError, match="empty"):
        denoise(model, np.zeros(shape, np.float32), axes=axes, device="cpu")


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (5, 1, 1)])
def test_one_pixel_images(model, shape):
    x = np.random.default_rng(12).random(shape, dtype=np.float32)
    out = denoise(model, x, device="cpu")
    assert out.shape == shape and np.isfinite(out).all()
    pooling = create_model("addunet", width=2, kernels=(3, 3), multiscale=True).eval()
    assert np.isfinite(denoise(pooling, x, device="cpu")).all()


def test_constant_image(identity):
    x = np.full((10, 10), 7, np.uint16)
    np.testing.assert_allclose(denoise(identity, x, device="cpu"), 7.0)


# -- input containers ---------------------------------------------------------------------------
def test_memmap_tifffile_zarr_and_out(model, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    zarr = pytest.importorskip("zarr")
    data = (np.random.default_rng(13).random((6, 30, 32)) * 4000).astype(np.uint16)
    expected = denoise(model, data, device="cpu")
    raw = np.memmap(tmp_path / "a.raw", dtype=np.uint16, mode="w+", shape=data.shape)
    raw[:] = data
    np.testing.assert_array_equal(denoise(model, raw, device="cpu"), expected)
    tifffile.imwrite(tmp_path / "a.tif", data)
    mm = tifffile.memmap(tmp_path / "a.tif")
    np.testing.assert_array_equal(denoise(model, mm, device="cpu"), expected)
    z = zarr.create_array(
        store=str(tmp_path / "a.zarr"), shape=data.shape, chunks=(1, 30, 32), dtype="uint16"
    )
    z[:] = data
    np.testing.assert_array_equal(denoise(model, z, device="cpu"), expected)
    target = zarr.create_array(
        store=str(tmp_path / "o.zarr"), shape=data.shape, chunks=(1, 30, 32), dtype="float32"
    )
    assert denoise(model, z, device="cpu", out=target) is target
    np.testing.assert_array_equal(target[:], expected)
    # int32 is computed in float64 (exact for wide integers): equal up to float32 rounding
    wide = denoise(model, torch.from_numpy(data.astype(np.int32)), device="cpu")
    np.testing.assert_allclose(wide, expected, rtol=1e-5, atol=1e-2)


def test_model_from_checkpoint_path(model, tmp_path):
    pytest.importorskip("safetensors")
    from napari_addunet.engine.checkpoint import save_model

    path = save_model(model, tmp_path / "m.safetensors")
    x = np.random.default_rng(14).random((20, 20), dtype=np.float32)
    np.testing.assert_allclose(
        denoise(str(path), x, device="cpu"), denoise(model, x, device="cpu"), atol=1e-6
    )


# -- gates and devices --------------------------------------------------------------------------
def test_gates_override_for_one_call(model):
    x = np.random.default_rng(15).random((24, 24), dtype=np.float32)
    before = model.gates
    plain = denoise(model, x, device="cpu")
    gated = denoise(model, x, device="cpu", gates=[0.0, 3.0])
    assert model.gates == before
    assert np.abs(gated - plain).max() > 1e-4
    np.testing.assert_array_equal(denoise(model, x, device="cpu"), plain)
    np.testing.assert_allclose(denoise(model, x, device="cpu", gates=list(before)), plain, atol=1e-6)
    with pytest.raises(GateError, match="2 gates"):
        denoise(model, x, device="cpu", gates=[1.0])
    with pytest.raises(GateError, match="non-negative"):
        denoise(model, x, device="cpu", gates=[1.0, -1.0])


class _PlainConv(DenoiserModel):
    architecture = "plain-conv-test"

    def __init__(self) -> None:
        super().__init__(ModelConfig())
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward_features(self, x):
        y = self.conv(x)
        return y, y


def test_gates_on_other_architectures_are_refused():
    with pytest.raises(GateError, match="AddUNet models only"):
        denoise(_PlainConv().eval(), np.zeros((8, 8), np.float32), device="cpu", gates=[1.0])


def test_model_stays_on_its_device(model):
    ptrs = [p.data_ptr() for p in model.parameters()]
    denoise(model, np.zeros((8, 8), np.float32), device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert [p.data_ptr() for p in model.parameters()] == ptrs  # not copied or moved
    assert not model.training
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            denoise(model, np.zeros((8, 8), np.float32), device="cuda")


# -- progress, cancel, predict ------------------------------------------------------------------
def test_progress_events_and_return_value(model):
    x = np.random.default_rng(16).random((3, 40, 40), dtype=np.float32)
    gen = iter_denoise(model, x, axes="ZYX", tile=24, overlap=10, device="cpu")
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert isinstance(result, PredictResult) and result.denoised.shape == x.shape
    assert all(isinstance(e, Progress) for e in events)
    tiles = [e for e in events if e.message.startswith("denoising")]
    assert tiles[-1].done == tiles[-1].total == 3 * result.details["tiles_per_plane"]
    assert [e.done for e in tiles] == sorted(e.done for e in tiles)
    assert tiles[-1].eta_seconds == 0.0 and tiles[-1].fraction == 1.0
    seen = []
    denoise(model, x, axes="ZYX", device="cpu", progress=seen.append)
    assert seen and seen[-1].fraction == 1.0
    pytest.importorskip("tqdm")
    np.testing.assert_allclose(
        denoise(model, x, axes="ZYX", device="cpu", progress=True), result.denoised, atol=1e-5
    )


class _CountingHook:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1


def test_cancel_event_stops_within_one_tile(model):
    x = np.random.default_rng(17).random((2, 60, 60), dtype=np.float32)
    counter = _CountingHook(model)
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.done >= 3:
            cancel.set()

    try:
        with pytest.raises(InferenceCancelled, match="no result"):
            denoise(
                model, x, axes="ZYX", tile=24, overlap=10, device="cpu", cancel=cancel, progress=on_progress
            )
        assert counter.calls == 3  # no tile after the one that saw the cancel
        counter.calls = 0  # a cancel set before the call: no tile runs, and the message says so
        with pytest.raises(InferenceCancelled, match="cancelled before the first tile; no result"):
            denoise(model, x, axes="ZYX", tile=24, overlap=10, device="cpu", cancel=cancel)
        assert counter.calls == 0
        # cancel arriving *during* a tile (another thread): that tile finishes, no more start
        counter.calls = 0
        cancel.clear()
        original = counter.__call__

        def hook(module, args):
            original(module, args)
            if counter.calls == 2:
                cancel.set()

        counter.handle.remove()
        counter.handle = model.register_forward_pre_hook(hook)
        with pytest.raises(InferenceCancelled):
            denoise(model, x, axes="ZYX", tile=24, overlap=10, device="cpu", cancel=cancel)
        assert counter.calls == 2
    finally:
        counter.handle.remove()


def test_closing_the_generator_stops_work(model):
    x = np.random.default_rng(18).random((2, 60, 60), dtype=np.float32)
    counter = _CountingHook(model)
    try:
        gen = iter_denoise(model, x, axes="ZYX", tile=24, overlap=10, device="cpu")
        for p in gen:
            if p.message.startswith("denoising") and p.done == 2:
                break
        gen.close()
        assert counter.calls == 2
    finally:
        counter.handle.remove()


def test_predict_probabilities_tiled_equal_untiled():
    model = _tiny(num_classes=3, seed=19)
    model.metadata["class_names"] = ["a", "b", "c"]
    x = np.random.default_rng(19).random((2, 70, 50), dtype=np.float32)
    tiled = predict(model, x, axes="ZYX", tile=24, overlap=12, device="cpu")
    whole = predict(model, x, axes="ZYX", tile=0, device="cpu")
    assert tiled.details["tiles_per_plane"] > 1
    assert tiled.probabilities.shape == (2, 3) and tiled.class_names == ["a", "b", "c"]
    np.testing.assert_allclose(tiled.probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(tiled.probabilities, whole.probabilities, atol=1e-5)
    assert tiled.labels == whole.labels and set(tiled.labels) <= {"a", "b", "c"}
    no_head = predict(_tiny(), x, axes="ZYX", device="cpu")
    assert no_head.probabilities is None and no_head.class_names is None and no_head.labels is None


def test_bad_settings_are_clear(model):
    x = np.zeros((30, 30), np.float32)
    for kw in ({"tile": -1}, {"overlap": 1.5}, {"batch_size": 0}, {"precision": "float8"}):
        with pytest.raises(ValueError):
            denoise(model, x, device="cpu", **kw)
    with pytest.raises(TypeError, match="numpy, dask or zarr"):
        denoise(model, object(), device="cpu")
    with pytest.raises(ValueError, match="out has shape"):
        denoise(model, x, device="cpu", out=np.zeros((3, 3), np.float32))


def test_out_must_be_a_writable_float_array_of_a_computed_result(model):
    import dask.array as da

    x = np.random.default_rng(3).random((2, 30, 30)).astype(np.float32)
    for bad, error, message in (
        (np.zeros((2, 30, 30), np.uint8), ValueError, "float32 or float64 array .* got uint8"),
        (np.zeros((2, 30, 30), np.float16), ValueError, "got float16: float16 overflows to inf"),
        (np.zeros((2, 30, 30), np.int16), ValueError, "got int16"),
        ([[0.0] * 30] * 30, TypeError, "writable array .* got list"),
    ):
        with pytest.raises(error, match=message):
            denoise(model, x, axes="ZYX", device="cpu", out=bad)
    frozen = np.zeros((2, 30, 30), np.float32)
    frozen.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        denoise(model, x, axes="ZYX", device="cpu", out=frozen)
    lazy_in = da.from_array(x, chunks=(1, 30, 30))
    target = np.zeros((2, 30, 30), np.float32)
    with pytest.raises(ValueError, match="pass lazy=False"):
        denoise(model, lazy_in, axes="ZYX", device="cpu", out=target)
    with pytest.raises(ValueError, match="pass lazy=False"):
        denoise(model, x, axes="ZYX", device="cpu", out=target, lazy=True)
    assert not target.any()
    assert denoise(model, lazy_in, axes="ZYX", device="cpu", out=target, lazy=False) is target
    np.testing.assert_allclose(target, denoise(model, x, axes="ZYX", device="cpu"), atol=1e-5)
    wide = np.zeros((2, 30, 30), np.float64)  # another float type is filled too
    assert denoise(model, x, axes="ZYX", device="cpu", out=wide) is wide
    np.testing.assert_allclose(wide, target, atol=1e-5)


def test_results_beyond_float32_are_refused_not_infinite(model):
    big = np.random.default_rng(4).random((16, 16)) * 1e39  # float64, finite
    with pytest.raises(NormalizationError, match="beyond float32's range"):
        denoise(model, big, device="cpu")
    with pytest.raises(NormalizationError, match="beyond float32's range .* normalization is 'none'"):
        denoise(model, big, device="cpu", normalization="none")
    assert np.isfinite(denoise(model, big * 1e-9, device="cpu")).all()


def test_float32_images_at_the_ends_of_its_range_map_back_without_overflow(identity):
    import warnings

    rng = np.random.default_rng(8)
    huge = rng.normal(0, 3e38, (32, 32)).clip(-3.3e38, 3.3e38).astype(np.float32)
    tiny = np.where(rng.random((32, 32)) > 0.5, 1e-42, 2e-42).astype(np.float32)  # subnormal
    for data in (huge, tiny):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # was an overflow, then inf and NaN in the result
            out = denoise(identity, data, device="cpu")
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, data, rtol=1e-5, atol=float(np.abs(data).max()) * 1e-5)


def test_normalization_refuses_unknown_keys_and_takes_numpy_numbers(model):
    x = np.random.default_rng(5).random((16, 16)).astype(np.float32)
    with pytest.raises(NormalizationError, match="unknown normalization keys 'lo', 'hi'; the keys are"):
        denoise(model, x, device="cpu", normalization={"method": "range", "lo": 0, "hi": 1})
    a = denoise(model, x, device="cpu", normalization={"low": np.float32(1), "high": np.int64(99)})
    b = denoise(model, x, device="cpu", normalization={"low": 1, "high": 99})
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arch", ["autoencoder", "unet", "dncnn"])
def test_predict_with_a_head_on_models_with_or_without_encode_decode(arch):
    from napari_addunet.models import get_config_class

    small = {"autoencoder": {"base_width": 4, "depth": 2}, "unet": {"base_width": 4, "depth": 2}}
    settings = {**small.get(arch, {}), "num_classes": 3}
    if arch == "dncnn":
        settings.update(depth=3, width=4)
    assert "num_classes" in get_config_class(arch).field_names()
    torch.manual_seed(0)
    net = create_model(arch, **settings)
    x = np.random.default_rng(6).random((32, 32)).astype(np.float32)
    result = predict(net, x, device="cpu")
    assert result.probabilities.shape == (1, 3)
    np.testing.assert_allclose(result.probabilities.sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.denoised, denoise(net, x, device="cpu"), atol=1e-6)


def test_cancel_must_be_an_event(model):
    with pytest.raises(TypeError, match="cancel must be a threading.Event .* got bool"):
        denoise(model, np.zeros((16, 16), np.float32), device="cpu", cancel=True)


def test_ambiguous_axes_message_reads_as_sentences():
    with pytest.raises(AxesError, match=r"or 'TCYX'\. Pass axes= explicitly"):
        denoise(_tiny(), np.zeros((2, 3, 16, 16), np.float32), device="cpu")


def test_a_ragged_list_is_refused_clearly(model):
    with pytest.raises(TypeError, match="nested list that is not a rectangular array"):
        denoise(model, [[1.0, 2.0], [3.0]], device="cpu")


def test_sparse_spots_on_a_flat_background_are_mapped_by_their_minimum_and_maximum(identity):
    x = np.zeros((128, 128), np.uint16)
    rng = np.random.default_rng(6)
    spots = tuple(rng.integers(0, 128, (2, 10)))
    x[spots] = 40000  # under 0.1 % of the pixels: the 0.1 and 99.9 percentiles are both 0
    result = denoise(identity, x, device="cpu")
    np.testing.assert_allclose(result, x, atol=0.05)
    from napari_addunet.engine.normalization import percentile_bounds

    assert percentile_bounds(x.astype(float).ravel(), 0.1, 99.9) == (0.0, 40000.0)  # was a scale of 1


def test_big_endian_float64_is_computed_as_float64(model):
    from napari_addunet.engine.normalization import work_dtype

    assert work_dtype(np.dtype(">f8")) is np.float64  # was float32
    big = (np.random.default_rng(4).random((16, 16)) * 1e39).astype(">f8")
    with pytest.raises(NormalizationError, match="beyond float32's range"):  # was silently NaN
        denoise(model, big, device="cpu")


def test_a_lazy_result_uses_the_model_as_it_was_when_asked(model):
    import dask.array as da

    from napari_addunet import create_model as make

    torch.manual_seed(0)
    bn = make("dncnn", depth=3, width=4, batch_norm=True)
    with torch.no_grad():
        for m in bn.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.3)
                m.running_var.fill_(4.0)
    stack = da.from_array(np.random.default_rng(7).random((2, 32, 32)).astype(np.float32), chunks=(1, 32, 32))
    expected = denoise(bn, stack.compute(), axes="ZYX", device="cpu")
    lazy = denoise(bn, stack, axes="ZYX", device="cpu", lazy=True)
    bn.train()  # later changes to the model do not reach the blocks computed afterwards
    np.testing.assert_allclose(lazy.compute(), expected, atol=1e-6)


def test_a_bfloat16_tensor_is_read_as_float32(model):
    x = torch.rand(24, 24)
    out = denoise(model, x.to(torch.bfloat16), device="cpu")
    np.testing.assert_allclose(out, denoise(model, x.to(torch.bfloat16).float().numpy(), device="cpu"))


def test_progress_messages_count_the_planes_done_of_batched_stacks(model):
    stack = np.random.default_rng(8).random((5, 32, 32)).astype(np.float32)
    messages = [p.message for p in iter_denoise(model, stack, axes="ZYX", device="cpu", batch_size=2)]
    planes = [m for m in messages if m.startswith("denoising")]
    # planes go through two at a time: the message names the next plane after those done
    # (it named the first plane of the batch just finished)
    assert planes == [
        "denoising z=0 (0 of 5 planes done)",
        "denoising z=2 (2 of 5 planes done)",
        "denoising z=4 (4 of 5 planes done)",
        "denoising z=4 (5 of 5 planes done)",
    ]
    events = list(iter_denoise(model, stack[0], device="cpu", tile=24))
    last = events[-1]
    assert last.done == last.total > 1
    assert last.message == f"denoising image ({last.total} of {last.total} tiles done)"
