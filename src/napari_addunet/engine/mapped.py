"""Give back the pages of a memory-mapped input once a plane has been read.

A plane read through a memory map (``np.memmap``, ``tifffile.memmap``) stays in the process's
resident set after it is used: over a long stack, the whole file ends up counted there. After
the engine has copied a plane, it tells the kernel it no longer needs those pages
(``madvise(MADV_DONTNEED)``). For a shared file mapping (``np.memmap`` modes ``"r"``, ``"r+"``
and ``"w+"``; ``tifffile.memmap`` opens ``"r+"`` by default) this drops the pages from the
process only: the file and the system's page cache keep the data, including anything written
through the map and not yet flushed, and a later read of the same rows maps the same, current
content again. Copy-on-write maps (mode ``"c"``) are private: their changes live only in those
pages, so they are left alone.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

#: ``np.memmap`` modes that map the file shared (``MAP_SHARED``), where pages can be given back.
SHARED_MODES = ("r", "r+", "w+")


def _shared_memmap(arr: Any) -> np.memmap | None:
    """The shared ``np.memmap`` whose buffer ``arr`` views, if any."""
    base = arr
    while base is not None:
        if isinstance(base, np.memmap):
            mode = getattr(base, "mode", None)
            ok = mode in SHARED_MODES and isinstance(getattr(base, "_mmap", None), mmap.mmap)
            return base if ok else None
        base = getattr(base, "base", None)
    return None


def release_mapped_pages(arr: Any) -> int:
    """Drop the pages of a shared memory map that ``arr`` spans from this process.

    Parameters
    ----------
    arr
        An array that may view a shared ``np.memmap`` (directly or through views).

    Returns
    -------
    int
        Bytes advised away (0 when ``arr`` is not such a view, or where the platform has no
        ``MADV_DONTNEED``).
    """
    dont_need = getattr(mmap, "MADV_DONTNEED", None)
    if dont_need is None or not isinstance(arr, np.ndarray) or arr.size == 0:
        return 0
    owner = _shared_memmap(arr)
    if owner is None:
        return 0
    mm = owner._mmap
    try:
        start = np.frombuffer(mm, dtype=np.uint8).ctypes.data
        length = len(mm)
        lo = hi = arr.__array_interface__["data"][0]
        for n, stride in zip(arr.shape, arr.strides, strict=True):
            reach = stride * (n - 1)
            lo, hi = (lo + reach, hi) if reach < 0 else (lo, hi + reach)
        hi += arr.itemsize
        page = mmap.PAGESIZE
        first = max(0, (lo - start) // page * page)
        last = min(length, -(-(hi - start) // page) * page)
        if last <= first:
            return 0
        mm.madvise(dont_need, first, last - first)
    except (OSError, ValueError, TypeError, BufferError):  # closed map or exotic platform
        return 0
    return last - first
