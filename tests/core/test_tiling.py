"""Tiling: the plan's invariants, tiled == untiled for any size, and the out-of-memory fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import napari_addunet as na
from napari_addunet.engine.inference import denoise, model_receptive_field
from napari_addunet.engine.tiling import (
    TiledRunner,
    TileError,
    TileMemoryError,
    bound_bytes_per_pixel,
    default_overlap,
    default_tile_size,
    estimate_bytes_per_pixel,
    plan_axis,
    plan_tiles,
    tile_floor,
)
from napari_addunet.models import create_model, list_models

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")


def _reference(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)[None, None]).denoised[0, 0].numpy()


@pytest.fixture(scope="module")
def addunet_rf43():
    """Default constant-resolution AddUNet kernels (receptive field 43), tiny width for speed."""
    torch.manual_seed(0)
    return create_model("addunet", width=2).eval()


@pytest.fixture(scope="module")
def pooling_model():
    """A model that down-samples (size_multiple 4): only equivariant on its pooling grid."""
    torch.manual_seed(1)
    return create_model("addunet", width=3, kernels=(3, 3, 3), multiscale=True).eval()


# -- the plan -----------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 3000),
    tile=st.integers(0, 1200),
    context=st.integers(0, 80),
    multiple=st.sampled_from([1, 2, 4, 8, 16]),
)
def test_plan_axis_invariants(length, tile, context, multiple):
    overlap = default_overlap(2 * context + 1, multiple)
    try:
        spans = plan_axis(length, tile, overlap, multiple, context)
    except TileError:
        assert tile < tile_floor(2 * context + 1, overlap, multiple)
        return
    # owned ranges partition the axis
    assert spans[0].lo == 0 and spans[-1].hi == length
    assert all(a.hi == b.lo for a, b in zip(spans, spans[1:], strict=False))
    for s in spans:
        assert 0 <= s.start <= s.lo < s.hi <= s.stop <= length
        if tile > 0 and length > tile:
            assert s.size <= tile
            assert s.start % multiple == 0 and s.lo % multiple == 0
        # a seam is never closer than the context to an artificial tile edge
        if s.lo > 0:
            assert s.lo - s.start >= context
        if s.hi < length:
            assert s.stop - s.hi >= context
    # the blend weights sum to one everywhere
    total = np.zeros(length)
    for s in spans:
        a, b = s.support
        total[a:b] += s.weights()
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 1000),
    w=st.integers(1, 1000),
    tile=st.integers(40, 800),
    context=st.integers(0, 40),
    multiple=st.sampled_from([1, 4, 16]),
)
def test_plan_tiles_fit_the_area_and_cover_the_plane(h, w, tile, context, multiple):
    overlap = default_overlap(2 * context + 1, multiple)
    try:
        plan = plan_tiles((h, w), tile, overlap, multiple, context)
    except TileError:
        assert tile < tile_floor(2 * context + 1, overlap, multiple)
        return
    assert plan.exact
    if h * w > tile * tile:
        assert all(t.shape[0] * t.shape[1] <= tile * tile for t in plan.tiles)
    else:
        assert len(plan) == 1
    total = np.zeros((h, w))
    for t in plan.tiles:
        (ya, yb), (xa, xb) = t.y.support, t.x.support
        total[ya:yb, xa:xb] += t.y.weights()[:, None] * t.x.weights()[None, :]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_rectangular_tiles_when_cheaper():
    # a 1024 x 1024 plane in tiles of at most 752 x 752 pixels: two 1024 x 533 strips, one seam
    plan = plan_tiles((1024, 1024), 752, 42, 1, 21)
    assert len(plan) == 2 and plan.tiles[0].shape == (1024, 533)


def test_plan_is_economical():
    # 2048 px with 704 px tiles and a 42 px overlap: 4 tiles, ~8 % extra work, not whole tiles
    spans = plan_axis(2048, 704, 42, 1, 21)
    assert len(spans) == 4
    assert sum(s.size for s in spans) / 2048 < 1.07


def test_small_overlap_blends_whole_overlap():
    spans = plan_axis(500, 200, 10, 1, context=21)
    assert all(s.ramp_hi > 0 for s in spans[:-1])
    plan = plan_tiles((500, 500), 200, 10, 1, context=21)
    assert not plan.exact
    assert plan_tiles((500, 500), 200, 42, 1, context=21).exact


def test_tile_too_small_is_clear():
    with pytest.raises(TileError, match="at least"):
        plan_axis(1000, 40, 42, 1)


# -- tiled == untiled ---------------------------------------------------------------------------
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 130),
    w=st.integers(1, 130),
    tile=st.integers(44, 140),
    seed=st.integers(0, 2**16),
)
def test_tiled_equals_untiled_any_size(addunet_rf43, h, w, tile, seed):
    assert model_receptive_field(addunet_rf43) == 43
    x = np.random.default_rng(seed).random((h, w), dtype=np.float32)
    tiled = denoise(addunet_rf43, x, tile=tile, device="cpu", normalization="none")
    assert tiled.dtype == np.float32
    assert np.abs(tiled - _reference(addunet_rf43, x)).max() <= 1e-4


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 140), w=st.integers(1, 140), tile=st.integers(96, 150), seed=st.integers(0, 2**16))
def test_tiled_equals_untiled_pooling_model(pooling_model, h, w, tile, seed):
    assert pooling_model.size_multiple == 4
    x = np.random.default_rng(seed).random((h, w), dtype=np.float32)
    tiled = denoise(pooling_model, x, tile=tile, device="cpu", normalization="none")
    # tile origins aligned to the pooling grid: exact too, up to float rounding
    assert np.abs(tiled - _reference(pooling_model, x)).max() <= 1e-4


def test_tiled_unet_baseline_exact():
    torch.manual_seed(2)
    model = create_model("unet", base_width=4, depth=3).eval()
    x = np.random.default_rng(3).random((300, 260), dtype=np.float32)
    tiled = denoise(model, x, tile=230, device="cpu", normalization="none")
    assert np.abs(tiled - _reference(model, x)).max() <= 1e-4


def test_small_overlap_warns_and_stays_close(addunet_rf43):
    x = np.random.default_rng(4).random((120, 120), dtype=np.float32)
    with pytest.warns(UserWarning, match="no longer identical"):
        y = denoise(addunet_rf43, x, tile=60, overlap=10, device="cpu", normalization="none")
    assert np.isfinite(y).all()
    assert np.abs(y - _reference(addunet_rf43, x)).max() < 0.5


def test_an_overlap_of_twice_the_context_off_the_pooling_grid_warns_when_not_exact():
    import warnings

    from napari_addunet.engine.inference import predict

    torch.manual_seed(0)
    model = create_model("addunet", width=3, kernels=(3, 3, 3), multiscale=True).eval()
    rf, m = model_receptive_field(model), model.size_multiple
    assert (rf // 2) % m != 0  # 2 x context is not a multiple of the pooling grid
    x = np.random.default_rng(170).random((170, 170), dtype=np.float32)
    reference = _reference(model, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predict(model, x, tile=135, overlap=2 * (rf // 2), device="cpu", normalization="none")
    off = np.abs(result.denoised - reference).max()
    warned = any("no longer identical" in str(w.message) for w in caught)
    assert not result.details["exact_tiling"] and off > 1e-4 and warned  # was silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default overlap is exact, and says nothing
        exact = predict(model, x, tile=135, device="cpu", normalization="none")
    assert exact.details["exact_tiling"] and np.abs(exact.denoised - reference).max() <= 1e-4


def test_an_overlap_given_for_a_model_of_unknown_receptive_field_is_taken_as_is(addunet_rf43, monkeypatch):
    import warnings

    from napari_addunet.engine import inference

    def unknown(model):
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(inference, "model_receptive_field", unknown)
    x = np.random.default_rng(6).random((64, 64), dtype=np.float32)
    with pytest.raises(inference.TileError, match="pass overlap="):
        denoise(addunet_rf43, x, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no claim about a receptive field nobody knows
        y = denoise(addunet_rf43, x, overlap=41, tile=0, device="cpu", normalization="none")
    np.testing.assert_array_equal(y, _reference(addunet_rf43, x))


def test_untiled_option(addunet_rf43):
    x = np.random.default_rng(5).random((90, 70), dtype=np.float32)
    y = denoise(addunet_rf43, x, tile=0, device="cpu", normalization="none")
    np.testing.assert_array_equal(y, _reference(addunet_rf43, x))


# -- default size -------------------------------------------------------------------------------
def test_default_tile_size_cpu():
    model = create_model("addunet")
    rf = model_receptive_field(model)
    side = default_tile_size(model, torch.device("cpu"), rf)
    assert side % 16 == 0 and tile_floor(rf, default_overlap(rf)) <= side <= 2048
    # the tiling overhead on a large image stays small with that tile
    spans = plan_axis(4096, side, default_overlap(rf), 1, rf // 2)
    assert (sum(s.size for s in spans) / 4096) ** 2 < 1.15
    tiny = create_model("addunet", width=2, kernels=(3,))
    assert default_tile_size(tiny, torch.device("cpu"), 7) == 2048


def test_default_cpu_tiles_of_the_bundled_denoiser_keep_a_megapixel_plane_cheap():
    """The multi-scale bundled model has a wide receptive field (wide overlaps): its default
    tiles must still split a 1024 x 1024 plane into few enough tiles that the overlaps add
    little work, while staying within the CPU budget by the estimate."""
    from napari_addunet.engine.tiling import CPU_TILE_BUDGET

    model = na.load_model()
    rf, multiple = model_receptive_field(model), model.size_multiple
    side = default_tile_size(model, torch.device("cpu"), rf, multiple)
    plan = plan_tiles((1024, 1024), side, default_overlap(rf, multiple), multiple)
    work = sum(r.size for r in plan.rows) * sum(c.size for c in plan.cols) / 1024**2
    assert len(plan.tiles) <= 2 and work < 1.2, (side, len(plan.tiles), work)
    biggest = max(r.size for r in plan.rows) * max(c.size for c in plan.cols)
    assert biggest * estimate_bytes_per_pixel(model) <= CPU_TILE_BUDGET


# -- out of memory ------------------------------------------------------------------------------
def _fake_oom_forward(limit_px: int, calls: list):
    def forward(batch, owned, far):
        calls.append(batch.shape)
        if batch.shape[0] * batch.shape[2] * batch.shape[3] > limit_px:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch * 2.0, None

    return forward


def test_oom_halves_tile_then_succeeds():
    calls: list = []
    runner = TiledRunner(
        _fake_oom_forward(70 * 70, calls), tile=256, overlap=10, context=5, floor=24, on_oom=None
    )
    plane = np.random.default_rng(0).random((1, 300, 200), dtype=np.float32)
    events = list(runner.run([("a", plane)]))
    (done,) = [e for e in events if type(e).__name__ == "PlaneDone"]
    np.testing.assert_allclose(done.image, plane * 2.0, rtol=1e-6)
    assert runner.tile < 256 and runner.tile * runner.tile <= 4 * 70 * 70
    assert any(e.startswith("tile") for e in runner.oom_events)
    assert any(type(e).__name__ == "Replanned" for e in events)


def test_oom_reduces_batch_first():
    calls: list = []
    runner = TiledRunner(
        _fake_oom_forward(3 * 40 * 40, calls), tile=256, overlap=10, context=5, floor=24, on_oom=None
    )
    planes = [(i, np.full((1, 40, 40), i, np.float32)) for i in range(8)]
    done = [e for e in runner.run(planes) if type(e).__name__ == "PlaneDone"]
    assert [d.key for d in done] == list(range(8))
    assert all(np.all(d.image == 2.0 * d.key) for d in done)
    assert runner.oom_events[0].startswith("batch size") and runner.tile == 256


def test_oom_on_a_single_tile_shrinks_the_tile_at_once_and_by_area():
    calls: list = []
    runner = TiledRunner(
        _fake_oom_forward(128 * 128, calls), tile=1024, overlap=8, context=4, floor=32, on_oom=None
    )
    plane = np.random.default_rng(0).random((1, 256, 256), dtype=np.float32)
    done = [e for e in runner.run([("a", plane)]) if type(e).__name__ == "PlaneDone"]
    np.testing.assert_allclose(done[0].image, plane * 2.0, rtol=1e-6)
    # a batch of one was sent: halving a batch it never used retried the same call 4 times
    assert runner.oom_events == ["tile 256 -> 128"]
    # a long thin plane with no tile limit: the tile's area is halved, not its long side
    calls.clear()
    runner = TiledRunner(
        _fake_oom_forward(100 * 100, calls), tile=0, overlap=8, context=4, floor=32, on_oom=None
    )
    strip = np.random.default_rng(1).random((1, 2000, 100), dtype=np.float32)
    done = [e for e in runner.run([("b", strip)]) if type(e).__name__ == "PlaneDone"]
    np.testing.assert_allclose(done[0].image, strip * 2.0, rtol=1e-6)
    assert runner.oom_events[0] == "tile 447 -> 223"
    assert len(calls) - sum(1 for c in calls if c[0] * c[2] * c[3] <= 100 * 100) == len(runner.oom_events)


def test_oom_below_floor_is_a_clear_error():
    runner = TiledRunner(_fake_oom_forward(10, []), tile=128, overlap=10, context=5, floor=32, on_oom=None)
    plane = np.zeros((1, 200, 200), np.float32)
    with pytest.raises(TileMemoryError, match="out of device memory even with 32 px tiles"):
        list(runner.run([(0, plane)]))


def test_other_errors_are_not_swallowed():
    def forward(batch, owned, far):
        raise ValueError("boom")

    runner = TiledRunner(forward, tile=64, overlap=10, context=5, floor=32, on_oom=None)
    with pytest.raises(ValueError, match="boom"):
        list(runner.run([(0, np.zeros((1, 100, 100), np.float32))]))


def test_oom_end_to_end_with_a_model(addunet_rf43, monkeypatch):
    x = np.random.default_rng(6).random((150, 150), dtype=np.float32)
    expected = _reference(addunet_rf43, x)
    original = addunet_rf43.forward

    def tight_memory(t):
        if t.shape[-1] * t.shape[-2] > 100 * 100:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(t)

    monkeypatch.setattr(addunet_rf43, "forward", tight_memory)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        y = denoise(addunet_rf43, x, tile=512, device="cpu", normalization="none")
    assert np.abs(y - expected).max() <= 1e-4


def test_activation_estimate_counts_feature_maps_at_their_resolution():
    full = torch.nn.Sequential(torch.nn.Conv2d(1, 128, 3, padding=1))
    half = torch.nn.Sequential(torch.nn.Conv2d(1, 128, 3, stride=2, padding=1))
    assert estimate_bytes_per_pixel(full) == pytest.approx(4 * 128)
    assert estimate_bytes_per_pixel(half) == pytest.approx(4 * 128 / 4)
    # the multi-scale AddUNet's deeper levels run at 1/4, 1/16, ... of the pixels
    ms = create_model("addunet", multiscale=True, width=64, kernels=(3, 3, 3, 3))
    channels = sum(
        m.out_channels for m in ms.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    )
    ms.train()  # the probe leaves the mode as it was
    assert estimate_bytes_per_pixel(ms) < 0.5 * 4 * channels
    assert ms.training


def test_activation_estimate_counts_only_tensors_alive_at_once():
    """A chain of convolutions holds two maps at a time (input and output), not all of them."""
    chain = torch.nn.Sequential(*[torch.nn.Conv2d(c, 64, 3, padding=1) for c in (1, 64, 64, 64)])
    assert estimate_bytes_per_pixel(chain) == pytest.approx(2 * 4 * 64)
    assert bound_bytes_per_pixel(chain) == pytest.approx(4 * 4 * 64)


@pytest.mark.parametrize("name", list_models())
def test_activation_bound_is_above_the_live_estimate_for_every_model(name):
    model = create_model(name)
    assert bound_bytes_per_pixel(model) >= estimate_bytes_per_pixel(model) > 0


def test_an_image_that_fits_one_tile_skips_the_live_probe(monkeypatch):
    """The bound settles small images cheaply; only a tiled image pays for the live estimate."""
    from napari_addunet.engine import tiling

    model = create_model("addunet", width=8, kernels=(3, 3))
    rng = np.random.default_rng(0)
    denoise(model, rng.random((64, 64), dtype=np.float32), device="cpu")
    assert set(tiling._ESTIMATES[model]) == {("bound", 64)}
    # a budget of about 128 x 128 px by the bound: a 300 x 300 image needs tiles
    monkeypatch.setattr(tiling, "CPU_TILE_BUDGET", 128 * 128 * tiling.bound_bytes_per_pixel(model))
    x = rng.random((300, 300), dtype=np.float32)
    y = denoise(model, x, device="cpu", normalization="none")
    assert ("live", 64) in tiling._ESTIMATES[model]
    assert np.abs(y - _reference(model, x)).max() <= 1e-4


def test_activation_estimate_probes_each_model_once():
    """Every tiled call asks for the estimate: the probe pass runs once per model object."""
    calls = []
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1))
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    first = estimate_bytes_per_pixel(model)
    assert estimate_bytes_per_pixel(model) == first and len(calls) == 1
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 64, 3, padding=1))
    assert estimate_bytes_per_pixel(other) == pytest.approx(2 * first)
