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
