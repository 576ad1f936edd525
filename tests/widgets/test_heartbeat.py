"""The UI-responsiveness check itself: it must catch work done on the UI thread."""

from __future__ import annotations

import time

import pytest


def test_heartbeat_catches_a_blocked_ui_thread(qtbot, heartbeat):
    with heartbeat() as beat:
        qtbot.wait(100)  # ticks while the event loop runs
        time.sleep(0.8)  # the UI thread does the work itself: no ticks
        qtbot.wait(100)
    assert beat.longest >= 0.8
    with pytest.raises(AssertionError, match="the UI was blocked"):
        beat.assert_responsive("in this test")


def test_heartbeat_passes_a_free_ui_thread(qtbot, heartbeat):
    with heartbeat() as beat:
        qtbot.wait(600)
    beat.assert_responsive("in this test")
    assert len(beat.ticks) > 5
