"""Pages of shared memory-mapped inputs are given back once read; nothing else is touched."""

from __future__ import annotations

import sys
import tracemalloc

import numpy as np
import pytest

import napari_addunet as na
from napari_addunet.engine import normalization, runtime
from napari_addunet.engine.mapped import release_mapped_pages

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


def rss_file_kb() -> int:
    """File-backed pages mapped into this process (kB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    raise RuntimeError("no RssFile")


@pytest.fixture
def stack_file(tmp_path):
    path = tmp_path / "stack.raw"
    rng = np.random.default_rng(0)
    data = rng.integers(0, 60000, size=(16, 512, 512), dtype=np.uint16)  # 8 MB
    data.tofile(path)
    return path, data


@linux_only
def test_release_drops_the_pages_of_a_read_only_map_and_keeps_the_values(stack_file):
    path, data = stack_file
    mapped = np.memmap(path, dtype=np.uint16, mode="r", shape=data.shape)
    before = rss_file_kb()
    assert int(mapped.sum(dtype=np.int64)) == int(data.sum(dtype=np.int64))  # touches every page
    touched = rss_file_kb() - before
    assert touched > 6000  # about the 8 MB of the file
    released = sum(release_mapped_pages(np.asarray(mapped[k])) for k in range(len(mapped)))
    assert released >= data.nbytes
    assert rss_file_kb() - before < touched / 4
    np.testing.assert_array_equal(mapped, data)  # read again: the same values
    assert path.read_bytes() == data.tobytes()


def test_other_arrays_are_left_alone(stack_file, tmp_path):
    path, data = stack_file
    assert release_mapped_pages(data) == 0  # not mapped
    assert release_mapped_pages(np.zeros((0, 3), np.uint16)) == 0
    private = np.memmap(path, dtype=np.uint16, mode="c", shape=data.shape)
    private[0, 0, 0] = 7  # a copy-on-write change, in this process only
    assert release_mapped_pages(private[0]) == 0
    assert private[0, 0, 0] == 7
    assert path.read_bytes() == data.tobytes()


@linux_only
def test_a_writable_shared_map_keeps_what_was_written(stack_file):
    """Shared maps (``r+``, the default of ``tifffile.memmap``) are released too: a value
    written through the map and not yet flushed survives, in the map and in the file."""
    path, data = stack_file
    writable = np.memmap(path, dtype=np.uint16, mode="r+", shape=data.shape)
    writable[1, 5, 7] = 12345
    before = rss_file_kb()
    assert int(writable.sum(dtype=np.int64)) > 0  # touches every page
    touched = rss_file_kb() - before
    assert release_mapped_pages(writable[1]) >= data[1].nbytes
    assert sum(release_mapped_pages(np.asarray(writable[k])) for k in range(len(data))) >= data.nbytes
    assert rss_file_kb() - before < touched / 4 + 1000
    assert writable[1, 5, 7] == 12345
    expected = data.copy()
    expected[1, 5, 7] = 12345
    np.testing.assert_array_equal(writable, expected)
    writable.flush()
    del writable
    assert path.read_bytes() == expected.tobytes()


@linux_only
@pytest.mark.parametrize("as_float", [False, True], ids=["uint16", "float32 without normalisation"])
def test_denoising_a_mapped_stack_does_not_keep_it_resident(stack_file, monkeypatch, tmp_path, as_float):
    """Through the engine's plane loop: with the release, the stack's pages do not pile up;
    without it (patched out), they do; the result is the same. A float32 stack read with no
    normalisation is the map itself until copied: its pages came back while the model read it."""
    path, data = stack_file
    norm = "percentile"
    if as_float:
        data = (data / 60000.0).astype(np.float32)
        path = tmp_path / "stack-float.raw"
        data.tofile(path)
        norm = "none"
    model = na.create_model("addunet", width=4, kernels=(3, 1))
    na.denoise(model, data[:2].copy(), axes="ZYX", device="cpu")  # loads the libraries (file pages too)
    results, growth = {}, {}
    for release in (True, False):
        if not release:
            monkeypatch.setattr(runtime, "release_mapped_pages", lambda arr: 0)
            monkeypatch.setattr(normalization, "release_mapped_pages", lambda arr: 0)
        mapped = np.memmap(path, dtype=data.dtype, mode="r", shape=data.shape)
        before = rss_file_kb()
        results[release] = na.denoise(model, mapped, axes="ZYX", device="cpu", normalization=norm)
        growth[release] = rss_file_kb() - before
        del mapped
    np.testing.assert_array_equal(results[True], results[False])
    assert growth[False] > 4000, growth  # most of the 8 MB stayed mapped in
    assert growth[True] < growth[False] / 3, growth


@linux_only
def test_a_lazy_run_over_a_tiff_memory_map_reads_it_plane_by_plane(tmp_path, monkeypatch):
    """``denoise(tifffile.memmap(...), lazy=True)``: the stack is neither copied into memory
    when the lazy result is built (as ``dask.array.from_array`` would do with the map itself)
    nor left mapped in once computed, and the file is unchanged."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("dask.array")
    rng = np.random.default_rng(1)
    data = rng.integers(0, 60000, size=(64, 512, 512), dtype=np.uint16)  # 32 MB
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data)
    model = na.create_model("addunet", width=4, kernels=(3, 1))
    na.denoise(model, data[:2].copy(), axes="ZYX", device="cpu", lazy=True).compute()  # loads libraries
    results, growth = {}, {}
    for release in (True, False):
        if not release:
            monkeypatch.setattr(runtime, "release_mapped_pages", lambda arr: 0)
            monkeypatch.setattr(normalization, "release_mapped_pages", lambda arr: 0)
        mapped = tifffile.memmap(path)
        assert mapped.mode == "r+"  # tifffile's default: a writable shared map
        before = rss_file_kb()
        tracemalloc.start()  # numpy reports its buffers; "range" reads no intensity sample
        lazy = na.denoise(model, mapped, axes="ZYX", device="cpu", lazy=True, normalization="range")
        copied = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert copied < data.nbytes / 8, copied  # not copied whole (33,554,432 bytes)
        results[release] = lazy.compute(scheduler="synchronous")
        growth[release] = rss_file_kb() - before
        del mapped, lazy
    np.testing.assert_array_equal(results[True], results[False])
    assert growth[False] > data.nbytes / 1024 / 2, growth  # most of the file stayed mapped in
    assert growth[True] < growth[False] / 4, growth
    assert tifffile.imread(path).tobytes() == data.tobytes()
