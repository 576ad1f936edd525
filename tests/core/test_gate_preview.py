"""The gate preview: cached encoder, decoder-only updates equal to the full model, the sweep."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_addunet import create_model
from napari_addunet.engine.gate_preview import (
    GatePreview,
    PreviewRequest,
    SlicePreview,
    crop_window,
    gate_slider_max,
    has_gates,
)
from napari_addunet.engine.inference import denoise
from napari_addunet.models.addunet import GateError


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("addunet", width=4, kernels=(5, 3, 3, 1)).eval()


def _planes(n=2, size=40, seed=0):
    return np.random.default_rng(seed).random((n, 1, size, size)).astype(np.float32)


def _reference(model, planes, gates):
    with torch.no_grad():
        return model.decode(model.encode(torch.from_numpy(planes)), gates=gates).denoised.numpy()


@pytest.mark.parametrize(
    "settings",
    [{}, {"multiscale": True}, {"encoder": "plain", "global_residual": False}, {"convs_per_level": 2}],
    ids=["residual", "multiscale", "plain", "two-convs"],
)
def test_partial_decoding_equals_the_model(settings):
    torch.manual_seed(1)
    model = create_model("addunet", width=4, kernels=(5, 3, 3), **settings).eval()
    planes = _planes(size=36)
    cache = GatePreview(model)
    assert cache.encode(planes, key="a") is not None
    learned = list(model.gates)
    out, timing = cache.render(learned)
    np.testing.assert_allclose(out, _reference(model, planes, learned), rtol=1e-5, atol=1e-6)
    assert timing.levels == 3
    # change one gate at a time, shallow and deep: only the levels from it up are re-run
    for j, value in [(0, 0.0), (2, 1.7), (1, 0.3), (0, 2.0)]:
        gates = list(cache._alphas)
        gates[j] = value
        out, timing = cache.render(gates)
        assert timing.levels == j + 1
        np.testing.assert_allclose(out, _reference(model, planes, gates), rtol=1e-5, atol=1e-6)
    # nothing changed: nothing runs
    _, timing = cache.render(gates)
    assert timing.levels == 0 and timing.seconds == 0.0


@pytest.mark.parametrize(
    "settings", [{"multiscale": True, "convs_per_level": 2}, {}], ids=["multiscale", "one-scale"]
)
def test_tall_slices_decode_level_0_in_bands_with_the_same_values(settings, monkeypatch):
    """Above two bands of rows, level 0 of the preview's decoder runs band by band: the same
    values as the preview's whole-map decoding, and close to the model's own."""
    from napari_addunet.engine import gate_preview
    from napari_addunet.models.addunet import BAND_ROWS

    torch.manual_seed(2)
    model = create_model("addunet", width=4, kernels=(5, 3, 3), **settings).eval()
    planes = _planes(n=1, size=3 * BAND_ROWS + 5)
    banded, whole = GatePreview(model), GatePreview(model)
    banded.encode(planes, key="tall")
    whole.encode(planes, key="tall")
    calls = []
    model.decoders[0][0][0].register_forward_hook(lambda *a: calls.append(1))
    for gates in ([0.4, 1.3, 0.8], [0.0, 1.3, 0.8], [2.0, 0.1, 0.8]):
        out, _ = banded.render(gates)
        assert not calls  # banded: the level-0 modules are not called
        with monkeypatch.context() as m:
            m.setattr(gate_preview, "BAND_ROWS", 1 << 30)
            expected, _ = whole.render(gates)
        assert calls
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(out, _reference(model, planes, gates), rtol=1e-5, atol=1e-6)
        calls.clear()


def test_encoder_runs_once_per_key(model):
    cache = GatePreview(model)
    planes = _planes()
    assert cache.encode(planes, key=1) is not None
    assert cache.encode(planes, key=1) is None  # cached
    assert cache.encode(planes, key=2) is not None
    assert model.gates == pytest.approx(GatePreview(model).model.gates)  # never modified


def test_a_gate_at_zero_removes_that_skip(model):
    cache = GatePreview(model)
    cache.encode(_planes())
    learned, _ = cache.render(model.gates)
    off, _ = cache.render([0.0, *model.gates[1:]])
    assert np.abs(off - learned).mean() > 1e-4


def test_models_without_gates_are_refused():
    with pytest.raises(GateError, match="no skip gates"):
        GatePreview(create_model("dncnn", depth=3, width=4))
    assert not has_gates(create_model("unet", base_width=4, depth=2))


def test_slider_range_has_a_floor():
    assert gate_slider_max(1.3) == pytest.approx(2.6)
    assert gate_slider_max(0.0) == 1.0
    assert gate_slider_max(0.2) == 1.0


def test_crop_window_stays_inside():
    assert crop_window(100, 80, None, 512) == (0, 100, 0, 80)
    assert crop_window(1000, 1000, (10, 990), 256) == (0, 256, 744, 1000)
    assert crop_window(1000, 1000, (500, 500), 256) == (372, 628, 372, 628)
    with pytest.raises(ValueError):
        crop_window(10, 10, None, 4)


def test_slice_preview_matches_full_inference(model):
    """A whole slice previewed with some gates equals the engine's result with those gates."""
    stack = np.random.default_rng(3).random((4, 48, 40)).astype(np.float32) * 200 + 50
    gates = (0.5, 0.0, 1.2, 0.9)
    preview = SlicePreview(model)
    frame = preview.update(PreviewRequest(stack, "ZYX", {"Z": 2}, gates, data_key="s"))
    full = denoise(model, stack, axes="ZYX", gates=gates, device="cpu", tile=0)
    np.testing.assert_allclose(frame.block, full[2], rtol=1e-4, atol=1e-3)
    assert frame.origin == (0, 0) and frame.position == {"Z": 2} and frame.encode_seconds is not None
    # the same slice again with other gates: decoder only
    again = preview.update(PreviewRequest(stack, "ZYX", {"Z": 2}, (0.5, 0.0, 1.2, 0.0), data_key="s"))
    assert again.encode_seconds is None and again.levels == 4
    # another slice: the encoder runs again
    other = preview.update(PreviewRequest(stack, "ZYX", {"Z": 0}, gates, data_key="s"))
    assert other.encode_seconds is not None


