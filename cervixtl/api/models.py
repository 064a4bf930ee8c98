"""The model jobs: ``list_models``, ``show_model``, ``import_model`` (``cervixtl models ...``).

``list_models`` and ``show_model`` read cards only: they import no torch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, ModelError
from . import report

if TYPE_CHECKING:
    from ..models.card import ModelCard
    from ..models.registry import Registry


def _registry(models_dir: str | os.PathLike | None) -> Registry:
    from ..models.registry import Registry

    return Registry(models_dir)


def list_models(models_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Every registered version (and the bundled demo model when not registered).

    Returns:
        The ``cervixtl-models-list/1`` report: ``models_dir`` and ``models``, one row per version with
        spec (``name@version``), name, version, active, created, parent, derivation, labels, architecture,
        sha256, path, source (``registry`` or ``bundled``).
    """
    reg = _registry(models_dir)
    rows = [{"spec": f"{r['name']}@{r['version']}", **r} for r in reg.list()]
    return report("models-list", {"models_dir": str(reg.root), "models": rows})


def show_model(spec: str, models_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The card of ``spec`` (``NAME``: its active version, ``NAME@VERSION``, or a package folder).

    Returns:
        The ``cervixtl-models-show/1`` report: spec, name, version, active, path and the whole ``card``
        (``model.json``: architecture, labels, input spacing in mm (x, y, z), window in HU, training, validation).

    Raises:
        ModelError: unknown model or unreadable card.
    """
    from ..models.card import ModelCard

    reg = _registry(models_dir)
    path = reg.resolve(spec)
    card = ModelCard.read(path)
    return report("models-show", {"spec": card.spec, "name": card.name, "version": card.version,
                                  "active": reg.active(card.name) == card.version, "path": str(path),
                                  "card": card.to_dict()})


def import_model(source: str, *, sha256: str | None = None, name: str | None = None, version: str | None = None,
                 arch: str = "wholeBody_ct_segmentation", activate: bool = False,
                 models_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Import a model package (folder, ``.zip``/``.tar.gz``, URL, or a name of ``Resources/Models.json``) or a
    MONAI checkpoint (``.pt``/``.pth``/``.safetensors`` with ``name``) into the registry.

    Args:
        sha256: expected SHA-256 of the downloaded/imported file (or of a package's weights).
        name, version, arch: for a checkpoint: the new source model's name, version (default: next) and
            architecture (``wholeBody_ct_segmentation`` or a model card JSON giving architecture/labels/input).
        activate: make the imported version active.

    Also a source model: an nnU-Net v2 trained-model folder, ``totalsegmentator:<task>``, a MONAI bundle, or a
    catalogue entry of one of those kinds (:mod:`cervixtl.models.sources`).

    Returns:
        The ``cervixtl-models-import/1`` report: spec, name, version, kind (``package``, ``checkpoint``,
        ``source`` or ``catalogue-source``), activated, detail (one line on what it is), tensors (checkpoint:
        loaded / reinitialised / skipped counts; null otherwise).

    Raises:
        BadInput: nothing at ``source``; ModelError: hash mismatch or an invalid package.
    """
    from ..atomic import sweep_stale, temp_prefix
    from ..models import download as dl

    reg = _registry(models_dir)
    src, sha = source, sha256
    from ..models.sources import source_kind

    if source_kind(src):
        card, detail = _import_source(reg, src, name=name, version=version, activate=activate)
        return _import_report(card, "source", activate, detail)
    entry = None if (dl.is_url(src) or Path(src).exists()) else dl.catalogue_entry(src)
    hidden = None if entry or dl.is_url(src) or Path(src).exists() else dl.catalogue_entry(src, include_all=True)
    if hidden is not None:
        raise BadInput(f"{src}: catalogue model not offered by default ({hidden.get('licence')}); "
                       f"{hidden.get('import_note') or 'download and import it yourself if your use is allowed'}")
    if entry is not None and entry.get("kind") not in (None, "cervixtl-package"):
        card, detail = _import_catalogue_source(reg, entry, name=name, version=version, activate=activate)
        return _import_report(card, "catalogue-source", activate, detail)
    if entry is not None:
        src, sha = dl.resolve_catalogue_source(entry), sha or entry.get("sha256")
    reg.root.mkdir(parents=True, exist_ok=True)
    sweep_stale(reg.root)  # what an import killed outright (SIGKILL) left behind
    with tempfile.TemporaryDirectory(prefix=temp_prefix("import"), dir=reg.root) as work:
        local = _local_package(src, sha, Path(work))
        if local.is_dir():
            _check_package_hash(local, src, sha if not dl.is_url(src) else None)
            return _import_report(reg.add(local, activate=activate), "package", activate, "")
        dl.check_import_file(local)  # empty, text, or an archive without model.json (also a download): say what it is
        card, tensors = _import_checkpoint(reg, local, Path(work), name=name, version=version, arch=arch,
                                           activate=activate)
    return _import_report(card, "checkpoint", activate, "source model from checkpoint", tensors)


def _import_report(card: ModelCard, kind: str, activate: bool, detail: str,
                   tensors: dict[str, int] | None = None) -> dict[str, Any]:
    return report("models-import", {"spec": card.spec, "name": card.name, "version": card.version, "kind": kind,
                                    "activated": bool(activate), "detail": detail, "tensors": tensors})


def _local_package(src: str, sha: str | None, work: Path) -> Path:
    """The package folder (or checkpoint file) of ``src``: downloaded, unpacked or as it is."""
    from ..models import download as dl
    from ..models.package import sha256_file

    if dl.is_url(src):
        return dl.fetch_to_temp(src, sha, work)
    p = Path(src)
    if not p.exists():
        raise BadInput(f"{src}: no such file, folder, URL or catalogue model")
    if sha and p.is_file() and sha256_file(p) != sha.strip().lower():
        raise ModelError(f"{p}: SHA-256 does not match --sha256; not imported")
    return dl.extract_package(p, work / "x") if p.is_file() and dl.is_package_archive(p) else p


def _import_source(reg: Registry, src: str, *, name: str | None, version: str | None,
                   activate: bool) -> tuple[ModelCard, str]:
    """An nnU-Net v2 folder, ``totalsegmentator:<task>`` or a MONAI bundle as a registered source model."""
    from ..atomic import temp_prefix
    from ..models.sources import default_name, import_source, source_kind

    kind = source_kind(src)
    if kind is None:  # the caller checked; a clear error all the same
        raise BadInput(f"{src}: not a source model (nnU-Net folder, totalsegmentator:<task> or MONAI bundle)")
    name = name or default_name(src, kind)
    reg.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=temp_prefix("import"), dir=reg.root) as work:
        pkg, _ = import_source(src, Path(work) / "pkg", name=name, version=version or reg.next_version(name),
                               kind=kind)
        card = reg.add(pkg, activate=activate)
    return card, f"{kind} source: {len(card.labels)} classes, {card.architecture['name']}"


