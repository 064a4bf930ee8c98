"""Names read from files (model cards, archives, case records) before they touch the file system.

A name is accepted only when it is relative, has no ``..`` part, no drive, no backslash and no NUL, and when
the path it names stays inside its base folder after every symbolic link is resolved. Archives are unpacked
member by member into a folder of our own: links, devices and members resolving outside are refused, and no
member is written over an existing file.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import BadInput

__all__ = ["safe_member_name", "safe_join", "safe_extract", "MAX_ARCHIVE_MEMBERS"]

#: More members than this and an archive is refused (a package holds a handful of files).
MAX_ARCHIVE_MEMBERS = 10000
_CHUNK = 1 << 20


def safe_member_name(name: str, what: str = "file name") -> str:
    """Return ``name`` as a clean relative POSIX path, or raise :class:`BadInput` when it is absolute, has a
    drive or a ``..`` part, uses backslashes, or holds a NUL / control character."""
    text = str(name)
    bad = (not text.strip() or text.startswith(("/", "\\")) or "\\" in text or "\x00" in text
           or any(ord(c) < 32 for c in text) or (len(text) > 1 and text[1] == ":"))
    parts = PurePosixPath(text).parts
    if bad or ".." in parts or not parts:
        raise BadInput(f"unsafe {what} {text!r}: names read from a file must be relative, without '..'")
    return str(PurePosixPath(*[p for p in parts if p != "."])) if any(p != "." for p in parts) else "."


def safe_join(base: str | os.PathLike, name: str, what: str = "file name") -> Path:
    """``base / name`` after :func:`safe_member_name`, refusing any symbolic link on the way and any result
    that resolves outside ``base``."""
    base_p = Path(base)
    clean = safe_member_name(name, what)
    path = base_p / clean
    cur = base_p
    for part in PurePosixPath(clean).parts:
        cur = cur / part
        if cur.is_symlink():
            raise BadInput(f"unsafe {what} {name!r}: {cur} is a symbolic link")
    root = base_p.resolve()
    if path.resolve() != root and root not in path.resolve().parents:
        raise BadInput(f"unsafe {what} {name!r}: resolves outside {base_p}")
    return path


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a ``.zip`` or ``.tar`` (``.gz``, ``.bz2``, ``.xz``) archive into folder ``dest``, member by
    member: only regular files and folders, each name checked with :func:`safe_join`; returns ``dest``.

    Raises:
        BadInput: not an archive, a corrupt one, or an unsafe member (absolute, ``..``, link, device,
            outside ``dest``, a duplicate).
    """
    a, d = Path(archive), Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(a):
            _extract_zip(a, d)
        elif tarfile.is_tarfile(a):
            _extract_tar(a, d)
        else:
            raise BadInput(f"{a}: not a .zip or .tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise BadInput(f"{a}: corrupt archive ({exc})") from None
    return d


def _target(a: Path, d: Path, name: str) -> Path:
    try:
        return safe_join(d, name.rstrip("/"), "archive member")
    except BadInput as exc:
        raise BadInput(f"{a}: {exc}") from None


def _extract_zip(a: Path, d: Path) -> None:
    with zipfile.ZipFile(a) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ARCHIVE_MEMBERS:
            raise BadInput(f"{a}: {len(infos)} members, too many for a model package")
        for info in infos:
            mode = info.external_attr >> 16
            if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise BadInput(f"{a}: unsafe archive member {info.filename!r}: a link or special file")
            target = _target(a, d, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            _target(a, d, info.filename)  # the folders just made are ours; re-check nothing changed
            with zf.open(info) as src, _new_file(a, target) as out:
                shutil.copyfileobj(src, out, _CHUNK)


def _extract_tar(a: Path, d: Path) -> None:
    with tarfile.open(a) as tf:
        count = 0
        for m in tf:
            count += 1
            if count > MAX_ARCHIVE_MEMBERS:
                raise BadInput(f"{a}: too many members for a model package")
            if not (m.isfile() or m.isdir()):
                raise BadInput(f"{a}: unsafe archive member {m.name!r}: a link or special file")
            target = _target(a, d, m.name)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is None:
                raise BadInput(f"{a}: unreadable archive member {m.name!r}")
            with src, _new_file(a, target) as out:
                shutil.copyfileobj(src, out, _CHUNK)


def _new_file(a: Path, target: Path):  # noqa: ANN202 - a binary file object
    """Open ``target`` for writing; it must not exist (no member overwrites another or a planted link)."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        raise BadInput(f"{a}: archive member {target.name!r} appears twice") from None
    return os.fdopen(fd, "wb")
