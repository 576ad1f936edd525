"""The four dock widgets come from the manifest, share one session per viewer, and are reachable from the console."""

from __future__ import annotations

import numpy as np
import pytest

WIDGETS = {
    "Train": "TrainWidget",
    "Denoise & classify": "DenoiseWidget",
    "Skip gates": "GatesWidget",
    "Readout": "ReadoutWidget",
}


def test_manifest_lists_the_widgets():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-addunet")
    shown = {w.display_name: w.command for w in manifest.contributions.widgets or []}
    assert set(shown) == set(WIDGETS)
    assert shown["Train"] == "napari-addunet.make_train_widget"
    assert shown["Denoise & classify"] == "napari-addunet.make_denoise_widget"
    assert shown["Skip gates"] == "napari-addunet.make_gates_widget"
    assert shown["Readout"] == "napari-addunet.make_readout_widget"


def test_all_widgets_open_together_and_share_one_model(make_napari_viewer, add_dock, tiny_model):
    import napari_addunet

    viewer = make_napari_viewer()
    widgets = {name: add_dock(viewer, name) for name in WIDGETS}
    for name, cls in WIDGETS.items():
        assert type(widgets[name]).__name__ == cls
    state = napari_addunet.session(viewer)  # the documented console line
    assert all(w.session is state for w in widgets.values())

    # a model made active in one place is the active model everywhere
    state.model = tiny_model
    assert "active: addunet" in widgets["Denoise & classify"].model_combo.currentText()
    assert len(widgets["Skip gates"].sliders) == 3
    assert "parameters" in widgets["Readout"].text.toPlainText()
    assert widgets["Denoise & classify"].load_model("addunet-gray-blind")
    assert len(widgets["Skip gates"].sliders) == state.model.config.depth == len(state.model.gates) > 3
    assert f"parameters: {state.model.num_parameters():,}" in widgets["Readout"].text.toPlainText()

    # another viewer has its own session
    other = make_napari_viewer()
    assert napari_addunet.session(other) is not state


def test_console_one_liner_works_after_importing_the_module(make_napari_viewer):
    import napari_addunet
    import napari_addunet.session  # noqa: F401 - makes the package attribute the module

    viewer = make_napari_viewer()
    state = napari_addunet.session(viewer)
    assert napari_addunet.session(viewer) is state
    assert "session" in repr(state)


def test_sample_data_then_denoise_end_to_end(viewer_session, add_dock, qtbot):
    viewer, state = viewer_session
    viewer.open_sample("napari-addunet", "noisy_3d")
    widget = add_dock(viewer, "Denoise & classify")
    widget.layer_combo.set_layer("stack [noisy]")
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    out = viewer.layers["stack [noisy] [denoised]"]
    noisy = viewer.layers["stack [noisy]"]
    assert out.data.shape == noisy.data.shape
    np.testing.assert_allclose(out.scale, noisy.scale)
    assert state.last_run.input_name == "stack [noisy]"
    from napari_addunet.engine.noise_estimate import estimate_sigma

    assert state.last_run.sigma_before == pytest.approx(estimate_sigma(noisy.data))


def test_workers_leave_room_for_qts_own_tasks(qtbot):
    """Long workers must not take every thread of Qt's global pool: Qt runs short tasks there
    that the UI thread waits for (smooth image scaling), which would freeze the viewer."""
    import threading

    from napari.qt.threading import create_worker
    from qtpy.QtCore import Qt, QThreadPool
    from qtpy.QtGui import QImage

    from napari_addunet._widgets._common import start_worker

    pool = QThreadPool.globalInstance()
    before = pool.maxThreadCount()
    release = threading.Event()
    finished: list[bool] = []

    def blocked() -> None:
        finished.append(release.wait(20))

    try:
        pool.setMaxThreadCount(1)
        for _ in range(3):
            start_worker(create_worker(blocked, _start_thread=False))
        qtbot.waitUntil(lambda: pool.activeThreadCount() == 3, timeout=5_000)
        image = QImage(1600, 1600, QImage.Format_ARGB32)
        image.fill(0)
        image.scaled(800, 800, Qt.IgnoreAspectRatio, Qt.SmoothTransformation)
        # had the scaling waited for a pool thread, it could only have ended after a worker
        assert finished == [], "Qt's image scaling waited for the workers"
    finally:
        release.set()
        qtbot.waitUntil(lambda: pool.activeThreadCount() == 0, timeout=30_000)
        pool.setMaxThreadCount(before)
