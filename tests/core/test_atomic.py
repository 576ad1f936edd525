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


def test_the_new_bytes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    from napari_addunet.engine import atomic

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync")
        return real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "weights.safetensors"
    atomic_write_text(target, "new")
    assert events[:2] == ["fsync", "replace"]  # the file first, then the rename
    if os.name == "posix":
        assert events[2:] == ["fsync"]  # and the folder holding the rename
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["weights.safetensors"]


def test_the_training_state_is_written_durably(tmp_path, monkeypatch):
    from napari_addunet.engine import atomic
    from napari_addunet.engine.training_state import load_state, save_state

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    path = save_state(tmp_path / "run.state.pt", {"step": 7})
    assert synced and load_state(path)["step"] == 7
    assert os.listdir(tmp_path) == ["run.state.pt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_replaced_file_keeps_its_permissions_and_a_new_one_gets_the_usual_ones(tmp_path):
    private = tmp_path / "model.safetensors"
    private.write_text("old")
    os.chmod(private, 0o600)
    atomic_write_text(private, "new")
    assert private.read_text() == "new"
    assert os.stat(private).st_mode & 0o777 == 0o600  # was reset to 0o644 by the umask
    mask = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "fresh.txt", "x")
    finally:
        os.umask(mask)
    assert os.stat(fresh).st_mode & 0o777 == 0o644


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_training_state_is_as_readable_as_the_model_beside_it(tmp_path):
    from napari_addunet.engine.training_state import save_state

    mask = os.umask(0o022)
    try:
        state = save_state(tmp_path / "m.state.pt", {"config": "{}"})
    finally:
        os.umask(mask)
    assert os.stat(state).st_mode & 0o777 == 0o644  # was 0o600: a colleague could not resume


def test_a_file_name_near_the_length_limit_is_written(tmp_path):
    from napari_addunet.engine.training_state import save_state

    long = tmp_path / ("x" * 246 + ".csv")  # 250 characters: its temporary name was 260
    atomic_write_text(long, "hi")
    assert long.read_text() == "hi" and [p.name for p in tmp_path.iterdir()] == [long.name]
    state = tmp_path / ("y" * 240 + ".state.pt")
    save_state(state, {"step": 1})
    assert state.exists()
