"""Source models from the catalogue (``Resources/Models.json``): download, unpack safely, convert, record trust.

A TotalSegmentator entry is a zip of an nnU-Net results folder; a MONAI entry is a bundle zip. The archive is
downloaded with :func:`cervixtl.models.download.download` (resumable, verified), unpacked member by member
into a temporary folder (absolute paths, ``..`` and links refused) and converted. Where the publisher gives a
hash of a file inside the archive (MONAI ``large_files.yml`` MD5 of ``models/model.pt``) it is checked after
unpacking. Where none is published, the SHA-256 of the first download is recorded in the card
(``training.source.download``, ``"trust": "trust-on-first-use"``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ...errors import ModelError

__all__ = ["import_catalogue_source", "SOURCE_KINDS"]

SOURCE_KINDS = ("totalsegmentator-nnunet", "nnunet", "monai-bundle")


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    work = Path(work)
    archive = download(url or str(entry["url"]), work / "source.zip", entry.get("sha256"), progress=progress)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    unpack_archive(archive, work / "unpacked")
    root = work / "unpacked"
    pub = entry.get("hash")
    if pub and pub.get("type") == "md5" and pub.get("of"):
        inner = next((p for p in root.rglob(Path(pub["of"]).name) if p.as_posix().endswith(pub["of"])), None)
        if inner is None or _md5(inner) != str(pub["value"]).lower():
            raise ModelError(f"{entry.get('name')}: {pub['of']} does not match the publisher's MD5 ({pub['source']})")
    if kind == "monai-bundle":
        cands = [p.parent.parent for p in root.rglob("inference.json") if p.parent.name == "configs"]
        src = cands[0] if cands else root
        pkg, report = import_source(src, dest_dir, name=name, version=version, kind="monai_bundle")
    else:
        folder = entry.get("model_folder")
        src = root / folder if folder and (root / folder).is_dir() else root
        spec_kind = "nnunet"
        if kind == "totalsegmentator-nnunet":
            from . import structure_map
            from .nnunet import import_nnunet

            pkg, report = import_nnunet(src, dest_dir, name=name, version=version, orientation="RAS",
                                        source={"kind": "totalsegmentator", "catalogue": entry.get("name")},
                                        structure_map=structure_map())
        else:
            pkg, report = import_source(src, dest_dir, name=name, version=version, kind=spec_kind)
    trust = "publisher-hash" if (entry.get("sha256") or pub) else "trust-on-first-use"
    _record_download(Path(pkg), {"url": url or entry["url"], "sha256": sha, "trust": trust,
                                 "publisher_hash": pub})
    return Path(pkg), {**report, "download_sha256": sha, "trust": trust}


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
