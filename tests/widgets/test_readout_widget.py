"""Readout in a real viewer: model report, PSNR against a reference, probabilities following the slider."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from napari_addunet.engine.readout import METADATA_KEY, compare


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    clean = np.broadcast_to((0.5 + 0.3 * np.sin(xx / 6.0 + yy / 9.0)).astype(np.float32), shape).copy()
    return (clean + 0.08 * rng.standard_normal(shape)).astype(np.float32), clean


def test_readout_shows_psnr_against_a_reference(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    noisy, clean = _pair((64, 64))
    viewer.add_image(clean, name="clean")
    viewer.add_image(noisy, name="noisy")
    readout = add_dock(viewer, "Readout")
    denoiser = add_dock(viewer, "Denoise & classify")
    assert "addunet" in readout.text.toPlainText() and "tiny test model" in readout.text.toPlainText()

    denoiser.layer_combo.set_layer("noisy")
    assert denoiser.run()
    qtbot.waitUntil(lambda: not denoiser.runner.running, timeout=20_000)
    # the new output is offered at once, and the last run is in the report
    assert readout.layer_combo.layer().name == "noisy [denoised]"
    text = readout.text.toPlainText()
    assert "last run" in text and "megapixels per second" in text and "noise sigma before" in text

    readout.reference_combo.set_layer("clean")
    assert readout.compare()
    qtbot.waitUntil(lambda: not readout.runner.running, timeout=20_000)
    expected = compare(viewer.layers["noisy [denoised]"].data, clean)
    assert readout.quality["psnr"] == pytest.approx(expected.psnr)
    assert readout.quality["ssim"] == pytest.approx(expected.ssim)
    assert f"PSNR {expected.psnr:.2f} dB" in readout.quality_label.text()
    assert "PSNR (dB)" in readout.text.toPlainText()

    rows = list(csv.reader(io.StringIO(readout.copy_csv())))
    assert rows[0] == ["section", "item", "value"]
    assert ["quality", "reference", "clean"] in rows
    from qtpy.QtWidgets import QApplication

    assert QApplication.clipboard().text().startswith("section,item,value")
    assert readout.copy_text().startswith("model")


def test_compare_refuses_layers_of_different_shapes(viewer_session, add_dock):
    viewer, _ = viewer_session
    viewer.add_image(np.zeros((32, 32), np.float32), name="a")
    viewer.add_image(np.zeros((16, 16), np.float32), name="b")
    readout = add_dock(viewer, "Readout")
    readout.layer_combo.set_layer("a")
    readout.reference_combo.set_layer("b")
    assert not readout.compare()
    assert readout.quality is None


def test_class_probabilities_follow_the_dims_slider(viewer_session, add_dock, qtbot):
    import torch

    from napari_addunet import create_model

    viewer, state = viewer_session
    torch.manual_seed(1)
    model = create_model("addunet", width=4, kernels=(3, 3), num_classes=3).eval()
    model.metadata["class_names"] = ["empty", "dim", "bright"]
    state.set_model(model, "a classifier")
    stack, _ = _pair((5, 40, 40))
    stack *= np.array([0.2, 1.0, 3.0, 6.0, 9.0], np.float32)[:, None, None]
    viewer.add_image(stack, name="stack")
    readout = add_dock(viewer, "Readout")
    denoiser = add_dock(viewer, "Denoise & classify")
    assert denoiser.classify_check.isChecked()
    denoiser.layer_combo.set_layer("stack")
    assert denoiser.run()
    qtbot.waitUntil(lambda: not denoiser.runner.running, timeout=20_000)

    out = viewer.layers["stack [denoised]"]
    probs = np.asarray(out.metadata[METADATA_KEY]["probabilities"])
    assert probs.shape == (5, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert not np.allclose(probs[0], probs[4])
    for z in (0, 4, 1):
        viewer.dims.set_current_step(0, z)
        p = readout.probabilities
        assert p.label == f"z={z}" and p.names == ["empty", "dim", "bright"]
        np.testing.assert_allclose(p.values, probs[z], rtol=1e-6)
        widths = [bar.get_width() for bar in readout._bars[1]]
        np.testing.assert_allclose(widths, probs[z], rtol=1e-6)
        assert f"z={z}" in readout.prob_label.text()
        assert f"z={z}" in readout.text.toPlainText()  # the report's slice section follows (was z=0)
    assert "class probabilities" in readout.copy_text()


def _readout_comparing(viewer, add_dock, monkeypatch, layer, reference):
    """The Readout with ``layer`` and ``reference`` chosen, and the errors it shows collected."""
    import napari_addunet._widgets.readout as readout_widget

    readout = add_dock(viewer, "Readout")
    errors: list[str] = []
    monkeypatch.setattr(readout_widget, "show_error", errors.append)
    readout.layer_combo.set_layer(layer)
    readout.reference_combo.set_layer(reference)
    return readout, errors


def test_compare_of_a_4d_result_uses_the_axes_its_run_recorded(viewer_session, add_dock, qtbot, monkeypatch):
    viewer, _ = viewer_session
    noisy, clean = _pair((2, 3, 32, 32))
    viewer.add_image(clean, name="clean")
    viewer.add_image(noisy, name="noisy")
    readout, errors = _readout_comparing(viewer, add_dock, monkeypatch, "noisy", "clean")
    assert not readout.compare()  # 4-D with nothing recorded: the axes are asked for
    assert "cannot tell the axes" in errors[-1] and "Axes box" in errors[-1]
    readout.axes_edit.setText("TZYX")
    assert readout.compare()
    qtbot.waitUntil(lambda: not readout.runner.running, timeout=20_000)
    expected = compare(noisy, clean, axes="TZYX")
    assert readout.quality["ssim"] == pytest.approx(expected.ssim) and expected.planes == 6
    # a result layer of a TZYX run: its recorded axes are used without typing them
    readout.axes_edit.setText("")
    viewer.layers["noisy"].metadata = {METADATA_KEY: {"axes": "TZYX"}}
    readout.quality = None
    assert readout.compare()
    qtbot.waitUntil(lambda: not readout.runner.running, timeout=20_000)
    assert readout.quality["ssim"] == pytest.approx(expected.ssim)


def test_compare_refuses_a_multiscale_layer(viewer_session, add_dock, monkeypatch):
    viewer, _ = viewer_session
    full = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    viewer.add_image([full, full[::2, ::2]], name="pyramid", multiscale=True)
    viewer.add_image(full, name="clean")
    readout, errors = _readout_comparing(viewer, add_dock, monkeypatch, "pyramid", "clean")
    assert not readout.compare()
    assert "'pyramid' is a multiscale (pyramid) image" in errors[-1] and readout.quality is None


def test_compare_of_rgba_layers_scores_the_colours_not_the_alpha(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    rng = np.random.default_rng(4)
    clean = np.full((48, 48, 4), 255, np.uint8)
    clean[..., :3] = (100 + 60 * np.sin(np.arange(48) / 5.0))[None, :, None].astype(np.uint8)
    noisy = clean.copy()
    noisy[..., :3] = np.clip(clean[..., :3] + rng.normal(0, 10, (48, 48, 3)), 0, 255).astype(np.uint8)
    viewer.add_image(clean, name="clean", rgb=True)
    viewer.add_image(noisy, name="noisy", rgb=True)
    readout = add_dock(viewer, "Readout")
    readout.layer_combo.set_layer("noisy")
    readout.reference_combo.set_layer("clean")
    assert readout.compare()
    qtbot.waitUntil(lambda: not readout.runner.running, timeout=20_000)
    colours = compare(noisy[..., :3], clean[..., :3], axes="YXC")
    with_alpha = compare(noisy, clean, rgb=True)
    assert with_alpha.psnr > colours.psnr + 1  # the identical alpha inflated the score
    assert readout.quality["psnr"] == pytest.approx(colours.psnr)
    # with the axes a run recorded (YXC) or typed, the alpha is left out all the same
    readout.axes_edit.setText("YXC")
    assert readout.compare()
    qtbot.waitUntil(lambda: not readout.runner.running, timeout=20_000)
    assert readout.quality["psnr"] == pytest.approx(colours.psnr)


def test_view_points_are_the_slice_napari_draws_in_each_layers_units_and_transform(viewer_session):
    from napari_addunet._widgets._common import layer_view_point

    viewer, _ = viewer_session
    rng = np.random.default_rng(0)
    stack = rng.random((20, 16, 16)).astype(np.float32)
    tie = np.array([[1, 0.4, 0.1, 3], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])  # Z moves with Y and X
    layers = [
        viewer.add_image(stack, name="um", units="um"),
        viewer.add_image(stack, name="nm", units="nm", scale=(500, 1000, 1000)),
        viewer.add_image(stack, name="sheared", shear=[0.5, 0.2, 0.1], scale=(2, 1, 1)),
        viewer.add_image(stack, name="tied", affine=tie),
    ]
    for step in (3, 6, 9):
        viewer.dims.set_current_step(0, step)
        for layer in layers:  # the slice the probabilities and the preview read is the one drawn
            point = layer_view_point(viewer, layer)
            assert round(point[0]) == round(layer._slicing_state.data_slice.point[0]), layer.name
    # on screen, the data point returned is the one napari draws there
    shown = list(viewer.dims.displayed)
    for layer in layers[2:]:
        at = layer_view_point(viewer, layer, (5.0, 7.0))
        np.testing.assert_allclose(layer._data_to_world.set_slice(shown)(at[1:]), (5.0, 7.0), atol=1e-9)


def test_new_data_during_a_comparison_shows_no_stale_numbers(viewer_session, add_dock, monkeypatch, qtbot):
    viewer, _ = viewer_session
    noisy, clean = _pair((64, 64))
    viewer.add_image(clean, name="clean")
    layer = viewer.add_image(noisy, name="noisy")
    readout, _ = _readout_comparing(viewer, add_dock, monkeypatch, "noisy", "clean")
    assert readout.compare()
    layer.data = clean.copy()  # before the result is shown (its callback runs on this thread)
    qtbot.waitUntil(lambda: not readout.runner.running, timeout=20_000)
    assert readout.quality is None and "changed during the comparison" in readout.status.text()
    assert readout.compare()  # and the new data compare
    qtbot.waitUntil(lambda: not readout.runner.running, timeout=20_000)
    assert readout.quality["psnr"] == float("inf")


def test_a_cancelled_comparison_shows_nothing(viewer_session, add_dock, monkeypatch, qtbot):
    viewer, _ = viewer_session
    noisy, clean = _pair((64, 64))
    viewer.add_image(clean, name="clean")
    viewer.add_image(noisy, name="noisy")
    readout, _ = _readout_comparing(viewer, add_dock, monkeypatch, "noisy", "clean")
    assert readout.compare()
    readout.runner.cancel()  # said "cancelling...", then showed the numbers all the same
    qtbot.waitUntil(lambda: not readout.runner.running, timeout=20_000)
    assert readout.quality is None and "cancelled" in readout.status.text()
