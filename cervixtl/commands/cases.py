"""``cervixtl cases add|list|show|remove``: the local anonymised case library."""

from __future__ import annotations

import argparse

from ..api.cases import add_case, check_cases, list_cases, show_case
from ._common import add_action, add_json_arg, print_json

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
    add_json_arg(a, "the new case (cervixtl-cases-add/1) instead of its id")
    a.set_defaults(func=run_add)
    ls = add("list", "list the cases")
    add_json_arg(ls, "the cases (cervixtl-cases-list/1)")
    ls.set_defaults(func=run_list)
    sh = add("show", "show one case")
    sh.add_argument("id", help="case id (case-xxxxxxxx)")
    add_json_arg(sh, "the case (cervixtl-cases-show/1)")
    sh.set_defaults(func=run_show)
    ck = add("check", "check every case (record, CT, contours); exit 1 when one is damaged")
    ck.add_argument("--repair", action="store_true",
                    help="rebuild damaged case records from the files, move unreadable cases to .damaged/")
    add_json_arg(ck, "the check report (cervixtl-cases-check/1)")
    ck.set_defaults(func=run_check)
    rm = add("remove", "delete one case")
    rm.add_argument("id", help="case id (case-xxxxxxxx)")
    rm.set_defaults(func=run_remove)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_add(args: argparse.Namespace) -> int:
    rep = add_case(args.ct, args.final_labels, args.proposal, site=args.site, cases_dir=args.cases_dir)
    if args.json:
        print_json(rep)
    else:
        print(rep["id"])
    return 0


def run_list(args: argparse.Namespace) -> int:
    rep = list_cases(args.cases_dir)
    if args.json:
        print_json(rep)
        return 0
    if not rep["cases"]:
        print("no cases")
    for r in rep["cases"]:
        print(f"{r['id']}  {r['added']:10}  site={r['site'] or '-':<10} {', '.join(r['structures'])}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    rep = show_case(args.id, args.cases_dir)
    if args.json:
        print_json(rep)
        return 0
    for k, v in rep.items():
        if k != "format":
            print(f"{k:>24}: {v}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    rep = check_cases(args.cases_dir, repair=args.repair)
    if args.json:
        print_json(rep)
    else:
        print(f"{rep['cases']} cases in {rep['root']}, {len(rep['damaged'])} damaged")
        for r in rep["damaged"]:
            done = "" if r["action"] == "none" else f" -> repaired: {r['action']}"
            print(f"  {r['id']}: {'; '.join(r['problems'])}{done}")
    return 1 if any(r["action"] == "none" for r in rep["damaged"]) else 0


def run_remove(args: argparse.Namespace) -> int:
    from ..cases import CaseLibrary

    CaseLibrary(args.cases_dir).remove(args.id)
    print(f"removed {args.id}")
    return 0
