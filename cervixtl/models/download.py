"""Verified downloads and package archives.

A model is published as a ``.zip`` or ``.tar.gz`` archive of its package folder. :func:`download` streams a
URL (``http(s)://`` or ``file://``) to a temporary file beside the destination while hashing it, checks the
SHA-256 when one is given, and only then renames it into place. :func:`extract_package` unpacks an archive
member by member (no absolute paths, no ``..``, no links, nothing outside the target folder) and returns the
package folder inside it.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..errors import BadInput, ModelError
from ..safepath import safe_extract, safe_join

CHUNK = 1 << 20


def is_url(text: str) -> bool:
    """True for ``http://``, ``https://`` and ``file://`` addresses."""
    return text.lower().startswith(("http://", "https://", "file://"))


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, *, timeout_s: float = 60.0,
             progress: Callable[[int, int | None], None] | None = None, cancel: Callable[[], bool] | None = None,
             resume: bool = True, md5: str | None = None) -> Path:
    """Download ``url`` to ``dest``, resumable, verifying the SHA-256 (and/or a publisher's MD5) when given.

    The bytes go to ``<dest>.part`` beside the destination; a later call resumes it with an HTTP range
    request (a server that ignores the range restarts it). Only a complete, verified file is renamed to
    ``dest``.

    Args:
        url: ``http(s)://`` or ``file://`` address.
        dest: destination file.
        sha256, md5: expected hex digests (case-insensitive); a mismatch deletes the download.
        timeout_s: socket timeout in seconds.
        progress: called with (bytes received so far, total bytes or None).
        cancel: polled between blocks; when it returns True the download stops (``.part`` kept for resuming).
        resume: continue an existing ``.part`` file (default).

    Raises:
        BadInput: unreachable URL / HTTP error / incomplete; ModelError: hash mismatch; Cancelled: on request.
    """
    from ..errors import Cancelled

    if not is_url(url):
        raise BadInput(f"{url}: not an http(s):// or file:// address")
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if (resume and part.is_file()) else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
            if have and getattr(resp, "status", None) != 206:
                have = 0  # the server sent the whole file
            length = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
            total = int(length) + have if length and str(length).isdigit() else None
            got = have
            with open(part, "ab" if have else "wb") as out:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    got += len(block)
                    if progress is not None:
                        progress(got, total)
                    if cancel is not None and cancel():
                        raise Cancelled(f"{url}: download cancelled at {got} bytes ({part.name} kept to resume)")
        if total is not None and got != total:
            raise BadInput(f"{url}: download incomplete ({got} of {total} bytes); run again to resume")
    except urllib.error.HTTPError as exc:
        raise BadInput(f"{url}: HTTP error {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BadInput(f"{url}: download failed ({reason}); run again to resume") from None
    _verify_hashes(part, url, sha256=sha256, md5=md5)
    os.replace(part, dest)
    return dest


def _verify_hashes(path: Path, url: str, *, sha256: str | None, md5: str | None) -> str:
    """Hash ``path`` (SHA-256, plus MD5 when expected); delete it and raise ModelError on a mismatch.
    Returns the SHA-256 (recorded on first use where no hash is published)."""
    from .package import file_digests

    got_all = file_digests(path, ["sha256", "md5"] if md5 else ["sha256"], CHUNK)
    for name, want, got in (("SHA-256", sha256, got_all["sha256"]), ("MD5", md5, got_all.get("md5", ""))):
        if want and got != want.strip().lower():
            path.unlink(missing_ok=True)
            raise ModelError(f"{url}: {name} {got[:12]}... does not match the expected {want[:12]}...; "
                             "download discarded")
    return got_all["sha256"]


def unpack_archive(archive: str | os.PathLike, into: str | os.PathLike) -> Path:
    """Unpack a ``.zip`` / ``.tar`` archive into ``into`` member by member (:func:`cervixtl.safepath.safe_extract`);
    returns ``into``.

    Raises:
        ModelError: not an archive, a corrupt one, an unsafe member, or the folder cannot be written.
    """
    try:
        return safe_extract(archive, into)
    except BadInput as exc:
        raise ModelError(str(exc)) from None
    except OSError as exc:
        raise ModelError(f"{archive}: cannot unpack archive ({exc.strerror or exc})") from None


def extract_package(archive: str | os.PathLike, into: str | os.PathLike) -> Path:
    """Unpack a package archive (``.zip``, ``.tar.gz``/``.tgz``/``.tar``) into the folder ``into`` member by
    member (:func:`cervixtl.safepath.safe_extract`: no absolute names, no ``..``, no links, nothing outside
    ``into``) and return the folder that holds ``model.json``.

    Raises:
        ModelError: not an archive, an unsafe member, or no ``model.json`` inside.
    """
    a, into = Path(archive), Path(into)
    if not (zipfile.is_zipfile(a) or tarfile.is_tarfile(a)):
        raise ModelError(f"{a}: {describe_file(a)}, not a model package archive (.zip or .tar.gz) or package folder")
    unpack_archive(a, into)
    cards = sorted((c for c in into.rglob("model.json") if not c.is_symlink()), key=lambda p: len(p.parts))
    if not cards:
        raise ModelError(f"{a}: archive holds no model.json, not a model package")
    return cards[0].parent


def describe_file(path: str | os.PathLike) -> str:
    """What a file that is not a model package looks like: "an empty file", "a text file", "a .zip / .tar
    archive without model.json", or "a binary file"."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        return f"an unreadable file ({exc.strerror or exc})"
    if size == 0:
        return "an empty file (0 bytes)"
    if (zipfile.is_zipfile(p) or tarfile.is_tarfile(p)) and not is_package_archive(p):
        return "an archive without model.json"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError:
            pass
    return "a binary file"


def check_import_file(path: str | os.PathLike) -> None:
    """Refuse, with what it is, a file that can be neither a package archive nor a checkpoint: empty, text,
    or an archive without ``model.json`` that is not a torch checkpoint either.

    Raises:
        ModelError: naming the file and what it looks like.
    """
    p = Path(path)
    what = describe_file(p)
    torch_zip = zipfile.is_zipfile(p) and _is_torch_zip(p)
    if what.startswith(("an empty", "a text", "an unreadable")) or (what.startswith("an archive") and not torch_zip):
        raise ModelError(f"{p}: {what}; expected a model package (.zip/.tar.gz with model.json, or a folder) or "
                         "a checkpoint (.safetensors, .pt)")


def _is_torch_zip(p: Path) -> bool:
    """True for a torch ``.pt`` zip (it holds ``<name>/data.pkl``)."""
    try:
        with zipfile.ZipFile(p) as zf:
            return any(n.endswith("data.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def is_package_archive(path: str | os.PathLike) -> bool:
    """True for a .zip/.tar(.gz) archive holding a ``model.json`` (a torch ``.pt`` is a zip without one)."""
    p = Path(path)
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                return any(Path(n).name == "model.json" for n in zf.namelist())
        if tarfile.is_tarfile(p):
            with tarfile.open(p) as tf:
                return any(Path(n).name == "model.json" for n in tf.getnames())
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError):
        return False
    return False


def make_archive(package_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write package folder ``package_dir`` as a ``.zip`` archive at ``dest`` (atomically)."""
    src, dest = Path(package_dir), Path(dest)
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.iterdir()):
            if f.is_file():
                zf.write(f, arcname=f"{src.name}/{f.name}")
    return dest


