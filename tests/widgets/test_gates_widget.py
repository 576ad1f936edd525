"""Skip gates in a real viewer: sliders, a live preview updated in place, Apply, Sweep."""

from __future__ import annotations

import numpy as np
import pytest

from napari_addunet.engine.readout import METADATA_KEY

WIDGET = "Skip gates"


def _image(shape=(72, 64), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    clean = (0.5 + 0.4 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    clean = np.broadcast_to(clean, shape).copy()
    return (clean + 0.1 * rng.standard_normal(shape)).astype(np.float32), clean


def _on_noisy_layer(viewer, add_dock):
    """A noisy image layer and the widget set to it."""
    noisy, _ = _image()
    image = viewer.add_image(noisy, name="noisy")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(image)
    return image, noisy, widget


def _preview_settled(widget):
    return lambda: not widget.preview_busy


def test_sliders_follow_the_active_model(viewer_session, add_dock):
    viewer, state = viewer_session
    widget = add_dock(viewer, WIDGET)
    learned = state.model.gates
    assert len(widget.sliders) == 3
    for slider, alpha in zip(widget.sliders, learned, strict=True):
        assert slider.value() == pytest.approx(alpha, abs=1e-3)
        assert slider.maximum() == pytest.approx(max(2 * alpha, 1.0))
        assert slider.minimum() == 0.0
    # a gate learned at 0 still gets a range
    state.model.set_gates([0.0, 1.0, 1.0])
    state.set_model(state.model, "gates edited")
    assert widget.sliders[0].maximum() == pytest.approx(1.0)
    # a nearly closed gate does not read as a closed one (both read 0.000)
    state.model.set_gates([1e-4, 1.0, 0.0])
    state.set_model(state.model, "a nearly closed gate")
    labels = [widget.gate_grid.itemAtPosition(j, 2).widget().text() for j in range(3)]
    assert labels == ["learned 0.0001", "learned 1", "learned 0"]
    # a model without gates: no sliders, a clear message
    from napari_addunet import create_model

    state.set_model(create_model("dncnn", depth=3, width=4), "a DnCNN")
    assert widget.sliders == [] and "no skip gates" in widget.model_label.text()
    assert not widget.apply_button.isEnabled()


def test_gate_change_updates_the_preview_layer_in_place(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    noisy, _ = _image()
    image = viewer.add_image(noisy, name="noisy", scale=(0.5, 0.5))
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(image)

    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        assert widget.request_preview()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    preview = widget.preview_layer
    assert preview.name == "noisy [gate preview]"
    # the preview is not offered as an input, here or in the other widgets
    combo = widget.layer_combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["noisy"]
    denoise = add_dock(viewer, "Denoise & classify")
    assert "noisy [gate preview]" not in [
        denoise.layer_combo.itemText(i) for i in range(denoise.layer_combo.count())
    ]
    np.testing.assert_allclose(preview.scale, image.scale)
    first = preview.data.copy()
    assert first.shape == noisy.shape
    assert widget.last_frame.encode_seconds is not None  # the encoder ran once

    # the shallowest gate to 0: only the decoder runs (one level), the same layer changes
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        widget.sliders[0].setValue(0.0)
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert widget.preview_layer is preview
    assert [layer.name for layer in viewer.layers] == ["noisy", "noisy [gate preview]"]
    assert widget.last_frame.encode_seconds is None and widget.last_frame.levels == 1
    change = np.abs(preview.data - first).mean()
    assert change > 1e-3 * np.abs(first).mean(), f"gate 0 at 0 changed the preview by only {change:g}"
    assert state.gates[0] == 0.0
    assert widget.last_latency is not None and widget.last_latency > 0  # measured (benchmarks/gui_latency.py)
    np.testing.assert_array_equal(image.data, noisy)  # the input is untouched

    # Reset goes back to the learned gates and the learned output
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        widget.reset()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    np.testing.assert_allclose(preview.data, first, rtol=1e-5, atol=1e-6)


def test_newer_moves_supersede_older_ones(viewer_session, add_dock, qtbot, heartbeat):
    viewer, _ = viewer_session
    image, noisy, widget = _on_noisy_layer(viewer, add_dock)
    frames = []
    widget.preview_updated.connect(frames.append)
    for value in np.linspace(0.0, 1.5, 12):  # a drag: many moves in quick succession
        widget.sliders[1].setValue(float(value))
        widget.request_preview()
    with heartbeat() as beat:
        qtbot.waitUntil(lambda: bool(frames) and not widget.preview_busy, timeout=20_000)
    beat.assert_responsive("while previewing")
    assert len(frames) < 12  # superseded requests were never shown
    assert frames[-1].gates[1] == pytest.approx(1.5)


def test_preview_of_a_stack_follows_the_slice(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    noisy, _ = _image((5, 40, 48))
    noisy[3] += 0.5
    stack = viewer.add_image(noisy, name="stack", scale=(3.0, 1.0, 1.0))
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(stack)
    viewer.dims.set_current_step(0, 3)
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        widget.request_preview()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    preview = widget.preview_layer
    assert preview.data.shape == (1, 40, 48)
    assert widget.last_frame.position == {"Z": 3}
    np.testing.assert_allclose(preview.translate, (9.0, 0.0, 0.0))  # over slice 3 in world units
    # moving the dims slider re-encodes the new slice into the same layer
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        viewer.dims.set_current_step(0, 1)
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert widget.preview_layer is preview
    np.testing.assert_allclose(preview.translate, (3.0, 0.0, 0.0))
    assert widget.last_frame.position == {"Z": 1} and widget.last_frame.encode_seconds is not None


def test_apply_to_layer_records_the_gates(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    image, noisy, widget = _on_noisy_layer(viewer, add_dock)
    widget.live_check.setChecked(False)
    widget.set_gates([0.5, 0.0, 1.25])
    assert widget.apply()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=20_000)
    out = viewer.layers["noisy [denoised]"]
    assert out.metadata[METADATA_KEY]["gates"] == pytest.approx((0.5, 0.0, 1.25))
    assert state.last_run.gates == pytest.approx((0.5, 0.0, 1.25))
    # the model's own gates are unchanged
    assert state.model.gates == pytest.approx(widget.learned)
    # the same as the engine with those gates
    from napari_addunet.engine.inference import denoise

    expected = denoise(state.model, noisy, gates=(0.5, 0.0, 1.25), device="cpu")
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)


def test_sweep_plots_psnr_and_ssim(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    noisy, clean = _image()
    viewer.add_image(clean, name="clean")
    image = viewer.add_image(noisy, name="noisy")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(image)
    widget.live_check.setChecked(False)
    assert not widget.sweep()  # no reference chosen yet
    widget.reference_combo.set_layer("clean")
    widget.sweep_gate_combo.setCurrentIndex(0)
    widget.sweep_steps.setValue(5)
    assert widget.sweep()
    qtbot.waitUntil(lambda: not widget.sweep_runner.running, timeout=20_000)
    result = state.sweep
    assert result is not None and result.gate == 0
    assert result.values.tolist() == pytest.approx(np.linspace(0, widget.sweep_to.value(), 5).tolist())
    assert np.all(np.isfinite(result.psnr)) and np.all((result.ssim > -1) & (result.ssim <= 1))
    assert np.ptp(result.psnr) > 0  # the gate matters
    lines = widget.sweep_canvas.axes[0].get_lines()
    assert lines[0].get_ydata().tolist() == pytest.approx(result.psnr.tolist())
    assert "best PSNR" in widget.status.text()
    widget.plot_sweep(result)  # a second sweep replaces the SSIM twin instead of adding one
    assert len(widget.sweep_canvas.figure.axes) == 2


def _start_long_sweep(viewer, add_dock, steps=400):
    noisy, clean = _image((128, 128))
    viewer.add_image(clean, name="clean")
    image = viewer.add_image(noisy, name="noisy")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(image)
    widget.live_check.setChecked(False)
    widget.reference_combo.set_layer("clean")
    widget.sweep_gate_combo.setCurrentIndex(2)
    widget.sweep_steps.setValue(steps)
    return widget


def test_cancel_stops_a_sweep(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    widget = _start_long_sweep(viewer, add_dock)
    seen = []
    widget.sweep_runner.event.connect(seen.append)
    assert widget.sweep()
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=20_000)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.sweep_runner.running, timeout=20_000)
    assert state.sweep is None  # nothing recorded
    assert len(seen) < 100  # stopped long before the 400 values
    assert "cancelled" in widget.status.text()
    assert widget.sweep_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_a_model_switch_during_a_sweep_or_a_preview_drops_the_old_result(viewer_session, add_dock, qtbot):
    from napari_addunet import create_model

    viewer, state = viewer_session
    widget = _start_long_sweep(viewer, add_dock, steps=60)
    assert widget.sweep()
    state.set_model(create_model("dncnn", depth=3, width=4), "no gates")  # fewer gates: none
    qtbot.waitUntil(lambda: not widget.sweep_runner.running, timeout=60_000)
    assert state.sweep is None and "active model changed" in widget.status.text()
    assert not widget.cancel_button.isEnabled() and state.jobs == {}
    # a preview computed for the old model does not reappear after the switch
    gated = create_model("addunet", width=4, kernels=(3, 3, 3))
    state.set_model(gated, "gated")
    widget.live_check.setChecked(True)
    assert widget.request_preview()
    state.set_model(create_model("dncnn", depth=3, width=4), "no gates again")
    qtbot.waitUntil(lambda: not widget.preview_busy, timeout=20_000)
    qtbot.wait(50)
    assert "noisy [gate preview]" not in [layer.name for layer in viewer.layers]


def test_a_shown_live_preview_follows_a_model_switch(viewer_session, add_dock, qtbot):
    from napari_addunet import create_model

    viewer, state = viewer_session
    noisy, _ = _image()
    image = viewer.add_image(noisy, name="noisy")
    widget = add_dock(viewer, WIDGET)
    assert widget.preview_layer is None  # opening the widget adds no layer by itself
    widget.layer_combo.set_layer(image)
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        assert widget.request_preview()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    first = widget.preview_layer
    state.set_model(create_model("addunet", width=4, kernels=(3, 3)), "another gated model")
    qtbot.waitUntil(
        lambda: widget.preview_layer is not None and widget.preview_layer is not first, timeout=20_000
    )
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert len(widget.sliders) == 2 and widget.preview_layer.name == "noisy [gate preview]"
    # a switch while the first preview is still computing: the new model's preview follows
    viewer.layers.remove(widget.preview_layer)
    qtbot.waitUntil(lambda: widget.preview_layer is None, timeout=5_000)
    assert widget.request_preview() and widget.preview_busy
    state.set_model(create_model("addunet", width=4, kernels=(3, 3, 3)), "a third gated model")
    qtbot.waitUntil(lambda: widget.preview_layer is not None, timeout=20_000)  # was never shown
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert len(widget.last_frame.gates) == 3


def test_closing_the_widget_takes_its_preview_layer_away(viewer_session, add_dock, qtbot):
    import gc

    viewer, _ = viewer_session
    image, _, widget = _on_noisy_layer(viewer, add_dock)
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        assert widget.request_preview()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert "noisy [gate preview]" in viewer.layers
    from qtpy.QtCore import QCoreApplication, QEvent

    viewer.window.remove_dock_widget("all")  # what the dock's close button does
    widget.deleteLater()
    del widget
    gc.collect()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    qtbot.waitUntil(lambda: "noisy [gate preview]" not in viewer.layers, timeout=5_000)
    assert [layer.name for layer in viewer.layers] == ["noisy"]  # the user's layer stays


def test_gates_set_beyond_the_slider_range_widen_it_when_the_widget_opens(viewer_session, add_dock):
    viewer, state = viewer_session
    state.gates = (3.0, 0.5, 0.5)  # from the console, before the widget is open
    widget = add_dock(viewer, WIDGET)
    assert widget.gates() == pytest.approx((3.0, 0.5, 0.5))  # was cut to 2.0
    assert widget.sliders[0].maximum() >= 3.0


def test_a_4d_layer_previews_and_applies_with_the_axes_typed(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    noisy, _ = _image((2, 3, 40, 48))
    image = viewer.add_image(noisy, name="tzyx", units="um")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(image)
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert not widget.request_preview()  # 4-D: the axes cannot be told from the shape
    assert "No preview: cannot tell the axes" in widget.status.text()
    assert "Axes box" in widget.status.text()
    widget.axes_edit.setText("TZYX")
    viewer.dims.set_current_step(1, 2)
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        assert widget.request_preview()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert widget.last_frame.axes == "TZYX" and widget.last_frame.position["Z"] == 2
    assert widget.status.text() == ""  # the earlier reason is gone once a preview shows
    assert tuple(widget.preview_layer.units) == tuple(image.units)  # the viewer keeps its units
    # the source rescaled from the console: the preview layer follows on the next update
    image.scale = (1.0, 2.0, 0.5, 0.5)
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        widget.sliders[0].setValue(0.3)
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    np.testing.assert_allclose(widget.preview_layer.scale, image.scale)
    widget.live_check.setChecked(False)
    assert widget.apply()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=20_000)
    out = viewer.layers["tzyx [denoised]"]
    assert out.data.shape == noisy.shape and out.metadata[METADATA_KEY]["axes"] == "TZYX"


def test_a_multiscale_layer_is_refused_with_a_clear_reason(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    noisy, _ = _image((128, 128))
    pyramid = viewer.add_image([noisy, noisy[::2, ::2]], name="pyramid", multiscale=True)
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(pyramid)
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert not widget.request_preview()
    assert "'pyramid' is a multiscale (pyramid) image" in widget.status.text()
    assert "to preview it" in widget.status.text() and widget.preview_layer is None


def test_an_rgba_layer_is_previewed_without_its_alpha_as_apply_denoises_it(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    noisy, _ = _image((3, 40, 48))
    rgba = np.concatenate([np.moveaxis(noisy, 0, -1), np.ones((40, 48, 1), np.float32)], axis=-1)
    rgba = np.clip(rgba * 255, 0, 255).astype(np.uint8)
    image = viewer.add_image(rgba, name="rgba", rgb=True)
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(image)
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        assert widget.request_preview()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert widget.last_frame.block.shape == (40, 48, 3)
    widget.live_check.setChecked(False)
    assert widget.apply()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=20_000)
    applied = viewer.layers["rgba [denoised]"].data
    assert applied.shape == (40, 48, 4) and np.array_equal(applied[..., 3], rgba[..., 3])  # alpha kept
    np.testing.assert_allclose(widget.last_frame.block, applied[..., :3], rtol=1e-4, atol=1e-2)
    widget.axes_edit.setText("YXC")  # typed: previewed as Apply runs it, without the alpha
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        assert widget.request_preview()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert widget.last_frame.block.shape == (40, 48, 3)


def test_the_preview_follows_new_data_and_data_edited_in_place(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    image, noisy, widget = _on_noisy_layer(viewer, add_dock)
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        assert widget.request_preview()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)

    # new data assigned: the live preview is made again from them (it stayed on the old ones)
    other, _ = _image(seed=5)
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        image.data = other * 0.5
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert widget.last_frame.encode_seconds is not None
    fresh = widget.preview_layer.data.copy()
    # edited in place and refreshed (napari's idiom): the next slider move encodes again
    image.data[:] = noisy[::-1]
    image.refresh()
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        widget.sliders[2].setValue(widget.sliders[2].value() * 0.5)
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert widget.last_frame.encode_seconds is not None  # was a cached encoding of the old data
    assert np.abs(widget.preview_layer.data - fresh).mean() > 1e-3


def test_the_preview_is_of_the_slice_on_screen_when_layers_have_other_units(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    rng = np.random.default_rng(0)
    um = viewer.add_image(rng.random((20, 64, 64)).astype(np.float32), name="um stack", units="um")
    viewer.add_image(
        rng.random((20, 64, 64)).astype(np.float32), name="nm stack", units="nm", scale=(500, 1000, 1000)
    )
    viewer.dims.set_current_step(0, 6)
    shown = int(round(um._slicing_state.data_slice.point[0]))  # the slice napari draws
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(um)
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        assert widget.request_preview()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert widget.last_frame.position == {"Z": shown}  # was read in the wrong units: Z 19


def test_the_preview_of_a_sheared_stack_is_of_the_slice_on_screen(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    noisy, _ = _image((20, 64, 64))
    sheared = viewer.add_image(noisy, name="sheared", shear=[0.3, 0.0, 0.0])  # Z moves with Y
    viewer.dims.set_current_step(0, 4)
    shown = int(round(sheared._slicing_state.data_slice.point[0]))  # the slice napari draws
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(sheared)
    with qtbot.waitSignal(widget.preview_updated, timeout=20_000):
        assert widget.request_preview()
    qtbot.waitUntil(_preview_settled(widget), timeout=20_000)
    assert shown == 4 and widget.last_frame.position == {"Z": shown}  # was Z 0: the shear moved it
    # and the preview is drawn on that slice, over the pixels it was computed from
    preview = widget.preview_layer
    assert round(preview._slicing_state.data_slice.point[0]) == 0
    on_screen = list(viewer.dims.displayed)
    np.testing.assert_allclose(
        preview._data_to_world.set_slice(on_screen)((0.0, 0.0)),
        sheared._data_to_world.set_slice(on_screen)(widget.last_frame.origin),
        atol=1e-9,
    )


def test_axes_typed_for_an_rgb_layer_that_do_not_fit_are_explained(viewer_session, add_dock):
    viewer, _ = viewer_session
    rgb = viewer.add_image(
        np.random.default_rng(1).random((64, 64, 3)).astype(np.float32), name="photo", rgb=True
    )
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(rgb)
    widget.axes_edit.setText("ZYX")
    assert not widget.request_preview()  # was an IndexError out of a Qt slot
    assert "end the axes with C" in widget.status.text()
