"""``cervixtl cases add|list|show|remove``: the local anonymised case library."""

from __future__ import annotations

import argparse
import json

from ._common import add_action

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cases", help="local anonymised case library (CT + final contours) for fine-tuning",
                       description="Store CTs with the clinician's final contours (and the model's proposal) "
                       "under a random case id, with no patient-identifying data.")
    p.add_argument("--cases-dir", default=None, help="case library folder (default $CERVIXTL_CASES_DIR)")
    csub = p.add_subparsers(dest="cases_command", metavar="ACTION")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return add_action(csub, name, help_, "--cases-dir", "case library folder")

    a = add("add", "add a case; prints its id")
    a.add_argument("ct", help="CT image file or DICOM series folder (HU)")
    a.add_argument("final_labels", help="final contours: .seg.nrrd or label map (+ sidecar JSON) on the CT grid")
    a.add_argument("--proposal", default=None, help="the model's original proposal, same formats")
    a.add_argument("--site", default=None, help="site / protocol name (letters, digits, . _ -)")
    a.set_defaults(func=run_add)
    ls = add("list", "list the cases")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=run_list)
    sh = add("show", "show one case")
    sh.add_argument("id", help="case id (case-xxxxxxxx)")
    sh.add_argument("--json", action="store_true", help="print JSON")
    sh.set_defaults(func=run_show)
    ck = add("check", "check every case (record, CT, contours); exit 1 when one is damaged")
    ck.add_argument("--repair", action="store_true",
                    help="rebuild damaged case records from the files, move unreadable cases to .damaged/")
    ck.add_argument("--json", action="store_true", help="print JSON")
    ck.set_defaults(func=run_check)
    rm = add("remove", "delete one case")
    rm.add_argument("id", help="case id (case-xxxxxxxx)")
    rm.set_defaults(func=run_remove)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _lib(args: argparse.Namespace):
    from ..cases import CaseLibrary

    return CaseLibrary(getattr(args, "cases_dir", None))


def run_add(args: argparse.Namespace) -> int:
    cid = _lib(args).add_files(args.ct, args.final_labels, args.proposal, args.site)
    print(cid)
    return 0


def run_list(args: argparse.Namespace) -> int:
    rows = _lib(args).list()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no cases")
        return 0
    for r in rows:
        print(f"{r['id']}  {r.get('added', ''):10}  site={r.get('site') or '-':<10} "
              f"{', '.join(r.get('structures', []))}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    d = _lib(args).show(args.id)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    for k, v in d.items():
        print(f"{k:>24}: {v}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..cases_check import check_library

    report = check_library(getattr(args, "cases_dir", None), repair=args.repair)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['cases']} cases in {report['root']}, {len(report['damaged'])} damaged")
        for r in report["damaged"]:
            done = "" if r["action"] == "none" else f" -> repaired: {r['action']}"
            print(f"  {r['id']}: {'; '.join(r['problems'])}{done}")
    unrepaired = [r for r in report["damaged"] if r["action"] == "none"]
    return 1 if unrepaired else 0


def run_remove(args: argparse.Namespace) -> int:
    _lib(args).remove(args.id)
    print(f"removed {args.id}")
    return 0