def _import_catalogue_source(reg: Registry, entry: dict[str, Any], *, name: str | None, version: str | None,
                             activate: bool) -> tuple[ModelCard, str]:
    """A catalogue entry that is not a CervixTL package: downloaded (resumable), converted, registered."""
    import shutil

    from ..atomic import temp_prefix
    from ..models.sources.catalogue import import_catalogue_source

    name = name or str(entry["name"])
    reg.root.mkdir(parents=True, exist_ok=True)
    work = reg.root / f".download-{entry['name']}"  # kept on failure or cancel, so a rerun resumes
    with tempfile.TemporaryDirectory(prefix=temp_prefix("import"), dir=reg.root) as tmp:
        pkg, rep = import_catalogue_source(entry, work, Path(tmp) / "pkg", name=name,
                                           version=version or reg.next_version(name))
        card = reg.add(pkg, activate=activate)
    shutil.rmtree(work, ignore_errors=True)
    return card, f"{entry['kind']}, {rep['trust']}: SHA-256 {rep['download_sha256']}"


def list_sources() -> dict[str, Any]:
    """Source models installed on this computer (TotalSegmentator weights) with their classes.

    Returns:
        The ``cervixtl-models-sources/1`` report: ``sources`` [{spec, dataset, folder, classes, error}].
    """
    from ..models.sources import list_sources as find_sources

    return report("models-sources", {"sources": find_sources()})


def _check_package_hash(package: Path, src: str, sha: str | None) -> None:
    """Refuse a package whose weights' SHA-256 differs from the expected ``sha``."""
    if not sha:
        return
    from ..models.package import verify_package

    if verify_package(package).weights.get("sha256") != sha.strip().lower():
        raise ModelError(f"{src}: weights SHA-256 does not match the expected {sha[:12]}...")


def _import_checkpoint(reg: Registry, path: Path, work: Path, *, name: str | None, version: str | None, arch: str,
                       activate: bool) -> tuple[ModelCard, dict[str, int]]:
    """Wrap a MONAI checkpoint as a source-model package and register it; returns (card, tensor counts)."""
    from ..models.card import ModelCard
    from ..models.transfer import package_from_checkpoint

    if not name:
        raise BadInput(f"{path.name}: a checkpoint needs --name for the new source model")
    kwargs: dict[str, Any] = {}
    if arch != "wholeBody_ct_segmentation":
        tmpl = ModelCard.read(arch)
        kwargs = {"architecture": tmpl.architecture["name"], "params": tmpl.architecture["params"],
                  "label_names": list(tmpl.label_names), "output": tmpl.output,
                  "spacing_mm": tmpl.spacing_mm, "window_hu": tmpl.window_hu, "patch_size": tmpl.patch_size}
    pkg, rep = package_from_checkpoint(path, work / "pkg", name=name, version=version or reg.next_version(name),
                                       **kwargs)
    tensors = {k: int(rep[k]) for k in ("loaded", "reinitialised", "skipped")}
    return reg.add(pkg, activate=activate), tensors
