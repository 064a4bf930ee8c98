"""Model packages: a folder with ``model.json`` (the card) and ``weights.safetensors``.

Weights are stored with safetensors (no pickle); the card records their SHA-256 and size, which
:func:`load_package` checks before using them. Packages are written atomically (a temporary folder renamed
into place), so a reader never sees a half-written model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..errors import CervixTLError, ModelError
from ..fileio import atomic_dir
from .card import ModelCard

if TYPE_CHECKING:  # torch only where tensors are handled (verifying and copying packages stay torch-free)
    import torch

CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _plain_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch

    out = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise ModelError(f"state dict entry {k!r} is not a tensor")
        out[k] = v.detach().to("cpu").contiguous().clone()
    return out


def save_package(dest_dir: str | os.PathLike, card: ModelCard, state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write ``card`` + ``state_dict`` as a package folder ``dest_dir`` (which must not exist).

    The weights' SHA-256 and byte count are computed and stored in ``card.weights`` (the card object is
    updated too). Returns the package path.

    Raises:
        CervixTLError: ``dest_dir`` exists; BadInput: it cannot be written.
    """
    from safetensors.torch import save_file

    dest = Path(dest_dir)
    if dest.exists():
        raise CervixTLError(f"{dest} already exists; choose another folder or version")
    tensors = _plain_state(state_dict)
    with atomic_dir(dest) as tmp:
        wpath = tmp / WEIGHTS_FILE
        # One metadata key only: safetensors writes a map in random order, which would change the SHA-256.
        save_file(tensors, str(wpath), metadata={"format": "pt"})
        card.weights = {"file": WEIGHTS_FILE, "sha256": sha256_file(wpath), "bytes": wpath.stat().st_size}
        card.validate()
        (tmp / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")
    return dest


def verify_package(src_dir: str | os.PathLike) -> ModelCard:
    """Read the card of package ``src_dir`` and check its weights file against the recorded SHA-256/size.

    Raises:
        ModelError: missing/unreadable card or weights, or a checksum mismatch.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise ModelError(f"{src}: not a model package folder")
    card = ModelCard.read(src)
    wfile = src / str(card.weights.get("file") or WEIGHTS_FILE)
    if not wfile.is_file():
        raise ModelError(f"{src}: weights file {wfile.name} is missing")
    expected = str(card.weights.get("sha256") or "").lower()
    if not expected:
        raise ModelError(f"{src}: the model card records no SHA-256 for its weights")
    size = card.weights.get("bytes")
    if size is not None and int(size) != wfile.stat().st_size:
        raise ModelError(f"{wfile}: {wfile.stat().st_size} bytes, the model card says {size}: corrupt or truncated")
    actual = sha256_file(wfile)
    if actual != expected:
        raise ModelError(f"{wfile}: SHA-256 {actual[:12]}... does not match the model card ({expected[:12]}...): "
                         "corrupt or tampered weights")
    return card


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file to CPU tensors.

    Raises:
        ModelError: the file is not a valid safetensors file.
    """
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several error types on bad files
        raise ModelError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None


def load_package(src_dir: str | os.PathLike, verify: bool = True) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """Read a package: its card and its weights (CPU tensors).

    Args:
        src_dir: package folder.
        verify: check the weights' SHA-256 against the card first (default; skip only for files just written).

    Raises:
        ModelError: missing/corrupt files or SHA-256 mismatch.
    """
    src = Path(src_dir)
    card = verify_package(src) if verify else ModelCard.read(src)
    state = read_safetensors(src / str(card.weights.get("file") or WEIGHTS_FILE))
    return card, state


def copy_package(src_dir: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Verify package ``src_dir`` and copy its card and weights to ``dest_dir`` (atomic, must not exist)."""
    src = Path(src_dir)
    card = verify_package(src)
    dest = Path(dest_dir)
    if dest.exists():
        raise CervixTLError(f"{dest} already exists")
    with atomic_dir(dest) as tmp:
        shutil.copy2(src / CARD_FILE, tmp / CARD_FILE)
        wname = str(card.weights.get("file") or WEIGHTS_FILE)
        shutil.copy2(src / wname, tmp / wname)
    return dest
