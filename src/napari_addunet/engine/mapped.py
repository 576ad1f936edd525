"""Give back the pages of a read-only memory-mapped input once a plane has been read.

A plane read through a memory map (``np.memmap``, ``tifffile.memmap``) stays in the process's
resident set after it is used: over a long stack, the whole file ends up counted there. After
the engine has copied a plane, it tells the kernel it no longer needs those pages
(``madvise(MADV_DONTNEED)``). For a read-only shared file mapping this drops the pages from the
process only: the file is not touched, and a later read of the same rows maps them again with
the same content. Copy-on-write and writable maps are left alone.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np


def _read_only_memmap(arr: Any) -> np.memmap | None:
    """The read-only ``np.memmap`` whose buffer ``arr`` views, if any."""
    base = arr
    while base is not None:
        if isinstance(base, np.memmap):
            ok = getattr(base, "mode", None) == "r" and isinstance(getattr(base, "_mmap", None), mmap.mmap)
            return base if ok else None
        base = getattr(base, "base", None)
    return None


def release_mapped_pages(arr: Any) -> int:
    """Drop the pages of a read-only memory map that ``arr`` spans from this process.

    Parameters
    ----------
    arr
        An array that may view a read-only ``np.memmap`` (directly or through views).

    Returns
    -------
    int
        Bytes advised away (0 when ``arr`` is not such a view, or where the platform has no
        ``MADV_DONTNEED``).
    """
    dont_need = getattr(mmap, "MADV_DONTNEED", None)
    if dont_need is None or not isinstance(arr, np.ndarray) or arr.size == 0:
        return 0
    owner = _read_only_memmap(arr)
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
