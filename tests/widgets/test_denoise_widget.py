"""Denoise & classify in a real viewer: new layers, geometry, cancel, bad input, a responsive UI."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from napari_addunet.engine.readout import METADATA_KEY

WIDGET = "Denoise & classify"


def _wait(qtbot, widget, timeout=30_000):
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=timeout)


def _seconds_per_plane(model, size: int) -> float:
    """Fastest of three forward passes of one ``size`` x ``size`` plane, after a warm-up."""
    import torch

    x = torch.rand(1, 1, size, size)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(3):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return min(times)


def _noisy(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (0.5 + 0.1 * rng.standard_normal(shape)).astype(np.float32)


def test_denoise_2d_adds_denoised_and_residual(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    image = viewer.add_image(_noisy((64, 80)), name="cells", scale=(0.5, 0.25), translate=(3.0, -2.0))
    before = image.data.copy()
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(image)
    widget.residual_check.setChecked(True)
    assert widget.axes_label.text().startswith("YX")

    assert widget.run()
    _wait(qtbot, widget)

    assert widget.run_control.last_outcome.ok
    names = [layer.name for layer in viewer.layers]
    assert names == ["cells", "cells [denoised]", "cells [residual]"]
    denoised, residual = viewer.layers["cells [denoised]"], viewer.layers["cells [residual]"]
    for out in (denoised, residual):
        assert out.data.shape == image.data.shape
        np.testing.assert_allclose(out.scale, image.scale)
        np.testing.assert_allclose(out.translate, image.translate)
        np.testing.assert_allclose(out.affine.affine_matrix, image.affine.affine_matrix)
    np.testing.assert_allclose(residual.data, image.data - denoised.data, atol=1e-6)
    np.testing.assert_array_equal(image.data, before)  # the input is never changed
    record = denoised.metadata[METADATA_KEY]
    assert record["input_name"] == "cells" and record["axes"] == "YX"
    assert state.last_run.output_names == ["cells [denoised]", "cells [residual]"]
    assert state.last_run.megapixels_per_second > 0
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    # a second run: napari numbers the taken names, and the record follows the layers added
    assert widget.run()
    _wait(qtbot, widget)
    added = [layer.name for layer in widget.run_control.added]
    assert added == ["cells [denoised] [1]", "cells [residual] [1]"]
    assert state.last_run.output_names == added
    assert viewer.layers[added[0]].metadata[METADATA_KEY]["output_names"] == added
    # the residual keeps its own note (it was given the whole record, class bars included)
    assert viewer.layers[added[1]].metadata[METADATA_KEY] == {"residual_of": "cells"}
    assert added[0] in widget.status.text()


def test_self_ensemble_choice_reaches_the_engine(viewer_session, add_dock, qtbot):
    from napari_addunet.engine.inference import denoise

    viewer, state = viewer_session
    image = viewer.add_image(_noisy((48, 56), seed=3), name="cells")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(image)
    choices = [widget.ensemble_combo.itemData(i) for i in range(widget.ensemble_combo.count())]
    assert choices == [1, 2, 4, 8] and widget.ensemble_combo.currentData() == 1
    widget.ensemble_combo.setCurrentIndex(choices.index(8))

    assert widget.run()
    _wait(qtbot, widget)

    assert widget.run_control.last_outcome.ok
    out = viewer.layers["cells [denoised]"]
    assert out.metadata[METADATA_KEY]["ensemble"] == 8
    expected = denoise(state.model, image.data, device="cpu", ensemble=8)
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out.data, denoise(state.model, image.data, device="cpu"), atol=1e-4)


def test_denoise_3d_stack_keeps_geometry_and_labels(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    stack = viewer.add_image(
        _noisy((6, 48, 40)), name="stack", scale=(2.0, 0.5, 0.5), axis_labels=("z", "y", "x")
    )
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(stack)
    from napari.utils import progress
    from qtpy.QtCore import QTimer

    steps, in_dock = [], set()
    widget.runner.event.connect(lambda p: steps.append((p.done, p.total)))
    watch = QTimer()
    watch.timeout.connect(lambda: in_dock.update(bar.desc for bar in progress._all_instances))
    watch.start(5)

    assert widget.run()
    _wait(qtbot, widget)
    # the run showed in napari's activity dock (with a cancel button), and its bar is gone afterwards
    qtbot.waitUntil(lambda: not progress._all_instances, timeout=5_000)
    watch.stop()
    assert any("stack" in desc or "denoising" in desc for desc in in_dock), in_dock

    out = viewer.layers["stack [denoised]"]
    assert out.data.shape == (6, 48, 40)
    np.testing.assert_allclose(out.scale, (2.0, 0.5, 0.5))
    assert tuple(out.axis_labels) == ("z", "y", "x")
    assert state.last_run.axes == "ZYX" and state.last_run.plane_grid == (6,)
    # the progress bar moved slice by slice (one tile per slice here)
    tile_steps = [d for d, t in steps if t == 6]
    assert tile_steps[-1] == 6 and len(set(tile_steps)) >= 6


def test_cancel_mid_run_leaves_no_layer(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    stack = viewer.add_image(_noisy((60, 96, 96)), name="long")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(stack)
    widget.tile_spin.setValue(64)  # several tiles per slice: cancel lands between tiles
    widget.runner.event.connect(lambda p: p.done >= 2 and widget.cancel_button.click())

    assert widget.run()
    _wait(qtbot, widget)

    assert widget.run_control.last_outcome.status == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["long"]
    assert "cancelled" in widget.status.text()
    assert widget.run_button.isEnabled()


def test_new_data_in_the_layer_during_a_run_stops_it_and_adds_nothing(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    stack = viewer.add_image(_noisy((60, 96, 96)), name="cells")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(stack)
    replaced = []

    def replace_once(progress):
        if progress.done >= 1 and not replaced:
            replaced.append(True)
            stack.data = _noisy((64, 64))  # e.g. another file loaded into the layer

    widget.runner.event.connect(replace_once)
    assert widget.run()
    _wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["cells"]  # no result of the old data
    assert "changed during the run" in widget.status.text() and state.last_run is None
    assert widget.run_control.last_outcome.status == "cancelled"
    assert widget.run()  # and the new data runs
    _wait(qtbot, widget)
    assert viewer.layers["cells [denoised]"].data.shape == (64, 64)


def test_layer_removed_during_run(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    stack = viewer.add_image(_noisy((60, 96, 96)), name="doomed")
    keep = viewer.add_image(_noisy((32, 32)), name="keep")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(stack)
    removed = []

    def remove_once(progress):
        if progress.done >= 1 and not removed:
            removed.append(True)
            viewer.layers.remove(stack)

    widget.runner.event.connect(remove_once)
    assert widget.run()
    _wait(qtbot, widget)

    assert [layer.name for layer in viewer.layers] == ["keep"]
    assert "removed during the run" in widget.status.text()
    assert state.last_run is None
    # usable again afterwards
    widget.layer_combo.set_layer(keep)
    assert widget.run()
    _wait(qtbot, widget)
    assert "keep [denoised]" in [layer.name for layer in viewer.layers]


def test_second_run_while_running_is_refused(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    stack = viewer.add_image(_noisy((40, 96, 96)), name="busy")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(stack)
    assert widget.run()
    assert not widget.run()  # refused, not queued or interleaved
    assert not widget.run_button.isEnabled()
    _wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["busy", "busy [denoised]"]


@pytest.mark.parametrize("kind", ["labels", "points"])
def test_wrong_layer_type_is_refused(viewer_session, add_dock, kind):
    viewer, state = viewer_session
    layer = (
        viewer.add_labels(np.zeros((32, 32), dtype=np.uint8), name="mask")
        if kind == "labels"
        else viewer.add_points(np.zeros((3, 2)), name="spots")
    )
    widget = add_dock(viewer, WIDGET)
    assert widget.layer_combo.count() == 0  # only image layers are offered
    assert not widget.run_control.start(layer)
    assert len(viewer.layers) == 1 and state.last_run is None


def test_empty_layer_is_refused(viewer_session, add_dock):
    import warnings

    viewer, state = viewer_session
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # napari's own, for a layer without pixels
        empty = viewer.add_image(np.zeros((0, 16, 16), np.float32), contrast_limits=(0, 1), name="empty")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(empty)
    assert not widget.run()
    assert [layer.name for layer in viewer.layers] == ["empty"] and state.last_run is None


def test_ambiguous_axes_need_an_override(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    layer = viewer.add_image(_noisy((3, 40, 40)), name="three")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(layer)
    assert "cannot tell" in widget.axes_label.text()
    assert not widget.run()
    widget.axes_edit.setText("ZYX")
    assert widget.run()
    _wait(qtbot, widget)
    assert viewer.layers["three [denoised]"].data.shape == (3, 40, 40)
    # replacing the layer's data updates the detected axes at once
    widget.axes_edit.setText("")
    layer.data = _noisy((24, 36))
    assert widget.axes_label.text().startswith("YX (24 x 36)")


def test_classify_without_head_is_refused(viewer_session, add_dock):
    viewer, state = viewer_session
    layer = viewer.add_image(_noisy((32, 32)), name="img")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(layer)
    assert not widget.classify_check.isChecked()  # the tiny model has no head
    widget.classify_check.setChecked(True)
    assert not widget.run()
    assert len(viewer.layers) == 1 and state.last_run is None


def test_bad_checkpoint_leaves_active_model(viewer_session, add_dock, tmp_path):
    viewer, state = viewer_session
    widget = add_dock(viewer, WIDGET)
    before = state.model
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint at all")
    assert not widget.load_model(broken)
    assert state.model is before
    assert "Could not load" in widget.status.text()
    assert not widget.load_model(tmp_path / "missing.safetensors")
    assert state.model is before
    # a bundled model by name loads and becomes active everywhere
    assert widget.load_model("addunet-gray-blind")
    assert state.model is not before and state.model_source == "bundled addunet-gray-blind"


def test_ui_stays_responsive_during_a_run(viewer_session, add_dock, qtbot, heartbeat):
    """A QTimer heartbeat: the event loop never stalls for more than 0.5 s while the worker runs."""
    import torch

    from napari_addunet import create_model

    viewer, state = viewer_session
    torch.manual_seed(0)
    model = create_model("addunet", width=16, kernels=(5, 5, 3)).eval()
    state.set_model(model, "a slower model")
    # Size the stack from this machine's speed: the run must last well beyond the 0.5 s stall
    # floor, or work done on the UI thread would go unnoticed (a fixed stack got too fast).
    planes = max(24, min(400, math.ceil(1.5 / _seconds_per_plane(model, 128))))
    stack = viewer.add_image(_noisy((planes, 128, 128)), name="heartbeat")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(stack)
    with heartbeat() as beat:
        assert widget.run()
        _wait(qtbot, widget, timeout=120_000)
    assert beat.seconds > 0.6, f"the run ({planes} planes) was too short to measure responsiveness"
    beat.assert_responsive("while denoising")
    assert "heartbeat [denoised]" in [layer.name for layer in viewer.layers]


def test_closing_the_widget_mid_run_stops_it_and_frees_the_viewer(viewer_session, add_dock, qtbot):
    from qtpy.QtCore import QThreadPool

    viewer, state = viewer_session
    stack = viewer.add_image(_noisy((60, 96, 96)), name="closing")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(stack)
    widget.tile_spin.setValue(64)
    assert widget.run()
    assert "inference" in state.jobs
    viewer.window.remove_dock_widget(widget)
    widget.deleteLater()  # the widget is gone (napari only un-docks it)
    qtbot.waitUntil(lambda: "inference" not in state.jobs, timeout=10_000)
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=30_000)
    assert [layer.name for layer in viewer.layers] == ["closing"]
    # another widget can run at once
    again = add_dock(viewer, WIDGET)
    again.layer_combo.set_layer(stack)
    again.tile_spin.setValue(0)
    assert again.run()
    _wait(qtbot, again)
    assert "closing [denoised]" in [layer.name for layer in viewer.layers]


def test_rgb_results_keep_the_source_contrast_limits(viewer_session, add_dock, qtbot):
    viewer, _ = viewer_session
    rng = np.random.default_rng(2)
    rgb = (120 + 10 * rng.standard_normal((40, 48, 3))).clip(0, 255).astype(np.uint8)
    image = viewer.add_image(rgb, name="photo", rgb=True)
    assert tuple(image.contrast_limits) == (0, 255)
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(image)
    assert widget.run()
    _wait(qtbot, widget)
    result = viewer.layers["photo [denoised]"]
    assert result.rgb and tuple(result.contrast_limits) == (0, 255)  # not stretched to its own range


def test_deleting_a_result_layer_frees_its_array(viewer_session, add_dock, qtbot):
    import gc
    import weakref

    viewer, _ = viewer_session
    image = viewer.add_image(_noisy((64, 80)), name="cells")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(image)
    widget.residual_check.setChecked(True)
    assert widget.run()
    _wait(qtbot, widget)
    assert widget.run_control.last_outcome.ok
    assert [layer.name for layer in widget.run_control.added] == ["cells [denoised]", "cells [residual]"]
    arrays = [weakref.ref(viewer.layers[name].data) for name in ("cells [denoised]", "cells [residual]")]
    viewer.layers.remove("cells [denoised]")
    viewer.layers.remove("cells [residual]")
    qtbot.wait(50)
    gc.collect()
    assert [ref() is None for ref in arrays] == [True, True]  # nothing in the plugin keeps them
    assert widget.run_control.added == []
    assert widget.run_control.last_outcome.value.record.output_names == [
        "cells [denoised]",
        "cells [residual]",
    ]


def test_a_layer_renamed_during_the_run_names_the_results(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    stack = viewer.add_image(_noisy((30, 64, 64)), name="cells")
    widget = add_dock(viewer, WIDGET)
    widget.layer_combo.set_layer(stack)
    widget.residual_check.setChecked(True)
    renamed = []

    def rename_once(progress):
        if progress.done >= 1 and not renamed:
            renamed.append(True)
            stack.name = "nuclei"

    widget.runner.event.connect(rename_once)
    assert widget.run()
    _wait(qtbot, widget)
    assert renamed and [layer.name for layer in viewer.layers] == [
        "nuclei",
        "nuclei [denoised]",
        "nuclei [residual]",
    ]
    assert viewer.layers["nuclei [denoised]"].metadata[METADATA_KEY]["input_name"] == "nuclei"
    assert viewer.layers["nuclei [residual]"].metadata[METADATA_KEY] == {"residual_of": "nuclei"}
    assert state.last_run.input_name == "nuclei"
