"""The model registry: versions of each model and which one is active.

Layout of the registry folder (default ``$CERVIXTL_MODELS_DIR``, else ``$CERVIXTL_HOME/models``, else
``~/.cervixtl/models``)::

    <root>/<name>/<version>/model.json, weights.safetensors   # one verified package per version
    <root>/<name>/active.json                                 # {"active": "2", "history": ["1", "2"]}

``active.json`` is written atomically; ``history`` lists the versions activated, oldest first, for
:meth:`Registry.rollback`. Every change (add, activate, rollback, remove) holds the registry's file lock
``<root>/.registry.lock``, so two processes never take the same new version; a package is checked before it
is added (SHA-256, and weights that are safetensors with exactly the tensors of the card's network). When the
registry holds no model of the requested name, the bundled demo model ``Resources/Models/cervixtl-demo/`` is
used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import sweep_stale, temp_prefix, write_json_atomic
from ..errors import CervixTLError, ModelError
from .card import ModelCard
from .package import check_weights_fit, copy_package, load_package, verify_package

if TYPE_CHECKING:  # torch is imported only to load a network (listing and cards stay torch-free)
    import torch

DEFAULT_MODEL = "cervixtl-demo"
ACTIVE_FILE = "active.json"
LOCK_FILE = ".registry.lock"
WORK_DIR = ".work"
#: Seconds a change waits for another process's registry lock before giving up.
LOCK_TIMEOUT_S = 120.0


def default_home() -> Path:
    """``$CERVIXTL_HOME`` or ``~/.cervixtl``."""
    return Path(os.environ.get("CERVIXTL_HOME") or Path.home() / ".cervixtl").expanduser()


def default_models_dir() -> Path:
    """``$CERVIXTL_MODELS_DIR`` or ``<home>/models``."""
    env = os.environ.get("CERVIXTL_MODELS_DIR")
    return Path(env).expanduser() if env else default_home() / "models"


def bundled_models_dir() -> Path:
    """``Resources/Models`` of the extension (bundled demo model)."""
    from ..resources import resources_dir

    return resources_dir() / "Models"


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"name@version"`` -> (name, version); ``"name"`` -> (name, None)."""
    spec = spec.strip()
    name, _, version = spec.partition("@")
    if not name or (_ and not version):
        raise ModelError(f"model {spec!r}: expected NAME or NAME@VERSION")
    return name, (version or None)


