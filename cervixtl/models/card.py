"""The model card (``model.json``, schema ``cervixtl-model-card/1``).

A model package is a folder with ``model.json`` (this card) and ``weights.safetensors``. The card says what
the network is (MONAI architecture and constructor arguments), what it outputs (labels, sigmoid/softmax), what
input it expects (voxel spacing in mm (x, y, z), LPS orientation, HU window, patch size in voxels (z, y, x)),
the treatment-protocol margins, how it was derived (parent model, training summary: counts only, never patient
data) and the SHA-256 of its weights, which is verified on load.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..intensity import check_spec, spec_from_input

SCHEMA = "cervixtl-model-card/1"
ARCHITECTURES = ("SegResNet", "SegResNetDS", "DynUNet", "UNet", "SwinUNETR", "nnUNet")
#: Array axis orders a network may see: any permutation of the (z, y, x) array axes ("zyx" = as stored).
AXIS_ORDERS = ("zyx", "zxy", "yzx", "yxz", "xzy", "xyz")
OUTPUTS = ("sigmoid", "softmax", "softmax+sigmoid")
ACTIVATIONS = ("softmax", "sigmoid")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class LabelNames(list):
    """The label names of a card in channel order; usable as ``card.label_names`` or ``card.label_names()``."""

    def __call__(self) -> list[str]:
        return list(self)


@dataclass
class ModelCard:
    """Everything needed to build, run and trust a model (see the module docstring for units).

    Attributes mirror the JSON keys of ``model.json``; nested parts stay plain dicts/lists so that the card
    round-trips through JSON unchanged (:meth:`from_dict` / :meth:`to_dict`).
    """

    name: str
    version: str
    architecture: dict[str, Any]
    labels: list[dict[str, Any]]
    input: dict[str, Any]
    output: str = "sigmoid"
    parent: dict[str, Any] | None = None
    derivation: str = ""
    protocol: dict[str, Any] = field(default_factory=lambda: {"ctv_margin_mm": None, "ptv_margin_mm": 7.0})
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=lambda: {"file": "weights.safetensors", "sha256": "", "bytes": 0})
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    intended_use: str = ""
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        self.version = str(self.version)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check the card's structure and values.

        Raises:
            ModelError: one line naming the bad field.
        """
        if self.schema != SCHEMA:
            raise ModelError(f"model card schema {self.schema!r} is not supported (expected {SCHEMA!r})")
        if not _NAME_RE.match(self.name or ""):
            raise ModelError(f"model name {self.name!r} is invalid: use letters, digits, '.', '_' or '-' (max 64)")
        if not _NAME_RE.match(self.version or "") or "@" in self.version:
            raise ModelError(f"model version {self.version!r} is invalid: use letters, digits, '.', '_' or '-'")
        arch = self.architecture or {}
        if arch.get("name") not in ARCHITECTURES:
            raise ModelError(f"model {self.name}: architecture {arch.get('name')!r} is not one of "
                             f"{', '.join(ARCHITECTURES)}")
        if not isinstance(arch.get("params"), dict):
            raise ModelError(f"model {self.name}: architecture.params must be a dict of MONAI constructor arguments")
        if self.output not in OUTPUTS:
            raise ModelError(f"model {self.name}: output {self.output!r} must be one of {', '.join(OUTPUTS)}")
        if not self.labels:
            raise ModelError(f"model {self.name}: the card lists no labels")
        channels = [int(lab.get("channel", -1)) for lab in self.labels]
        if len(set(channels)) != len(channels) or min(channels) < 0:
            raise ModelError(f"model {self.name}: label channels {channels} must be distinct non-negative integers")
        if self.output != "sigmoid" and 0 in channels:
            raise ModelError(f"model {self.name}: softmax output keeps channel 0 for background, not a label")
        if self.output == "softmax+sigmoid":
            self._validate_groups()
        out_ch = arch["params"].get("out_channels")
        if out_ch is not None and max(channels) >= int(out_ch):
            raise ModelError(f"model {self.name}: label channel {max(channels)} >= out_channels {out_ch}")
        sp = self.input.get("spacing_mm")
        if not (isinstance(sp, (list, tuple)) and len(sp) == 3 and all(float(s) > 0 for s in sp)):
            raise ModelError(f"model {self.name}: input.spacing_mm must be 3 positive numbers (x, y, z) in mm")
        win = self.input.get("window_hu")
        if "intensity" in self.input:
            try:
                check_spec(self.input["intensity"])
            except ModelError as exc:
                raise ModelError(f"model {self.name}: {exc}") from None
        elif not (isinstance(win, (list, tuple)) and len(win) == 2 and float(win[0]) < float(win[1])):
            raise ModelError(f"model {self.name}: input.window_hu must be [low, high] HU with low < high")
        if self.input.get("orientation", "LPS") not in ("LPS", "RAS"):
            raise ModelError(f"model {self.name}: input.orientation must be 'LPS' or 'RAS'")
        if self.input.get("axis_order", "zyx") not in AXIS_ORDERS:
            raise ModelError(f"model {self.name}: input.axis_order must be one of {', '.join(AXIS_ORDERS)}")
        ps = self.input.get("patch_size")
        if not (isinstance(ps, (list, tuple)) and len(ps) == 3 and all(int(p) > 0 for p in ps)):
            raise ModelError(f"model {self.name}: input.patch_size must be 3 positive voxel counts (z, y, x)")
        if "crop_foreground" in self.input or "spacing_tolerance" in self.input:
            from ..input_grid import check_input_grid

            try:
                check_input_grid(self.input)
            except ModelError as exc:
                raise ModelError(f"model {self.name}: {exc}") from None

    def _validate_groups(self) -> None:
        """softmax+sigmoid: every label says its activation; softmax labels on channels 1..K, sigmoid after."""
        acts = [lab.get("activation") for lab in self.labels]
        if any(a not in ACTIVATIONS for a in acts):
            raise ModelError(f"model {self.name}: every label of a softmax+sigmoid output needs \"activation\": "
                             "\"softmax\" or \"sigmoid\"")
        soft = sorted(int(lab["channel"]) for lab in self.labels if lab["activation"] == "softmax")
        sig = [int(lab["channel"]) for lab in self.labels if lab["activation"] == "sigmoid"]
        if soft != list(range(1, len(soft) + 1)) or (sig and min(sig) <= len(soft)):
            raise ModelError(f"model {self.name}: softmax+sigmoid needs softmax labels on channels 1..K and the "
                             "sigmoid labels after them")

    def activation(self, name: str) -> str | None:
        """``"softmax"`` or ``"sigmoid"``: how label ``name`` is decoded (None if the card lacks it)."""
        lab = self.label(name)
        if lab is None:
            return None
        return self.output if self.output != "softmax+sigmoid" else str(lab["activation"])

    # ------------------------------------------------------------------ accessors
    @property
    def label_names(self) -> LabelNames:
        """Label names in channel order."""
        return LabelNames(str(lab["name"]) for lab in sorted(self.labels, key=lambda d: int(d["channel"])))

    @property
    def spec(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Model input spacing in mm, (x, y, z)."""
        return tuple(float(s) for s in self.input["spacing_mm"])  # type: ignore[return-value]

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """Sliding-window patch in voxels, in the network's axis order (:attr:`axis_order`; default (z, y, x))."""
        return tuple(int(p) for p in self.input["patch_size"])  # type: ignore[return-value]

    @property
    def window_hu(self) -> tuple[float, float]:
        """Display / clip window (low, high) in HU: ``input.window_hu``, else the intensity spec's clip range."""
        if "window_hu" in self.input:
            lo, hi = self.input["window_hu"]
        else:
            spec = self.intensity
            lo, hi = spec.get("window_hu") or spec.get("clip_hu") or (-1000.0, 1000.0)  # display default
        return float(lo), float(hi)

    @property
    def intensity(self) -> dict[str, Any]:
        """The input intensity normalisation spec (:mod:`cervixtl.intensity`)."""
        return spec_from_input(self.input)

    @property
    def orientation(self) -> str:
        """Orientation of the grid the network sees: ``"LPS"`` (default) or ``"RAS"``."""
        return str(self.input.get("orientation", "LPS"))

    @property
    def axis_order(self) -> str:
        """Array axis order the network sees: ``"zyx"`` (default), ``"xyz"`` (MONAI bundles) or another
        permutation (nnU-Net's ``transpose_forward``); ``patch_size`` is given in this order."""
        return str(self.input.get("axis_order", "zyx"))

    def label(self, name: str) -> dict[str, Any] | None:
        """The label entry called ``name`` (case-insensitive), else the first source label proposing the
        CervixTL structure ``name`` (its ``structure`` entry, e.g. ``urinary_bladder`` for ``Bladder``), or None."""
        for lab in self.labels:
            if str(lab["name"]).lower() == name.lower():
                return lab
        for lab in self.labels:
            if str(lab.get("structure") or "").lower() == name.lower():
                return lab
        return None

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from its JSON dict; unknown keys are ignored, missing required keys raise ModelError."""
        if not isinstance(data, dict):
            raise ModelError("model card is not a JSON object")
        required = ("name", "version", "architecture", "labels", "input")
        missing = [k for k in required if k not in data]
        if missing:
            raise ModelError(f"model card {data.get('name', '?')!r} lacks {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelError(f"model card {data.get('name', '?')!r} is malformed: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The card as a JSON-ready dict (schema first)."""
        d = asdict(self)
        schema = d.pop("schema")
        return {"schema": schema, **d}

    @classmethod
    def read(cls, path: str | os.PathLike) -> ModelCard:
        """Read ``model.json`` (or the ``model.json`` inside a package folder)."""
        p = Path(path)
        if p.is_dir():
            p = p / "model.json"
        if not p.exists():
            raise ModelError(f"{p}: no model card (model.json) found")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{p}: unreadable model card ({exc})") from None
        return cls.from_dict(data)


def make_labels(names: Sequence[str], first_channel: int = 0) -> list[dict[str, Any]]:
    """Label entries (channel, name, colour, terminology) for canonical structure names, channels from
    ``first_channel`` (use 1 for softmax models, whose channel 0 is background)."""
    from .. import structures

    return [{"channel": first_channel + i, "name": n, "color": list(structures.color_of(n, i)),
             "terminology": structures.terminology(n)} for i, n in enumerate(names)]
