"""Train in a real viewer: a short run from layers completes, can be stopped, and its model becomes active."""

from __future__ import annotations

import numpy as np
import pytest

from napari_addunet.engine.training_events import StepDone

WIDGET = "Train"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models train faster on one thread (and do not fight other processes for cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _layers(viewer, n=2, shape=(48, 48)):
    rng = np.random.default_rng(0)
    for i in range(n):
        viewer.add_image(rng.random(shape).astype(np.float32), name=f"img{i}")


def _tiny_settings(widget, epochs=2, steps=3):
    widget.arch_combo.setCurrentIndex(widget.arch_combo.findData("addunet"))
    widget.arch_form.set_values(width=4, kernels=(3, 3))
    widget.train_form.set_values(epochs=epochs, steps_per_epoch=steps, batch_size=2, patch_size=16)
    widget.more_form.set_values(val_patches=4, warmup_steps=0)
    widget.device_combo.set_device("cpu")


def test_forms_come_from_the_registry(viewer_session, add_dock):
    from napari_addunet import get_config_class, list_models

    viewer, _ = viewer_session
    widget = add_dock(viewer, WIDGET)
    assert [widget.arch_combo.itemData(i) for i in range(widget.arch_combo.count())] == list_models()
    for name in ("addunet", "dncnn"):
        widget.arch_combo.setCurrentIndex(widget.arch_combo.findData(name))
        rows = {r["name"]: r for r in get_config_class(name).describe()}
        shown = set(widget.arch_form.editors)
        assert shown == set(rows) - {"in_channels", "out_channels", "num_classes"}
        for field, editor in widget.arch_form.editors.items():
            if rows[field]["type"] == "int" and "le" in rows[field]:
                assert editor.maximum() == rows[field]["le"]
    assert widget.train_form.editors["sigma_max"].maximum() == 255.0
    # the device list is what is present ('auto' first, then at least the CPU)
    devices = [widget.device_combo.itemData(i) for i in range(widget.device_combo.count())]
    assert devices[0] == "auto" and "cpu" in devices


def test_short_training_run_completes_and_becomes_active(
    viewer_session, add_dock, qtbot, tmp_path, heartbeat
):
    viewer, state = viewer_session
    _layers(viewer)
    widget = add_dock(viewer, WIDGET)
    gates = add_dock(viewer, "Skip gates")
    assert len(gates.sliders) == 3  # the tiny model's
    _tiny_settings(widget)
    widget.table.set_row("img0")
    widget.table.set_row("img1")
    before = state.model
    assert widget.ready  # torch's lazy imports are done when the widget opens, not at Start

    with heartbeat() as beat:
        assert widget.start()
        assert not widget.start()  # a second start is refused while training runs
        qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    beat.assert_responsive("during training")

    result = widget.result
    assert result.reason == "completed" and result.step == 6
    assert state.model is result.model and state.model is not before
    assert state.model_source.startswith("trained in this session")
    assert state.training is result and len(widget.history) == 2
    assert widget.history[-1]["val_psnr"] is not None  # one layer held out for validation
    assert len(gates.sliders) == 2  # the other widgets follow the active model
    assert widget.canvas.axes[0].get_lines() and widget.canvas.axes[1].get_lines()
    meta = state.model.metadata["training"]
    assert meta["data"]["train"]["names"] + meta["data"]["validation"]["names"] in (
        ["img0", "img1"],
        ["img1", "img0"],
    )

    path = tmp_path / "trained.safetensors"
    assert widget.save_model(path)
    from napari_addunet import load_model

    loaded = load_model(path)
    assert loaded.gates == pytest.approx(state.model.gates)
    # another model made active since (e.g. loaded in Denoise): Save still writes the trained one
    from napari_addunet import create_model

    state.set_model(create_model("addunet", width=4, kernels=(3, 3, 3)), "another model")
    assert widget.save_model(tmp_path / "again.safetensors")
    again = load_model(tmp_path / "again.safetensors")
    assert len(again.gates) == 2 and again.gates == pytest.approx(result.model.gates)


def test_training_can_be_stopped(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    _layers(viewer)
    widget = add_dock(viewer, WIDGET)
    _tiny_settings(widget, epochs=200, steps=5)
    widget.table.set_row("img0")
    widget.table.set_row("img1")

    clicked = []

    def stop_early(event):
        if isinstance(event, StepDone) and event.step >= 3 and not clicked:
            clicked.append(event.step)
            widget.stop_button.click()

    widget.runner.event.connect(stop_early)
    assert widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)

    # stopped long before the 1000 planned steps, within moments of the click (the loop
    # finishes the step in progress; the steps already queued for display are a few more)
    assert widget.result.reason == "stopped"
    assert 3 <= widget.result.step < 200
    assert widget.result.step - clicked[0] <= 20  # a few steps past the one shown at the click
    assert state.model is widget.result.model
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()


def test_joint_training_with_a_class_per_layer(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    _layers(viewer, n=4)
    widget = add_dock(viewer, WIDGET)
    _tiny_settings(widget, epochs=1, steps=2)
    widget.train_form.set_values(lambda_cls=1.0)
    for i, cls in enumerate(["round", "long", "round", "long"]):
        widget.table.set_row(f"img{i}", cls=cls)
    assert widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    assert widget.result is not None, widget.status.text()
    assert state.model.num_classes == 2
    assert state.model.class_names == ["long", "round"]


def test_bad_input_is_refused_with_a_message(viewer_session, add_dock):
    viewer, state = viewer_session
    _layers(viewer)
    widget = add_dock(viewer, WIDGET)
    _tiny_settings(widget)
    assert not widget.start()  # nothing ticked
    widget.table.set_row("img0")
    widget.kind_combo.setCurrentIndex(widget.kind_combo.findData("pairs"))
    assert not widget.start()  # pairs without a target
    widget.kind_combo.setCurrentIndex(widget.kind_combo.findData("clean"))
    widget.arch_form.set_values(kernels="3,4")
    assert not widget.start()  # even kernel size: the config's own check
    assert not widget.runner.running and state.training is None


def test_a_failing_run_reports_the_engine_message(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    _layers(viewer, shape=(12, 12))
    widget = add_dock(viewer, WIDGET)
    _tiny_settings(widget)
    widget.table.set_row("img0")
    before = state.model
    assert widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    assert "smaller than the 16x16 patch" in widget.status.text()
    assert state.model is before
    assert widget.start_button.isEnabled()  # usable again


def test_ticks_classes_and_targets_follow_a_renamed_layer(viewer_session, add_dock):
    viewer, _ = viewer_session
    _layers(viewer, n=3)
    widget = add_dock(viewer, WIDGET)
    widget.table.set_row("img0", cls="cat", target="img2")
    viewer.layers["img0"].name = "renamed"
    viewer.layers["img2"].name = "target renamed"
    names = [widget.table.item(r, widget.table.NAME).text() for r in range(widget.table.rowCount())]
    assert names == ["renamed", "img1", "target renamed"]
    ((layer, cls, target),) = widget.table.chosen()
    assert layer is viewer.layers["renamed"] and cls == "cat" and target is viewer.layers["target renamed"]
    assert widget.table.cellWidget(0, widget.table.TARGET).currentText() == "target renamed"
    viewer.layers.remove("target renamed")  # a removed target is dropped, the tick stays
    ((layer, _, target),) = widget.table.chosen()
    assert layer.name == "renamed" and target is None


def test_closing_the_widget_mid_training_stops_it_and_frees_the_slot(viewer_session, add_dock, qtbot):
    import gc
    import sys

    from qtpy.QtCore import QThreadPool

    viewer, state = viewer_session
    _layers(viewer)
    widget = add_dock(viewer, WIDGET)
    _tiny_settings(widget, epochs=500, steps=5)
    widget.table.set_row("img0")
    steps = []
    widget.runner.event.connect(lambda e: steps.append(e) if isinstance(e, StepDone) else None)
    assert widget.start()
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=60_000)
    assert "training" in state.jobs
    errors = []
    hook, sys.excepthook = sys.excepthook, lambda *exc: errors.append(exc)
    try:
        viewer.window.remove_dock_widget("all")  # what the dock's close button does
        widget.deleteLater()
        del widget
        gc.collect()  # the runner's Python side is collected before Qt destroys it
        qtbot.waitUntil(lambda: "training" not in state.jobs, timeout=60_000)
        qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=60_000)
        qtbot.wait(50)
    finally:
        sys.excepthook = hook
    assert errors == []  # no exception in a Qt slot
    again = add_dock(viewer, WIDGET)  # a new Train widget can start at once
    _tiny_settings(again, epochs=1, steps=2)
    again.table.set_row("img0")
    assert again.start()
    qtbot.waitUntil(lambda: not again.runner.running, timeout=60_000)
    assert again.result is not None and again.result.step == 2


def test_a_multiscale_layer_is_refused_not_trained_on_its_thumbnail(viewer_session, add_dock, monkeypatch):
    import napari_addunet._widgets.train as train_widget

    viewer, state = viewer_session
    rng = np.random.default_rng(0)
    full = rng.random((128, 128)).astype(np.float32)
    viewer.add_image([full, full[::2, ::2], full[::4, ::4]], name="pyramid", multiscale=True)
    widget = add_dock(viewer, WIDGET)
    _tiny_settings(widget)
    errors: list[str] = []
    monkeypatch.setattr(train_widget, "show_error", errors.append)
    widget.table.set_row("pyramid")
    assert not widget.start()
    assert (
        errors
        and "'pyramid' is a multiscale (pyramid) image" in errors[-1]
        and "to train on it" in errors[-1]
    )
    assert not widget.runner.running and state.training is None


def test_redraws_reuse_the_figure_instead_of_stacking_twin_axes(viewer_session, add_dock):
    viewer, _ = viewer_session
    widget = add_dock(viewer, WIDGET)
    figure = widget.canvas.figure
    for epoch in range(1, 6):
        widget.history.append(
            {
                "epoch": epoch,
                "step": 10 * epoch,
                "train_loss": 1.0 / epoch,
                "val_loss": 1.2 / epoch,
                "val_psnr": 20.0 + epoch,
                "gates": [1.0, 0.5],
            }
        )
        widget._draw()
        # the loss and gate axes and one PSNR twin: a new twin per redraw used to pile up
        assert len(figure.axes) == 3
    psnr_lines = [
        line for ax in figure.axes for line in ax.get_lines() if line.get_label() == "val PSNR (dB)"
    ]
    assert len(psnr_lines) == 1 and psnr_lines[0].get_ydata().tolist() == [21.0, 22.0, 23.0, 24.0, 25.0]
    widget.history.clear()  # a new run starts with an empty plot, no PSNR left from the last
    widget._draw()
    assert len(figure.axes) == 2


def test_every_float_setting_takes_its_bounds_and_fine_values(viewer_session, add_dock):
    from napari_addunet import TrainingConfig

    viewer, _ = viewer_session
    widget = add_dock(viewer, WIDGET)
    rows = {r["name"]: r for r in TrainingConfig.describe()}
    forms = [widget.train_form, widget.more_form]
    editors = {n: e for f in forms for n, e in f.editors.items() if rows[n]["type"] == "float"}
    for name, editor in editors.items():
        if "le" in rows[name]:  # the spin box's maximum is the setting's, not rounded past it
            assert editor.maximum() == pytest.approx(rows[name]["le"], abs=0), name
    for form in forms:
        form.set_values(
            **{k: v for k, v in (("ema_decay", 0.999), ("lambda_cls", 0.001)) if k in form.editors}
        )
    values = {k: v for form in forms for k, v in form.values().items()}
    assert values["ema_decay"] == pytest.approx(0.999)  # with 2 decimals: 1.0, then refused
    assert values["lambda_cls"] == pytest.approx(0.001)  # with 2 decimals: 0
    TrainingConfig(**{k: v for k, v in values.items() if k in ("ema_decay", "lambda_cls")})


def test_a_progress_bar_takes_totals_past_32_bits(qtbot):
    from qtpy.QtWidgets import QProgressBar

    from napari_addunet._widgets._jobs import BAR_LIMIT, bar_position

    bar = QProgressBar()
    qtbot.addWidget(bar)
    total = 3000 * 1_000_000  # epochs x steps the settings allow; setRange overflowed
    value, length = bar_position(total // 2, total)
    bar.setRange(0, length)
    bar.setValue(value)
    assert bar.maximum() == BAR_LIMIT and abs(bar.value() / bar.maximum() - 0.5) < 1e-6
    assert (
        bar_position(5, 10) == (5, 10) and bar_position(12, 10) == (10, 10) and bar_position(3, 0) == (0, 0)
    )


def test_classes_with_lambda_0_are_refused_instead_of_an_untrained_head(
    viewer_session, add_dock, monkeypatch
):
    import napari_addunet._widgets.train as train_widget

    viewer, state = viewer_session
    _layers(viewer)
    widget = add_dock(viewer, WIDGET)
    _tiny_settings(widget)
    errors: list[str] = []
    monkeypatch.setattr(train_widget, "show_error", errors.append)
    widget.table.set_row("img0", cls="a")
    widget.table.set_row("img1", cls="b")
    assert not widget.start()  # lambda_cls is 0 by default: the head would stay at chance
    assert errors and "lambda_cls is 0" in errors[-1]
    assert not widget.runner.running and state.training is None


def test_a_job_started_as_the_last_one_ends_keeps_its_claim(viewer_session, qtbot):
    import time

    from napari_addunet._widgets._jobs import JobRunner

    _, state = viewer_session
    runner = JobRunner(state, "training")

    def quick():
        return None
        yield

    def slow():
        while not runner.cancel_event.is_set():
            time.sleep(0.01)
            yield None

    second: list[bool] = []
    runner.done.connect(lambda outcome: second or second.append(runner.start(slow, "second job")))
    assert runner.start(quick, "first job")
    qtbot.waitUntil(lambda: bool(second), timeout=10_000)
    qtbot.wait(300)  # every handler of the first job's end has run
    # the first job's release used to free the slot of the job started from its 'done'
    assert second == [True] and runner.running and state.jobs == {"training": "second job"}
    other = JobRunner(state, "training")
    assert not other.start(quick, "a third")
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
    qtbot.waitUntil(lambda: state.jobs == {}, timeout=10_000)


def test_a_script_that_exits_right_after_opening_the_widget_ends_cleanly(tmp_path, repo_root):
    """The warm-up worker is still importing when the script ends: it used to abort the
    interpreter (its last signal fired into objects Qt had already torn down)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "open_and_exit.py"
    script.write_text(
        "import napari\n"
        "viewer = napari.Viewer(show=False)\n"
        "viewer.window.add_plugin_dock_widget('napari-addunet', 'Train')\n"
        "print('opened', flush=True)\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(repo_root / "src"), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "opened" in proc.stdout and "has been deleted" not in proc.stderr


def test_closing_the_dock_stops_training_at_once_without_a_garbage_collection(
    viewer_session, add_dock, qtbot
):
    import gc

    viewer, state = viewer_session
    _layers(viewer)
    widget = add_dock(viewer, WIDGET)
    _tiny_settings(widget, epochs=500, steps=5)
    widget.table.set_row("img0")
    steps = []
    widget.runner.event.connect(lambda e: steps.append(e) if isinstance(e, StepDone) else None)
    before = state.model
    assert widget.start()
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=60_000)
    gc.disable()  # the widget sits in reference cycles: no collection may stop the job for it
    try:
        viewer.window.remove_dock_widget("all")  # the dock's close button
        del widget
        qtbot.waitUntil(lambda: "training" not in state.jobs, timeout=30_000)  # was still running
    finally:
        gc.enable()
    assert state.model is before  # the closed widget's run did not become the active model