def version_key(version: str) -> tuple:
    """Sort key: numeric parts numerically (``"10"`` after ``"9"``), text parts alphabetically."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"[._-]", version))


class Registry:
    """A folder of model packages with an active version per model name."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_models_dir()
        self._lock: Any = None
        self._work_locks: list[Any] = []

    # ------------------------------------------------------------------ locking
    def locked(self) -> Any:
        """The registry's file lock (re-entrant in this process), as a context manager; creates the root.

        Raises:
            ModelError: another process held it for :data:`LOCK_TIMEOUT_S` seconds.
        """
        from filelock import FileLock

        if self._lock is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.root / LOCK_FILE), timeout=LOCK_TIMEOUT_S)
        return _Held(self._lock, self.root)

    def work_dir(self, name: str) -> Path:
        """A training work folder for model ``name`` that no other running process uses: ``<root>/.work/<name>``
        (where ``--resume`` finds a stopped run) when free, else a private ``<name>.pid<N>...`` folder. The
        claim lasts as long as this registry object (or the process)."""
        from filelock import FileLock, Timeout

        base = self.root / WORK_DIR
        base.mkdir(parents=True, exist_ok=True)
        sweep_stale(base)
        lock = FileLock(str(base / f".{name}.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return Path(tempfile.mkdtemp(prefix=temp_prefix(name), suffix=".run", dir=base))
        self._work_locks.append(lock)
        return base / name

    # ------------------------------------------------------------------ queries
    def names(self) -> list[str]:
        """Model names present in the registry."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[str]:
        """Registered versions of ``name``, oldest first."""
        d = self.root / name
        if not d.is_dir():
            return []
        vs = [p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "model.json").exists()]
        return sorted(vs, key=version_key)

    def _state(self, name: str) -> dict[str, Any]:
        p = self.root / name / ACTIVE_FILE
        if not p.exists():
            return {"active": None, "history": []}
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{p}: unreadable registry state ({exc})") from None
        return {"active": data.get("active"), "history": list(data.get("history", []))}

    def _write_state(self, name: str, state: dict[str, Any]) -> None:
        write_json_atomic(self.root / name / ACTIVE_FILE, state)

    def active(self, name: str) -> str | None:
        """The active version of ``name`` (None when the registry holds none)."""
        st = self._state(name)
        vs = self.versions(name)
        if st["active"] in vs:
            return st["active"]
        return vs[-1] if vs else None

    def bundled(self, name: str) -> Path | None:
        """The bundled package of ``name`` under ``Resources/Models`` if present."""
        p = bundled_models_dir() / name
        return p if (p / "model.json").exists() else None

    def list(self) -> list[dict[str, Any]]:
        """One dict per registered version (name, version, active, created, parent, derivation, labels, sha256,
        path, source); the bundled demo model is listed (source "bundled") when not registered."""
        rows: list[dict[str, Any]] = []
        for name in self.names():
            act = self.active(name)
            for v in self.versions(name):
                rows.append(self._row(self.root / name / v, active=(v == act), source="registry"))
        bdir = bundled_models_dir()
        if bdir.is_dir():
            for p in sorted(bdir.iterdir()):
                if (p / "model.json").exists() and p.name not in self.names():
                    rows.append(self._row(p, active=True, source="bundled"))
        return rows

    @staticmethod
    def _row(path: Path, active: bool, source: str) -> dict[str, Any]:
        card = ModelCard.read(path)
        return {"name": card.name, "version": card.version, "active": active, "created": card.created,
                "parent": card.parent, "derivation": card.derivation, "labels": list(card.label_names),
                "architecture": card.architecture.get("name"), "sha256": card.weights.get("sha256"),
                "path": str(path), "source": source}

    def resolve(self, spec: str | None = None) -> Path:
        """Package folder of ``spec``: ``"name"`` (its active version), ``"name@version"``, None (the default
        model ``cervixtl-demo``), or a path to a package folder. Falls back to the bundled model of that name.

        Raises:
            ModelError: unknown model or version.
        """
        if spec and ("/" in spec or os.sep in spec or spec.startswith(".")) and Path(spec).is_dir():
            if not (Path(spec) / "model.json").exists():
                raise ModelError(f"{spec}: folder has no model.json, not a model package")
            return Path(spec)
        name, version = parse_spec(spec or DEFAULT_MODEL)
        vs = self.versions(name)
        if vs:
            if version is None:
                version = self.active(name)
            if version not in vs:
                raise ModelError(f"model {name} has no version {version!r} (registered: {', '.join(vs)})")
            return self.root / name / str(version)
        b = self.bundled(name)
        if b is not None:
            card = ModelCard.read(b)
            if version is None or version == card.version:
                return b
            raise ModelError(f"model {name} has no version {version!r} (bundled: {card.version})")
        known = self.names() + [p.name for p in bundled_models_dir().glob("*") if (p / "model.json").exists()]
        raise ModelError(f"unknown model {name!r} (available: {', '.join(sorted(set(known))) or 'none'}; "
                         f"registry {self.root})")

    def card(self, spec: str | None = None) -> ModelCard:
        """The card of ``spec`` (see :meth:`resolve`)."""
        return ModelCard.read(self.resolve(spec))

    def load(self, spec: str | None = None, device: str | torch.device = "cpu") -> tuple[ModelCard, torch.nn.Module]:
        """Resolve, verify (SHA-256) and build the model ``spec``; returns (card, network in eval mode)."""
        from .networks import build_network

        card, state = load_package(self.resolve(spec), verify=True)
        net = build_network(card)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0][:160]
            raise ModelError(f"model {card.spec}: weights do not fit its architecture ({first})") from None
        return card, net.to(device).eval()

    def next_version(self, name: str) -> str:
        """A new version string for ``name``: 1 + the largest integer version registered (``"1"`` if none)."""
        nums = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(nums, default=0) + 1)

    # ------------------------------------------------------------------ changes
    def add(self, package_dir: str | os.PathLike, activate: bool = False, new_version: bool = False) -> ModelCard:
        """Verify a package and copy it in as ``<name>/<version>``; the first version of a name becomes active.

        Adding the same name/version again with the same weights does nothing. With ``new_version`` the
        package gets the next free version number, allocated under the registry lock (two concurrent
        fine-tunes of one name get versions N and N+1).

        Raises:
            ModelError: corrupt package, weights that do not fit the card's network, or that name/version is
                registered with other weights.
        """
        card = check_weights_fit(package_dir, verify_package(package_dir))
        with self.locked():
            sweep_stale(self.root)
            if new_version:
                card.version = self.next_version(card.name)
                copy_package(package_dir, self.root / card.name / card.version, version=card.version)
            else:
                self._add_as_is(package_dir, card)
            if activate or self._state(card.name)["active"] is None:
                self.activate(card.spec)
        return card

    def _add_as_is(self, package_dir: str | os.PathLike, card: ModelCard) -> None:
        dest = self.root / card.name / card.version
        if dest.exists():
            old = ModelCard.read(dest)
            if old.weights.get("sha256") != card.weights.get("sha256"):
                raise ModelError(f"model {card.spec} is already registered with different weights; "
                                 "give the new one another version")
        else:
            copy_package(package_dir, dest)

    def activate(self, spec: str) -> str:
        """Make ``name@version`` (or the newest version of ``name``) active; returns the version."""
        with self.locked():
            return self._activate(spec)

    def _activate(self, spec: str) -> str:
        name, version = parse_spec(spec)
        vs = self.versions(name)
        if not vs:
            raise ModelError(f"unknown model {name!r} in registry {self.root}")
        version = version or vs[-1]
        if version not in vs:
            raise ModelError(f"model {name} has no version {version!r} (registered: {', '.join(vs)})")
        st = self._state(name)
        hist = [v for v in st["history"] if v != version] + [version]
        self._write_state(name, {"active": version, "history": hist})
        return version

    def rollback(self, name: str) -> str:
        """Re-activate the version that was active before the current one; returns it.

        Raises:
            ModelError: nothing to roll back to.
        """
        with self.locked():
            return self._rollback(name)

    def _rollback(self, name: str) -> str:
        name, _ = parse_spec(name)
        vs = self.versions(name)
        st = self._state(name)
        hist = [v for v in st["history"] if v in vs]
        current = self.active(name)
        if current in hist:
            hist = hist[: hist.index(current)] + hist[hist.index(current) + 1:]
        if not hist:
            raise ModelError(f"model {name}: no earlier active version to roll back to")
        prev = hist[-1]
        self._write_state(name, {"active": prev, "history": hist})
        return prev

    def remove(self, spec: str) -> None:
        """Delete ``name@version`` (a version is required). Removing the active version re-activates the
        previously active one (else the newest left)."""
        with self.locked():
            self._remove(spec)

    def _remove(self, spec: str) -> None:
        name, version = parse_spec(spec)
        if version is None:
            raise ModelError(f"give the version to remove: {name}@VERSION")
        vs = self.versions(name)
        if version not in vs:
            raise ModelError(f"model {name} has no version {version!r} (registered: {', '.join(vs) or 'none'})")
        path = self.root / name / version
        trash = Path(tempfile.mkdtemp(prefix=temp_prefix(f"{name}-{version}"), suffix=".removed", dir=self.root))
        os.replace(path, trash / "pkg")
        shutil.rmtree(trash, ignore_errors=True)
        st = self._state(name)
        hist = [v for v in st["history"] if v != version]
        left = self.versions(name)
        if not left:
            (self.root / name / ACTIVE_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # another version or file still there
                (self.root / name).rmdir()
            return
        active = st["active"] if st["active"] in left else ([v for v in hist if v in left] or left)[-1]
        self._write_state(name, {"active": active, "history": hist})

    def export(self, spec: str | None, dest_dir: str | os.PathLike) -> Path:
        """Copy the verified package ``spec`` to ``dest_dir`` (must not exist); returns ``dest_dir``."""
        src = self.resolve(spec)
        dest = Path(dest_dir)
        if dest.exists():
            raise CervixTLError(f"{dest} already exists")
        return copy_package(src, dest)


class _Held:
    """``with``-able hold of a FileLock that turns a timeout into a one-line :class:`ModelError`."""

    def __init__(self, lock: Any, root: Path) -> None:
        self.lock, self.root = lock, root

    def __enter__(self) -> _Held:
        from filelock import Timeout

        try:
            self.lock.acquire()
        except Timeout:
            raise ModelError(f"the model registry {self.root} is locked by another process for over "
                             f"{LOCK_TIMEOUT_S:.0f} s; try again when it has finished") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()