def test_a_batch_norm_model_left_in_training_mode_is_previewed_as_applied_and_not_changed():
    torch.manual_seed(1)
    bn = create_model("addunet", width=4, kernels=(3, 3), batch_norm=True)  # train() mode, as created
    stack = np.random.default_rng(4).random((2, 48, 40)).astype(np.float32) * 200
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    frame = SlicePreview(bn).update(PreviewRequest(stack, "ZYX", {"Z": 1}, (0.5, 1.0), data_key="bn"))
    assert all(torch.equal(v, bn.state_dict()[k]) for k, v in before.items())  # running stats kept
    full = denoise(bn, stack, axes="ZYX", gates=(0.5, 1.0), device="cpu", tile=0)
    np.testing.assert_allclose(frame.block, full[1], rtol=1e-4, atol=1e-2)


def test_other_axes_or_normalisation_of_one_array_are_encoded_again(model):
    data = np.random.default_rng(4).random((3, 3, 40, 40)).astype(np.float32) * 100
    gates = tuple(model.gates)
    preview = SlicePreview(model)
    first = preview.update(PreviewRequest(data, "ZCYX", {"Z": 0}, gates, data_key="k"))
    other = preview.update(PreviewRequest(data, "CZYX", {"Z": 0}, gates, data_key="k"))
    assert other.encode_seconds is not None
    fresh = SlicePreview(model).update(PreviewRequest(data, "CZYX", {"Z": 0}, gates, data_key="k"))
    np.testing.assert_allclose(other.block, fresh.block, rtol=1e-5, atol=1e-5)
    assert np.abs(other.block - first.block).max() > 1e-3
    plain = preview.update(PreviewRequest(data, "CZYX", {"Z": 0}, gates, data_key="k", normalization="none"))
    assert plain.encode_seconds is not None
    fresh = SlicePreview(model).update(
        PreviewRequest(data, "CZYX", {"Z": 0}, gates, data_key="k", normalization="none")
    )
    np.testing.assert_allclose(plain.block, fresh.block, rtol=1e-5, atol=1e-5)


