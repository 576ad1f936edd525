"""Tests in this folder may open a real napari viewer, which needs a display with OpenGL."""

from __future__ import annotations

import os
import sys

import pytest

QT_FIXTURES = {"make_napari_viewer", "make_napari_viewer_proxy", "qtbot", "qapp"}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a Qt test with a clear message, before its QApplication exists, when there is no display.

    Without this, Qt aborts the whole test run. ``QT_QPA_PLATFORM=offscreen`` is not offered
    as a way out: napari's canvas needs an OpenGL context, which Xvfb with Mesa provides.
    """
    if not QT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return
    if not sys.platform.startswith("linux") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    pytest.fail(
        "this test opens a napari viewer and needs a display: run it with `make test`, or under "
        "`xvfb-run -a -s '-screen 0 1280x1024x24' python -m pytest ...`",
        pytrace=False,
    )


# -- napari-addunet widgets ---------------------------------------------------------------------
PLUGIN = "napari-addunet"


@pytest.fixture
def tiny_model():
    """A 3-level AddUNet of width 4: milliseconds per slice, so widget tests stay fast."""
    import torch

    from napari_addunet import create_model

    torch.manual_seed(0)
    return create_model("addunet", width=4, kernels=(3, 3, 3)).eval()


@pytest.fixture
def viewer_session(make_napari_viewer, tiny_model):
    """A real viewer whose session (shared by the widgets) has the tiny model active."""
    import napari_addunet

    viewer = make_napari_viewer()
    state = napari_addunet.session(viewer)
    state.set_model(tiny_model, "tiny test model")
    state.device = "cpu"
    return viewer, state


@pytest.fixture
def add_dock(qtbot):
    """``add_dock(viewer, "Readout")``: add a plugin widget through the manifest, as the Plugins menu does.

    The Train widget imports torch's lazily loaded training parts in a worker when it opens;
    this waits for that, so that no import runs on into the next test.
    """

    def add(viewer, name):
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        if hasattr(widget, "ready"):
            qtbot.waitUntil(lambda: widget.ready, timeout=120_000)
        return widget

    return add


class Heartbeat:
    """A 20 ms QTimer; ``longest`` is the longest gap between ticks (how long the UI thread was blocked)."""

    def __init__(self):
        import time

        from qtpy.QtCore import QTimer

        self._clock = time.perf_counter
        self.ticks = []
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(lambda: self.ticks.append(self._clock()))

    def __enter__(self):
        self.start = self._clock()
        self.ticks = [self.start]
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()
        self.end = self._clock()
        self.ticks.append(self.end)

    @property
    def seconds(self):
        return self.end - self.start

    @property
    def longest(self):
        return max(b - a for a, b in zip(self.ticks[:-1], self.ticks[1:], strict=True))

    def assert_responsive(self, what: str) -> None:
        """The UI thread was never blocked for a large part of the work.

        Work run on the UI thread stalls it for (nearly) the whole run; a busy shared machine
        only delays single ticks. So the longest stall is compared with the run itself (a
        ratio within one measurement), with 0.5 s as the floor for short runs.
        """
        limit = max(0.5, 0.4 * self.seconds)
        assert self.longest < limit, (
            f"the UI was blocked for {self.longest:.2f} s {what} (run {self.seconds:.2f} s, limit {limit:.2f} s)"
        )


@pytest.fixture
def heartbeat():
    """``with heartbeat() as beat: ...``, then ``beat.longest`` is the longest UI stall in seconds."""
    return Heartbeat
