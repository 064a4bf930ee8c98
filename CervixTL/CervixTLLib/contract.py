"""The engine's JSON contract, read in ONE place for both modules (no key guessing).

Every command the modules read prints one JSON object on stdout with ``"format": "cervixtl-<command>/1"``
(schemas in ``Resources/schemas/``); progress records on stderr end with ``{"stage": "done"}`` or
``{"stage": "error", "kind": "<one word>", "message": "..."}``. The readers below check the format and read
only the keys the contract names; anything else is an :class:`~cervixtl.runner.EngineError` (one line),
e.g. an engine of another version than the modules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cervixtl.runner import EngineError, EngineResult, error_line

__all__ = ["parse", "devices", "model_rows", "case_rows", "finetune_spec", "model_card", "held_out_cases",
           "error_text", "CANCELLED_TEXT"]

#: What a cancelled engine run means for the user.
CANCELLED_TEXT = ("Stopped on request. Nothing was changed: the active model is the same as before "
                  "(an interrupted fine-tuning can be continued with Resume).")
#: Extra words for an error record's ``kind``.
_KIND_HINTS = {
    "disk-full": "Nothing was lost: the active model is unchanged and finished checkpoints are kept; free some "
                 "space, then Resume.",
    "geometry": "The segmentation must be on the CT's voxel grid: re-export it from the CervixTL module.",
}


def parse(stdout: str | dict, command: str, required: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON object of ``cervixtl <command> --json`` (``command`` like "models-list"), with its
    ``"format": "cervixtl-<command>/1"`` and the ``required`` keys.

    Raises:
        EngineError: not JSON, not one object, another format, or a required key missing.
    """
    what = f"cervixtl {command.replace('-', ' ')}"
    if isinstance(stdout, str):
        try:
            data = json.loads(stdout)
        except ValueError:
            first = (stdout.strip().splitlines() or ["(nothing)"])[0][:200]
            raise EngineError(f"{what} did not print JSON: {first}") from None
    else:
        data = stdout
    want = f"cervixtl-{command}/1"
    got = data.get("format") if isinstance(data, dict) else None
    if got != want:
        raise EngineError(f"{what} printed format {got!r}, this module reads {want!r}: update the CervixTL "
                          "extension and its engine together")
    missing = [k for k in required if k not in data]
    if missing:
        raise EngineError(f"{what}: its JSON lacks {', '.join(missing)}")
    return data


def _items(data: dict[str, Any], key: str, command: str) -> list[dict[str, Any]]:
    items = data[key]
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise EngineError(f"cervixtl {command.replace('-', ' ')}: {key} is not a list of objects")
    return items


def devices(stdout: str) -> dict[str, Any]:
    """``cervixtl devices --json``: {"torch": version or None, "cuda": bool, "gpus": [{"name", ...}],
    "recommended", "fast_default"}."""
    return parse(stdout, "devices", ("torch", "cuda", "gpus", "recommended", "fast_default"))


def model_rows(stdout: str) -> list[dict[str, Any]]:
    """``cervixtl models list --json``: one row per version with ``name``, ``version``, ``spec``
    (NAME@VERSION), ``active``, ``source`` ("registry" | "bundled"), ``parent`` (spec or ""), ``path``,
    ``derivation``, ``sha256``."""
    rows = []
    for d in _items(parse(stdout, "models-list", ("models",)), "models", "models-list"):
        parent = d["parent"]
        rows.append({"name": d["name"], "version": d["version"], "spec": d["spec"], "active": bool(d["active"]),
                     "source": d["source"], "path": d["path"], "derivation": d["derivation"],
                     "parent": f"{parent['name']}@{parent['version']}" if parent else "",
                     "sha256": d["sha256"] or "", "created": d["created"]})
    return rows


def case_rows(stdout: str) -> list[dict[str, Any]]:
    """``cervixtl cases list --json``: one row per case with ``id``, ``added``, ``site``, ``structures``
    (names), ``proposal_vs_final_dice`` (structure -> Dice; {} without a proposal) and ``path`` (its folder, as
    the engine resolved it)."""
    rows = []
    for d in _items(parse(stdout, "cases-list", ("cases",)), "cases", "cases-list"):
        rows.append({"id": d["id"], "added": d["added"], "site": d["site"] or "", "structures": list(d["structures"]),
                     "proposal_vs_final_dice": dict(d["proposal_vs_final_dice"]), "path": d.get("path", "")})
    return rows


def finetune_spec(stdout: str) -> str:
    """NAME@VERSION of the model ``cervixtl finetune --json`` wrote (the engine chose the version)."""
    return str(parse(stdout, "finetune", ("model",))["model"])


def model_card(stdout: str | dict) -> dict[str, Any]:
    """``cervixtl models show --json``: {"spec", "active", "path", "card": the model card}."""
    return parse(stdout, "models-show", ("spec", "card"))


def held_out_cases(show: dict[str, Any]) -> list[str]:
    """The case ids a model's card (in :func:`model_card`'s object) says were held out of its training
    (``training.val_case_ids``; [] for a model not trained by CervixTL)."""
    ids = (show["card"].get("training") or {}).get("val_case_ids")
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