def test_slice_preview_crops_around_the_centre(model):
    image = np.random.default_rng(4).random((300, 200)).astype(np.float32)
    frame = SlicePreview(model).update(
        PreviewRequest(image, None, {}, model.gates, center=(250, 20), max_side=64)
    )
    assert frame.block.shape == (64, 64) and frame.origin == (218, 0)


def test_slice_preview_of_rgb_keeps_the_layout(model):
    rgb = np.random.default_rng(5).integers(0, 255, (32, 36, 3)).astype(np.uint8)
    frame = SlicePreview(model).update(PreviewRequest(rgb, None, {}, model.gates, rgb=True))
    assert frame.block.shape == (32, 36, 3)
    full = denoise(model, rgb, device="cpu", tile=0)
    np.testing.assert_allclose(frame.block, full, rtol=1e-4, atol=1e-2)


def test_slice_outside_the_stack_is_an_error(model):
    stack = np.zeros((3, 16, 16), np.float32)
    with pytest.raises(IndexError, match="z=5"):
        SlicePreview(model).update(PreviewRequest(stack, "ZYX", {"Z": 5}, model.gates))


def test_sweep_measures_psnr_and_ssim(model):
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[:48, :48]
    clean = (0.5 + 0.3 * np.sin(xx / 4.0)).astype(np.float32)
    noisy = clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32)
    preview = SlicePreview(model)
    request = PreviewRequest(noisy, "YX", {}, model.gates)
    gen = preview.sweep(request, clean, gate=0, values=[0.0, 0.5, 1.0])
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as done:
        result = done.value
    assert [e.done for e in events] == [0, 1, 2, 3]
    assert result.gate == 0 and result.values.tolist() == [0.0, 0.5, 1.0]
    assert result.data_range == 1.0 and result.shape == (48, 48)
    from napari_addunet.engine.readout import compare

    gates = list(model.gates)
    gates[0] = 0.5
    out = denoise(model, noisy, gates=gates, device="cpu", tile=0)
    q = compare(out, clean)
    assert result.psnr[1] == pytest.approx(q.psnr, abs=0.05)
    assert result.ssim[1] == pytest.approx(q.ssim, abs=0.01)
    assert result.best_value in result.values
    assert len(result.rows()) == 3


def test_sweep_needs_a_matching_reference(model):
    request = PreviewRequest(np.zeros((16, 16), np.float32), "YX", {}, model.gates)
    with pytest.raises(ValueError, match="reference has shape"):
        next(SlicePreview(model).sweep(request, np.zeros((8, 8)), 0, [0.0]))
    with pytest.raises(ValueError, match="gate must be"):
        next(SlicePreview(model).sweep(request, np.zeros((16, 16)), 9, [0.0]))


def test_sweep_stops_when_cancelled(model):
    import threading

    from napari_addunet.engine.inference import InferenceCancelled

    request = PreviewRequest(
        np.random.default_rng(1).random((32, 32)).astype(np.float32), "YX", {}, model.gates
    )
    cancel = threading.Event()
    gen = SlicePreview(model).sweep(
        request, np.zeros((32, 32), np.float32), 0, np.linspace(0, 1, 50), cancel=cancel
    )
    assert next(gen).done == 0 and next(gen).done == 1
    cancel.set()
    with pytest.raises(InferenceCancelled, match="sweep cancelled after 1 of 50 gate values"):
        next(gen)
