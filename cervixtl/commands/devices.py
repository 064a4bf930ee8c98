"""``cervixtl devices``: the compute devices the engine can use (torch version, CUDA GPUs)."""

from __future__ import annotations

import argparse
import json

ORDER = 80


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list the compute devices (CUDA GPUs, CPU) the engine can use",
                       description="Report the torch version and the CUDA GPUs seen by the engine; the Slicer "
                       "modules ask this instead of importing torch in Slicer's process.")
    p.add_argument("--json", action="store_true", help='print one JSON object ("format": "cervixtl-devices/1")')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..devices import probe_devices

    d = probe_devices()
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"torch {d['torch'] or 'not installed'}")
    for g in d["gpus"]:
        print(f"cuda:{g['index']}  {g['name']}  {g['memory_gib']} GiB")
    print(f"recommended device: {d['recommended']}")
    return 0
