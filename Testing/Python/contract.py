"""Checks of the engine's JSON contract: a ``--json`` output or a ``--progress json`` stream against the JSON
Schemas in ``Resources/schemas/`` (``jsonschema``, draft 2020-12)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from cervixtl.resources import load_schema


def validate(report: dict[str, Any], fmt: str | None = None) -> dict[str, Any]:
    """Raise ``jsonschema.ValidationError`` unless ``report`` matches the schema of its ``format`` (or ``fmt``)."""
    fmt = fmt or report["format"]
    schema = load_schema(fmt)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(report)
    return report


def one_object(stdout: str) -> dict[str, Any]:
    """The single JSON object of a ``--json`` stdout (fails on anything else before or after it)."""
    obj = json.loads(stdout)
    assert isinstance(obj, dict) and str(obj.get("format", "")).endswith("/1"), stdout[:200]
    return validate(obj)


def progress_records(stderr: str, final: str = "done") -> list[dict[str, Any]]:
    """Every JSON line of a ``--progress json`` stderr, each validated; the last one must be stage ``final``."""
    recs = [json.loads(ln) for ln in stderr.splitlines() if ln.startswith("{")]
    assert recs, stderr
    for rec in recs:
        validate(rec, "cervixtl-progress/1")
    assert recs[-1]["stage"] == final, recs[-1]
    assert sum(r["stage"] in ("done", "error") for r in recs) == 1, recs
    return recs
