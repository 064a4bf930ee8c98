"""Atomic file writing: never leave a half-written output behind.

Every writer in CervixTL writes to a temporary file in the destination folder and renames it over the
destination only when the write has finished and been verified (``os.replace`` is atomic on POSIX and Windows
for files on the same file system). A failure (full disk, exception, cancel, SIGTERM) removes the temporary
file and leaves any existing destination untouched. Temporary names carry the writer's process id
(``.<name>.pid<N>.<random>.part``), so :func:`sweep_stale` can remove those of a process that was killed
outright (SIGKILL, power loss) the next time the folder is written to.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import BadInput, CervixTLError

__all__ = ["atomic_dir", "atomic_path", "check_writable_dir", "sweep_stale", "temp_prefix", "write_json_atomic",
           "write_text_atomic"]

#: Temporary names written by :func:`temp_prefix`: ``.<anything>.pid<N>.<random>[.part|.removed|...]``.
_TEMP_RE = re.compile(r"^\..*\.pid(\d+)\.")
#: Temporary folders of older versions (no process id) are swept when older than this (seconds).
_LEGACY_AGE_S = 24 * 3600
_LEGACY_RE = re.compile(r"^(\.import-|\..+\.(part|removed)$|\..+\.part\.)")


def temp_prefix(name: str) -> str:
    """Prefix of a temporary file or folder beside ``name`` that :func:`sweep_stale` recognises."""
    return f".{name}.pid{os.getpid()}."


def _owner_alive(pid: int, mtime: float) -> bool:
    """True when process ``pid`` runs and was started before the temporary entry was last changed."""
    if pid == os.getpid():
        return True
    try:
        import psutil

        return psutil.pid_exists(pid) and psutil.Process(pid).create_time() <= mtime + 1.0
    except Exception:  # noqa: BLE001 - psutil missing, access denied or the process just ended
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True


def sweep_stale(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders in ``folder`` left by CervixTL processes that no longer run
    (killed before they could clean up); returns what was removed. Entries of running processes are kept."""
    root = Path(folder)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        m = _TEMP_RE.match(entry.name)
        try:
            mtime = entry.lstat().st_mtime
        except OSError:
            continue
        if m:
            stale = not _owner_alive(int(m.group(1)), mtime)
        else:
            stale = bool(_LEGACY_RE.match(entry.name)) and time.time() - mtime > _LEGACY_AGE_S
        if not stale:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            _remove_quietly(entry)
        removed.append(entry)
    return removed


def _suffixes(path: Path) -> str:
    """Full suffix of ``path`` (``.seg.nrrd``, ``.nii.gz``), so that writers that pick a format by extension
    still see the right one on the temporary name."""
    name = path.name
    for double in (".seg.nrrd", ".nii.gz", ".tar.gz"):
        if name.lower().endswith(double):
            return name[-len(double):]
    return path.suffix


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create the parent folder of ``path`` if needed and check that it is writable; return ``Path(path)``.

    Raises:
        BadInput: the folder cannot be created or written to.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create output folder {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise BadInput(f"output folder {parent} is not writable")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on failure delete it.

    The temporary name keeps the destination's extension so that format-by-extension writers (SimpleITK,
    slicerio) behave the same.

    Raises:
        BadInput: the destination folder is not writable, or the disk is full.
    """
    dest = check_writable_dir(path)
    if dest.is_dir():
        raise BadInput(f"cannot write {dest}: it is a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest.name), suffix=".part" + _suffixes(dest),
                                   dir=dest.parent)
        os.close(fd)
    except OSError as exc:
        raise BadInput(f"cannot write {dest}: {exc.strerror or exc}") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files: give the output the usual permissions (0666 minus the umask).
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except OSError as exc:
        _remove_quietly(tmp_path)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BadInput(f"disk full while writing {dest}; nothing was written") from None
        raise BadInput(f"cannot write {dest}: {exc.strerror or exc}") from None
    except BaseException:
        _remove_quietly(tmp_path)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success rename it to ``path`` (which must not exist).

    Used for model packages and saved cases, so a reader never sees a half-filled folder.
    """
    dest = check_writable_dir(path)
    if dest.exists():
        raise CervixTLError(f"{dest} already exists")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest.name), suffix=".part", dir=dest.parent))
    except OSError as exc:
        raise BadInput(f"cannot write {dest}: {exc.strerror or exc}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BadInput(f"disk full while writing {dest}; nothing was written") from None
        raise BadInput(f"cannot write {dest}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically and return the path."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_quietly(p: Path) -> None:
    with contextlib.suppress(OSError):
        p.unlink()
