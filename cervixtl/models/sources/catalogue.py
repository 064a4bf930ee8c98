"""Source models from the catalogue (``Resources/Models.json``): download, unpack safely, convert, record trust.

A TotalSegmentator entry is a zip of an nnU-Net results folder; a MONAI entry is a bundle zip. The archive is
downloaded with :func:`cervixtl.models.download.download` (resumable, verified), unpacked member by member
into a temporary folder (absolute paths, ``..`` and links refused) and converted. Every hash the publisher
gives is checked: of the archive itself (``"of": "archive"``, e.g. the SHA-1 in MONAI's ``model_info.json``)
before unpacking, of a file inside it (MONAI ``large_files.yml`` MD5 of ``models/model.pt``) after unpacking.
Where none is published, the SHA-256 of the first download is recorded in the card
(``training.source.download``, ``"trust": "trust-on-first-use"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ...errors import ModelError
from ..package import file_digests

__all__ = ["import_catalogue_source", "SOURCE_KINDS", "publisher_hashes"]

SOURCE_KINDS = ("totalsegmentator-nnunet", "nnunet", "monai-bundle", "monai-auto3dseg")
#: Catalogue kind -> :func:`cervixtl.models.sources.import_source` kind.
_SPEC_KINDS = {"nnunet": "nnunet", "monai-bundle": "monai_bundle", "monai-auto3dseg": "monai_auto3dseg"}


def publisher_hashes(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The entry's published hashes as a list (``hash`` is null, one object, or a list of objects)."""
    pub = entry.get("hash")
    return [] if not pub else [dict(h) for h in (pub if isinstance(pub, list) else [pub])]


def _archive_hash(h: Mapping[str, Any]) -> bool:
    """True for a published hash of the downloaded archive itself (``of`` absent or ``"archive"``)."""
    return str(h.get("of") or "archive") == "archive"


def _check_hash(h: Mapping[str, Any], got: str | None, name: Any) -> None:
    """Raise :class:`ModelError` unless ``got`` (the digest of what ``h["of"]`` names; None: not found) is the
    published one."""
    if got is None or got != str(h.get("value", "")).lower():
        raise ModelError(f"{name}: {h.get('of') or 'archive'} does not match the publisher's "
                         f"{str(h.get('type')).upper()} ({h.get('source')}); not imported")


def _member_digest(root: Path, h: Mapping[str, Any]) -> str | None:
    """Digest ``h["type"]`` of the unpacked member ``h["of"]``, or None when the archive has no such file."""
    of = str(h["of"])
    target = next((p for p in root.rglob(Path(of).name) if p.as_posix().endswith(of)), None)
    return None if target is None else file_digests(target, (str(h.get("type")),))[str(h.get("type"))]


def import_catalogue_source(entry: Mapping[str, Any], work: str | os.PathLike, dest_dir: str | os.PathLike, *,
                            name: str, version: str = "1", url: str | None = None,
                            progress: Callable[[int, int | None], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """Download, unpack and convert catalogue ``entry`` into a package at ``dest_dir``.

    Args:
        entry: the catalogue entry; work: a scratch folder (the download's ``.part`` file lives there, so a
            rerun with the same folder resumes); url: override the entry's URL (tests use 127.0.0.1).

    Raises:
        ModelError: unsupported kind, hash mismatch, unsafe archive, or the conversion failed.
    """
    from ..download import download, unpack_archive
    from . import import_source

    kind = str(entry.get("kind"))
    if kind not in SOURCE_KINDS:
        raise ModelError(f"catalogue entry {entry.get('name')}: kind {kind!r} is not a source model")
    if entry.get("importable") is False:
        raise ModelError(f"catalogue entry {entry.get('name')}: {entry.get('import_note') or 'not importable'}")
    work = Path(work)
    archive = download(url or str(entry["url"]), work / "source.zip", entry.get("sha256"), progress=progress)
    pubs = publisher_hashes(entry)
    digests = file_digests(archive, ["sha256", *(str(h.get("type")) for h in pubs if _archive_hash(h))])
    sha = digests["sha256"]
    for h in (h for h in pubs if _archive_hash(h)):
        _check_hash(h, digests[str(h.get("type"))], entry.get("name"))
    root = work / "unpacked"
    unpack_archive(archive, root)
    for h in (h for h in pubs if not _archive_hash(h)):
        _check_hash(h, _member_digest(root, h), entry.get("name"))
    if kind == "totalsegmentator-nnunet":
        from . import structure_map
        from .nnunet import import_nnunet

        folder = entry.get("model_folder")
        src = root / folder if folder and (root / folder).is_dir() else root
        pkg, report = import_nnunet(src, dest_dir, name=name, version=version, orientation="RAS",
                                    source={"kind": "totalsegmentator", "catalogue": entry.get("name")},
                                    structure_map=structure_map())
    else:
        spec_kind = _SPEC_KINDS[kind]
        pkg, report = import_source(_unpacked_root(root, spec_kind, entry.get("model_folder")), dest_dir,
                                    name=name, version=version, kind=spec_kind,
                                    options=entry.get("bundle_overrides"))
    trust = "publisher-hash" if (entry.get("sha256") or pubs) else "trust-on-first-use"
    _record_download(Path(pkg), {"url": url or entry["url"], "sha256": sha, "trust": trust,
                                 "publisher_hash": pubs or None})
    return Path(pkg), {**report, "download_sha256": sha, "trust": trust}


def _unpacked_root(root: Path, spec_kind: str, folder: Any) -> Path:
    """The folder of an unpacked archive that holds the source: ``model_folder`` when the entry names one,
    else the first of the root and its sub-folders (two levels) that :func:`source_kind` recognises."""
    from . import source_kind

    if folder and (root / str(folder)).is_dir():
        return root / str(folder)
    cands = [root, *sorted(p for p in root.iterdir() if p.is_dir()),
             *sorted(p for p in root.glob("*/*") if p.is_dir())]
    return next((c for c in cands if source_kind(c) == spec_kind), root)


def _record_download(pkg: Path, info: dict[str, Any]) -> None:
    """Add the download record to the package's card (the weights are unchanged, so their hash still holds)."""
    import json

    from ..card import ModelCard

    card = ModelCard.read(pkg)
    src = dict((card.training or {}).get("source") or {})
    src["download"] = info
    card.training = {**(card.training or {}), "source": src}
    if info["trust"] == "trust-on-first-use":
        card.derivation += (f"; downloaded from {info['url']}: no publisher hash, SHA-256 {info['sha256']} recorded "
                            "on first use (trust on first use)")
    tmp = pkg / "model.json.tmp"
    tmp.write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, pkg / "model.json")