def catalogue_path() -> Path:
    """``Resources/Models.json``, the extension's catalogue of downloadable models."""
    from ..resources import resources_dir

    return resources_dir() / "Models.json"


def read_catalogue(path: str | os.PathLike | None = None, *, include_all: bool = False) -> list[dict[str, Any]]:
    """Entries of the model catalogue (name, version, url, sha256, bytes, description, licence, hash, trust,
    ...; see ``Resources/schemas/cervixtl-model-catalogue.schema.json``); ``file:`` URLs are relative to the
    ``Resources`` folder. Entries not offered by default (non-commercial weights) only with ``include_all``."""
    p = Path(path) if path else catalogue_path()
    if not p.exists():
        return []
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{p}: unreadable model catalogue ({exc})") from None
    models = list(data.get("models", []))
    return models if include_all else [e for e in models if e.get("offered_by_default", True)]


def catalogue_entry(name: str, path: str | os.PathLike | None = None, *,
                    include_all: bool = False) -> dict[str, Any] | None:
    """The catalogue entry ``name`` or ``name@version`` (newest listed when no version), or None; entries not
    offered by default only with ``include_all``."""
    n, _, v = name.partition("@")
    hits = [e for e in read_catalogue(path, include_all=include_all) if e.get("name") == n and (not v or str(e.get("version")) == v)]
    return hits[-1] if hits else None


def resolve_catalogue_source(entry: dict[str, Any], catalogue: str | os.PathLike | None = None) -> str:
    """The URL or local path of a catalogue entry (``file:`` relative paths are resolved against the
    folder of the catalogue)."""
    url = str(entry.get("url", ""))
    if url.startswith("file:") and not url.startswith("file://"):
        base = Path(catalogue).parent if catalogue else catalogue_path().parent
        try:
            return str(safe_join(base, url[len("file:"):], "catalogue file").resolve())
        except BadInput as exc:
            raise ModelError(f"model catalogue entry {entry.get('name')!r}: {exc}") from None
    return url


def fetch_to_temp(source: str, sha256: str | None, workdir: str | os.PathLike) -> Path:
    """Download ``source`` (URL) into ``workdir`` and unpack it when it is an archive; returns the package
    folder (or the downloaded file when it is a bare checkpoint)."""
    work = Path(workdir)
    name = Path(urllib.request.url2pathname(source.split("?")[0].rstrip("/").rsplit("/", 1)[-1])).name or "download"
    target = download(source, work / name, sha256)
    if is_package_archive(target):
        return extract_package(target, Path(tempfile.mkdtemp(dir=work)))
    return target
