"""Atomic file writes: write to a temporary file beside the target, flush it to disk, rename.

The temporary file is synced before the rename and the folder after it, so that a power cut
or a crash of the machine leaves either the old file or the new one, never an empty one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def durable_replace(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished file ``tmp`` onto ``target`` once its bytes are on disk.

    ``tmp`` is synced first, then renamed (atomic on one file system), then the folder is
    synced so that the rename itself survives a crash (where the platform allows it).
    """
    try:
        f = open(tmp, "r+b")  # Windows syncs only a handle open for writing
    except PermissionError:  # a umask that leaves the owner no write bit: POSIX syncs read handles
        f = open(tmp, "rb")
    with f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    if os.name == "posix":
        try:
            fd = os.open(Path(target).parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:  # some file systems cannot sync a folder; the rename is done anyway
            pass
        finally:
            os.close(fd)


def mode_for(target: str | os.PathLike) -> int:
    """Permissions for a file about to replace ``target``: its own, or the usual ones for a
    new file (``0o666`` minus the umask)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``.

    The temporary file keeps the target's suffix (writers that pick a format by suffix work)
    and gets the permissions of the file it replaces, or the usual ones for a new file
    (``0o666`` minus the umask). If the body raises, the
    temporary file is removed and ``target`` is untouched.

    Raises
    ------
    FileExistsError
        If ``target`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the target's folder does not exist.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; refusing to overwrite it")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"folder {target.parent} does not exist")
    # the temporary name is the target's, shortened: ten characters longer than a name near the
    # file system's limit (255) would fail after all the work
    fd, name = tempfile.mkstemp(prefix=f".{target.stem[:100]}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode_for(target))
        durable_replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(target: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically; see :func:`atomic_write`."""
    with atomic_write(target, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)
