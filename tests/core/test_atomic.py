"""Atomic writes: the target is replaced whole or not at all."""

from __future__ import annotations

import os

import pytest

from napari_addunet.engine.atomic import atomic_write, atomic_write_text


def test_atomic_write_text_writes_utf8_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "table.md"
    assert atomic_write_text(target, "sigma σ 25\n") == target
    assert target.read_text(encoding="utf-8") == "sigma σ 25\n"
    atomic_write_text(target, "second\n")
    assert target.read_text(encoding="utf-8") == "second\n"
    assert os.listdir(tmp_path) == ["table.md"]


def test_atomic_write_text_refuses_to_overwrite_when_asked(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("kept")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        atomic_write_text(target, "new", overwrite=False)
    assert target.read_text() == "kept"


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("kept")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "kept"
    assert os.listdir(tmp_path) == ["results.json"]
