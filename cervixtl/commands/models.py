"""``cervixtl models ...``: the model registry (list, show, import, activate, rollback, remove, export)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..api.models import import_model, list_models, list_sources, show_model
from ._common import add_action, add_json_arg, print_json

if TYPE_CHECKING:
    from ..models.registry import Registry

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
    add_json_arg(sp, "the versions (cervixtl-models-list/1)")
    sp.set_defaults(func=run_list)
    sp = add("show", "show a model card")
    sp.add_argument("spec", metavar="NAME[@VER]")
    add_json_arg(sp, "the whole card (cervixtl-models-show/1)")
    sp.set_defaults(func=run_show)
    sp = add("import", "import a model package (folder, .zip/.tar.gz, URL, or a name from Resources/Models.json), "
                       "a source model (an nnU-Net v2 trained-model folder, totalsegmentator:<task>, a MONAI bundle "
                       "folder or zip) or a MONAI checkpoint (.pt/.pth/.safetensors, with --name)")
    sp.add_argument("source", metavar="PATH_OR_URL")
    sp.add_argument("--sha256", default=None, help="expected SHA-256 of the downloaded/imported file")
    sp.add_argument("--name", default=None, help="name for an imported checkpoint (source model)")
    sp.add_argument("--version", default=None, help="version for an imported checkpoint (default: next)")
    sp.add_argument("--arch", default="wholeBody_ct_segmentation",
                    help="architecture of an imported checkpoint: wholeBody_ct_segmentation (MONAI bundle "
                         "SegResNet, 105 channels) or a model card JSON file giving architecture/labels/input")
    sp.add_argument("--activate", action="store_true", help="make the imported version active")
    add_json_arg(sp, "what was imported (cervixtl-models-import/1)")
    sp.set_defaults(func=run_import)
    sp = add("sources", "list source models installed on this computer (TotalSegmentator weights) with classes")
    add_json_arg(sp, "the source models (cervixtl-models-sources/1)")
    sp.set_defaults(func=run_sources)
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


def _registry(args: argparse.Namespace) -> Registry:
    from ..models.registry import Registry

    return Registry(getattr(args, "models_dir", None))


def run_list(args: argparse.Namespace) -> int:
    rep = list_models(getattr(args, "models_dir", None))
    if args.json:
        print_json(rep)
        return 0
    if not rep["models"]:
        print("no models registered")
    for r in rep["models"]:
        mark = "*" if r["active"] else " "
        src = " (bundled)" if r["source"] == "bundled" else ""
        print(f"{mark} {r['name']}@{r['version']:<8} {r['architecture']:<10} {','.join(r['labels'])}{src}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    rep = show_model(args.spec, getattr(args, "models_dir", None))
    if args.json:
        print_json(rep)
        return 0
    from ..models.card import ModelCard

    card = ModelCard.from_dict(rep["card"])
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
    rep = import_model(args.source, sha256=args.sha256, name=args.name, version=args.version, arch=args.arch,
                       activate=args.activate, models_dir=getattr(args, "models_dir", None))
    if args.json:
        print_json(rep)
    elif rep["tensors"] is not None:
        t = rep["tensors"]
        print(f"tensors: {t['loaded']} loaded, {t['reinitialised']} re-initialised, {t['skipped']} skipped")
        print(f"imported {rep['spec']} ({rep['detail']})")
    else:
        print(f"imported {rep['spec']}" + (f" ({rep['detail']})" if rep["detail"] else ""))
    return 0


def run_sources(args: argparse.Namespace) -> int:
    rep = list_sources()
    if args.json:
        print_json(rep)
        return 0
    if not rep["sources"]:
        print("no source models found (TotalSegmentator weights: $TOTALSEG_WEIGHTS_PATH, "
              "$TOTALSEG_HOME_DIR/nnunet/results, ~/.totalsegmentator/nnunet/results)")
    for r in rep["sources"]:
        status = f"error: {r['error']}" if r.get("error") else f"{len(r['classes'])} classes: {', '.join(r['classes'])}"
        print(f"{r['spec']:<24} {r['dataset']}  {status}")
    return 0


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
