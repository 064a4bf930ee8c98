"""``cervixtl models ...``: the model registry (list, show, import, activate, rollback, remove, export)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ._common import add_action

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, show, import, activate, roll back, remove or export models",
                       description="Manage the model registry (default $CERVIXTL_MODELS_DIR or "
                       "~/.cervixtl/models). Every model's weights are verified against the SHA-256 in its card.")
    p.add_argument("--models-dir", default=None, help="registry folder")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return add_action(msub, name, help_, "--models-dir", "registry folder")

    sp = add("list", "list registered models and versions (* = active)")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.set_defaults(func=run_list)
    sp = add("show", "show a model card")
    sp.add_argument("spec", metavar="NAME[@VER]")
    sp.add_argument("--json", action="store_true", help="print the whole card as JSON")
    sp.set_defaults(func=run_show)
    sp = add("import", "import a model package (folder, .zip/.tar.gz, URL, or a name from Resources/Models.json) "
                       "or a MONAI checkpoint (.pt/.pth/.safetensors, with --name) as a source model")
    sp.add_argument("source", metavar="PATH_OR_URL")
    sp.add_argument("--sha256", default=None, help="expected SHA-256 of the downloaded/imported file")
    sp.add_argument("--name", default=None, help="name for an imported checkpoint (source model)")
    sp.add_argument("--version", default=None, help="version for an imported checkpoint (default: next)")
    sp.add_argument("--arch", default="wholeBody_ct_segmentation",
                    help="architecture of an imported checkpoint: wholeBody_ct_segmentation (MONAI bundle "
                         "SegResNet, 105 channels) or a model card JSON file giving architecture/labels/input")
    sp.add_argument("--activate", action="store_true", help="make the imported version active")
    sp.set_defaults(func=run_import)
    sp = add("activate", "make a version active")
    sp.add_argument("spec", metavar="NAME[@VER]")
    sp.set_defaults(func=run_activate)
    sp = add("rollback", "re-activate the previously active version")
    sp.add_argument("name", metavar="NAME")
    sp.set_defaults(func=run_rollback)
    sp = add("remove", "delete one version")
    sp.add_argument("spec", metavar="NAME@VER")
    sp.set_defaults(func=run_remove)
    sp = add("export", "copy a verified model package to a folder")
    sp.add_argument("spec", metavar="NAME[@VER]")
    sp.add_argument("dest", metavar="DEST_DIR")
    sp.set_defaults(func=run_export)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _registry(args: argparse.Namespace):  # noqa: ANN202
    from ..models.registry import Registry

    return Registry(getattr(args, "models_dir", None))


def run_list(args: argparse.Namespace) -> int:
    rows = _registry(args).list()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models registered")
    for r in rows:
        mark = "*" if r["active"] else " "
        src = " (bundled)" if r["source"] == "bundled" else ""
        print(f"{mark} {r['name']}@{r['version']:<8} {r['architecture']:<10} {','.join(r['labels'])}{src}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..models.card import ModelCard

    reg = _registry(args)
    path = reg.resolve(args.spec)
    card = ModelCard.read(path)
    d = card.to_dict()
    if args.json:
        print(json.dumps({**d, "path": str(path), "active": reg.active(card.name) == card.version}, indent=2))
        return 0
    print(f"{card.spec}  ({card.architecture['name']}, {card.output})")
    print(f"  labels:     {', '.join(card.label_names)}")
    print(f"  spacing:    {card.spacing_mm} mm (x, y, z); window {card.window_hu} HU; patch {card.patch_size}")
    print(f"  parent:     {card.parent['name'] + '@' + str(card.parent['version']) if card.parent else 'none'}")
    print(f"  derivation: {card.derivation}")
    print(f"  protocol:   {card.protocol}")
    print(f"  created:    {card.created}")
    print(f"  sha256:     {card.weights.get('sha256')}")
    for name, m in (card.validation or {}).items():
        print(f"  validation {name}: {m}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..errors import BadInput, ModelError
    from ..models import download as dl
    from ..models.package import sha256_file

    reg = _registry(args)
    src, sha = args.source, args.sha256
    entry = None if (dl.is_url(src) or Path(src).exists()) else dl.catalogue_entry(src)
    if entry is not None:
        src, sha = dl.resolve_catalogue_source(entry), sha or entry.get("sha256")
    reg.root.mkdir(parents=True, exist_ok=True)
    from ..atomic import sweep_stale, temp_prefix

    sweep_stale(reg.root)  # what an import killed outright (SIGKILL) left behind
    with tempfile.TemporaryDirectory(prefix=temp_prefix("import"), dir=reg.root) as work:
        if dl.is_url(src):
            local = dl.fetch_to_temp(src, sha, work)
        else:
            p = Path(src)
            if not p.exists():
                raise BadInput(f"{src}: no such file, folder, URL or catalogue model")
            if sha and p.is_file() and sha256_file(p) != sha.strip().lower():
                raise ModelError(f"{p}: SHA-256 does not match --sha256; not imported")
            local = dl.extract_package(p, Path(work) / "x") if p.is_file() and dl.is_package_archive(p) else p
        if local.is_dir():
            if sha and not dl.is_url(src):
                from ..models.package import verify_package

                if verify_package(local).weights.get("sha256") != sha.strip().lower():
                    raise ModelError(f"{src}: weights SHA-256 does not match the expected {sha[:12]}...")
            card = reg.add(local, activate=args.activate)
            print(f"imported {card.spec}")
            return 0
        dl.check_import_file(local)  # empty, text, or an archive without model.json: say what it is
        card = _import_checkpoint(reg, local, args, Path(work))
        print(f"imported {card.spec} (source model from checkpoint)")
    return 0


def _import_checkpoint(reg, path: Path, args: argparse.Namespace, work: Path):  # noqa: ANN001, ANN202
    from ..errors import BadInput
    from ..models.card import ModelCard
    from ..models.transfer import package_from_checkpoint

    if not args.name:
        raise BadInput(f"{path.name}: a checkpoint needs --name for the new source model")
    version = args.version or reg.next_version(args.name)
    kwargs = {}
    if args.arch != "wholeBody_ct_segmentation":
        tmpl = ModelCard.read(args.arch)
        kwargs = {"architecture": tmpl.architecture["name"], "params": tmpl.architecture["params"],
                  "label_names": list(tmpl.label_names), "output": tmpl.output,
                  "spacing_mm": tmpl.spacing_mm, "window_hu": tmpl.window_hu, "patch_size": tmpl.patch_size}
    pkg, report = package_from_checkpoint(path, work / "pkg", name=args.name, version=version, **kwargs)
    print(f"tensors: {report['loaded']} loaded, {report['reinitialised']} re-initialised, "
          f"{report['skipped']} skipped")
    return reg.add(pkg, activate=args.activate)


def run_activate(args: argparse.Namespace) -> int:
    from ..models.registry import parse_spec

    v = _registry(args).activate(args.spec)
    print(f"active: {parse_spec(args.spec)[0]}@{v}")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    v = _registry(args).rollback(args.name)
    print(f"active: {args.name}@{v}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    _registry(args).remove(args.spec)
    print(f"removed {args.spec}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    dest = _registry(args).export(args.spec, args.dest)
    print(str(dest))
    return 0
