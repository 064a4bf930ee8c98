"""The engine's JSON contract, read in ONE place for both modules (no key guessing).

Every command the modules read prints one JSON object on stdout with ``"format": "cervixtl-<command>/1"``
(schemas in ``Resources/schemas/``); progress records on stderr end with ``{"stage": "done"}`` or
``{"stage": "error", "kind": "<one word>", "message": "..."}``. The readers below check the format and read
only the keys the contract names; anything else is an :class:`~cervixtl.runner.EngineError` (one line).

Until every engine command prints its ``format`` object (issue 12), the plain JSON a command printed before
the contract (a bare list for ``models list`` / ``cases list``, the card summary for ``finetune``) is read as
that command's version 1 -- with the same keys.
"""

from __future__ import annotations

import json
from typing import Any

from cervixtl.runner import EngineError, EngineResult, error_line

__all__ = ["parse", "devices", "model_rows", "case_rows", "finetune_spec", "held_out_cases", "error_text",
           "CANCELLED_TEXT"]

#: What a cancelled engine run means for the user.
CANCELLED_TEXT = ("Stopped on request. Nothing was changed: the active model is the same as before "
                  "(an interrupted fine-tuning can be continued with Resume).")
#: Extra words for an error record's ``kind``.
_KIND_HINTS = {
    "disk-full": "Nothing was lost: the active model is unchanged and finished checkpoints are kept; free some "
                 "space, then Resume.",
    "geometry": "The segmentation must be on the CT's voxel grid: re-export it from the CervixTL module.",
}


def parse(stdout: str | dict | list, command: str) -> Any:
    """The JSON object of ``cervixtl <command> --json`` (``command`` like "models-list").

    Raises:
        EngineError: not JSON, or another command's ``format``.
    """
    if isinstance(stdout, str):
        try:
            data = json.loads(stdout)
        except ValueError:
            first = (stdout.strip().splitlines() or ["(nothing)"])[0][:200]
            raise EngineError(f"cervixtl {command.replace('-', ' ')} did not print JSON: {first}") from None
    else:
        data = stdout
    if isinstance(data, dict) and "format" in data:
        want = f"cervixtl-{command}/1"
        if data["format"] != want:
            raise EngineError(f"cervixtl {command.replace('-', ' ')} printed format {data['format']!r}, "
                              f"this module reads {want!r}: update the CervixTL extension and engine together")
    return data


def _items(data: Any, key: str, command: str) -> list[dict[str, Any]]:
    items = data.get(key) if isinstance(data, dict) else data  # (a bare list: before the contract)
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise EngineError(f"cervixtl {command.replace('-', ' ')}: no list of {key} in its JSON")
    return items


def devices(stdout: str) -> dict[str, Any]:
    """``cervixtl devices --json``: {"torch": version or None, "cuda": bool, "gpus": [{"name", ...}],
    "recommended", "fast_default"}."""
    d = parse(stdout, "devices")
    if not isinstance(d, dict) or not {"torch", "cuda", "gpus"} <= set(d):
        raise EngineError("cervixtl devices: unexpected JSON")
    return d


def model_rows(stdout: str) -> list[dict[str, Any]]:
    """``cervixtl models list --json``: one row per version with ``name``, ``version``, ``spec``
    (NAME@VERSION), ``active``, ``source`` ("registry" | "bundled"), ``parent`` (spec or ""), ``path``,
    ``derivation``, ``sha256``."""
    rows = []
    for d in _items(parse(stdout, "models-list"), "models", "models-list"):
        parent = d.get("parent")
        rows.append({"name": str(d["name"]), "version": str(d["version"]), "spec": f"{d['name']}@{d['version']}",
                     "active": bool(d["active"]), "source": str(d.get("source", "registry")),
                     "parent": f"{parent['name']}@{parent['version']}" if isinstance(parent, dict) else "",
                     "path": str(d.get("path", "")), "derivation": str(d.get("derivation", "")),
                     "sha256": str(d.get("sha256", "")), "created": str(d.get("created", ""))})
    return rows


def case_rows(stdout: str) -> list[dict[str, Any]]:
    """``cervixtl cases list --json``: one row per case with ``id``, ``added``, ``site``, ``structures``
    (names) and ``proposal_vs_final_dice`` (structure -> Dice; {} without a proposal)."""
    rows = []
    for d in _items(parse(stdout, "cases-list"), "cases", "cases-list"):
        rows.append({"id": str(d["id"]), "added": str(d.get("added", "")), "site": str(d.get("site") or ""),
                     "structures": [str(s) for s in d.get("structures", [])],
                     "proposal_vs_final_dice": dict(d.get("proposal_vs_final_dice") or {})})
    return rows


def finetune_spec(stdout: str) -> str:
    """NAME@VERSION of the model ``cervixtl finetune --json`` wrote (the engine chose the version)."""
    d = parse(stdout, "finetune")
    model = d.get("model", d) if isinstance(d, dict) else None
    if not isinstance(model, dict) or "name" not in model or "version" not in model:
        raise EngineError("cervixtl finetune: its JSON names no new model")
    return f"{model['name']}@{model['version']}"


def held_out_cases(card: dict[str, Any]) -> list[str]:
    """The case ids a model's card says were held out of its training (``training.val_case_ids``)."""
    ids = (card.get("training") or {}).get("val_case_ids")
    return [str(i) for i in ids] if isinstance(ids, list) else []


def error_text(result: EngineResult) -> str:
    """One readable line for a failed or cancelled engine run: the contract's final ``error`` progress record
    (its message, plus a hint for its ``kind``), else the engine's one ``cervixtl: error:`` line."""
    if result.cancelled or result.returncode == 130:
        return CANCELLED_TEXT
    last = result.progress[-1] if result.progress else {}
    if last.get("stage") == "error" and last.get("message"):
        hint = _KIND_HINTS.get(str(last.get("kind", "")), "")
        return f"{last['message']}" + (f" ({hint})" if hint else "")
    msg = result.error or error_line(result.log, result.returncode)
    for prefix in ("cervixtl: error:", "cervixtl: "):
        if msg.startswith(prefix):
            return msg[len(prefix):].strip()
    return msg
