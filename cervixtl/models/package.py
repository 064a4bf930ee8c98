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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_dir
from ..errors import BadInput, CervixTLError, ModelError
from ..safepath import safe_join
from .card import ModelCard

if TYPE_CHECKING:  # torch only where tensors are handled (verifying and copying packages stay torch-free)
    import torch

CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"


#: Hash types :func:`file_digests` computes (the ones model publishers give).
HASH_TYPES = ("sha256", "sha1", "md5")


def file_digests(path: str | os.PathLike, kinds: Iterable[str], chunk: int = 1 << 20) -> dict[str, str]:
    """Hex digests ``{kind: digest}`` of a file's bytes for each of ``kinds`` (:data:`HASH_TYPES`), in one read.

    Raises:
        ModelError: a kind that is not one of :data:`HASH_TYPES`.
    """
    wanted = sorted(set(kinds))
    bad = [k for k in wanted if k not in HASH_TYPES]
    if bad:
        raise ModelError(f"unsupported hash type {bad[0]!r} (use {', '.join(HASH_TYPES)})")
    hs = {k: hashlib.new(k, usedforsecurity=False) for k in wanted}
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            for h in hs.values():
                h.update(block)
    return {k: h.hexdigest() for k, h in hs.items()}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    return file_digests(path, ("sha256",), chunk)["sha256"]


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
        try:
            save_file(tensors, str(wpath), metadata={"format": "pt"})
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors reports I/O failures as its own error type
            raise BadInput(f"cannot write {dest}: {str(exc)[:120]} (disk full?); nothing was written") from None
        _verify_written(wpath, tensors, dest)
        card.weights = {"file": WEIGHTS_FILE, "sha256": sha256_file(wpath), "bytes": wpath.stat().st_size}
        card.validate()
        (tmp / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")
    return dest


def _verify_written(wpath: Path, tensors: Mapping[str, torch.Tensor], dest: Path) -> None:
    """Read the header of a just-written safetensors file back: every tensor must be there, the file as long
    as its data (a full disk can leave it short without an error)."""
    from safetensors import safe_open

    need = sum(t.numel() * t.element_size() for t in tensors.values())
    try:
        with safe_open(str(wpath), framework="pt", device="cpu") as fh:
            n = len(list(fh.keys()))
        ok = n == len(tensors) and wpath.stat().st_size >= need
    except Exception:  # noqa: BLE001 - any failure to read back is a failed write
        ok = False
    if not ok:
        raise BadInput(f"writing {dest} failed: the weights file is incomplete (disk full?); nothing was written")


def verify_package(src_dir: str | os.PathLike) -> ModelCard:
    """Read the card of package ``src_dir`` and check its weights file against the recorded SHA-256/size.

    Raises:
        ModelError: missing/unreadable card or weights, or a checksum mismatch.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise ModelError(f"{src}: not a model package folder")
    if (src / CARD_FILE).is_symlink():
        raise ModelError(f"{src}: {CARD_FILE} is a symbolic link; not accepted in a model package")
    card = ModelCard.read(src)
    wfile = weights_path(src, card)
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


def weights_path(src_dir: str | os.PathLike, card: ModelCard) -> Path:
    """The weights file named by ``card.weights["file"]`` inside package ``src_dir``.

    Raises:
        ModelError: the name is absolute, has ``..``, passes a symbolic link or resolves outside the package.
    """
    try:
        return safe_join(src_dir, str(card.weights.get("file") or WEIGHTS_FILE), "weights file name")
    except BadInput as exc:
        raise ModelError(f"{src_dir}: {exc}") from None


def _kind_of_bytes(path: Path) -> str:
    """A short description of what a non-safetensors weights file looks like."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:2] == b"PK":
        return "a zip file (a torch .pt checkpoint?)"
    if head[:1] == b"\x80":
        return "a Python pickle"
    if not head:
        return "an empty file"
    return "not a safetensors file"


def check_weights_fit(src_dir: str | os.PathLike, card: ModelCard | None = None) -> ModelCard:
    """Check that a package's weights are a safetensors file whose tensor names and shapes are exactly those
    of the network its card describes (built on torch's ``meta`` device: no memory, no compute), so that
    nothing is registered that cannot load. Returns the card.

    Raises:
        ModelError: not safetensors (a pickle, random bytes), missing / unexpected tensors, or shapes that
            differ, with the first few named.
    """
    import torch
    from safetensors import safe_open

    from .networks import build_network

    card = card or ModelCard.read(src_dir)
    wfile = weights_path(src_dir, card)
    try:
        with safe_open(str(wfile), framework="pt", device="cpu") as fh:
            got = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118 - not a dict
    except Exception:  # noqa: BLE001 - safetensors raises several error types on bad files
        raise ModelError(f"{wfile}: {_kind_of_bytes(wfile)}, expected safetensors weights; not imported") from None
    with torch.device("meta"):
        net = build_network(card)
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    problems = [f"missing {k}" for k in want if k not in got][:3]
    problems += [f"unexpected {k}" for k in got if k not in want][:3]
    problems += [f"{k} {got[k]} vs {want[k]}" for k in want if k in got and got[k] != want[k]][:3]
    if problems:
        raise ModelError(f"model {card.spec}: weights do not fit its {card.architecture.get('name')} network "
                         f"({len(got)} tensors, the network has {len(want)}; {'; '.join(problems)})")
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
    state = read_safetensors(weights_path(src, card))
    return card, state


def copy_package(src_dir: str | os.PathLike, dest_dir: str | os.PathLike, version: str | None = None) -> Path:
    """Verify package ``src_dir`` and copy its card and weights to ``dest_dir`` (atomic, must not exist);
    with ``version`` the copy's card gets that version (the weights and their SHA-256 are unchanged)."""
    src = Path(src_dir)
    card = verify_package(src)
    dest = Path(dest_dir)
    if dest.exists():
        raise CervixTLError(f"{dest} already exists")
    wfile = weights_path(src, card)
    with atomic_dir(dest) as tmp:
        if version is None:
            shutil.copy2(src / CARD_FILE, tmp / CARD_FILE)
        else:
            card.version = str(version)
            card.validate()
            (tmp / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")
        target = safe_join(tmp, str(card.weights.get("file") or WEIGHTS_FILE), "weights file name")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wfile, target)
    return dest
