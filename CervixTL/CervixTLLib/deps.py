"""First-use install of the engine's Python packages into Slicer's Python, the SlicerTotalSegmentator way.

Qt-free parts, used by the module's ``ensureEngineDependencies``:

* :func:`engine_requirements` -- the engine's ONE dependency list: ``pyproject.toml`` beside the ``cervixtl``
  package (the source checkout, or the copy the extension's CMake installs there), else the installed
  distribution's metadata; never a hand-copied list.
* :func:`check_requirements` -- installed version and "satisfied?" of every requirement, asked in a
  SUBPROCESS of Slicer's Python (importlib.metadata + packaging; nothing is imported into Slicer, in particular
  not torch).
* :func:`plan_install` -- what to do: torch through the PyTorch extension's ``installTorch`` (CUDA-matched
  wheel, with the engine's version range); Slicer's own packages (:data:`SLICER_OWN`) never re-installed --
  pinned to their installed version in a pip constraints file, so that e.g. highdicom cannot upgrade Slicer's
  pydicom, and torch pinned once installed; an unsatisfiable one is a conflict, reported, not "fixed".
* :func:`pip_command` / :func:`loaded_and_changed` -- the pip run (its log is shown on failure) and whether a
  package already imported in Slicer changed (then Slicer must be restarted).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cervixtl.runner import engine_env, engine_python, engine_source_dir, popen_options

#: Oldest Python the extension runs on: Slicer 5.10 and later (Slicer 5.8 ships Python 3.9).
MIN_PYTHON = (3, 10)
#: Packages that come with Slicer (5.10: numpy, scipy, SimpleITK and VTK built with it; pydicom 2.4.4, Pillow,
#: dicomweb-client, requests, packaging... from its requirement files) and that Slicer's own modules import:
#: CervixTL never installs, upgrades or downgrades them (pinned to the installed version during the install;
#: one without package metadata, e.g. a SimpleITK built with Slicer, is left alone).
SLICER_OWN = ("numpy", "scipy", "SimpleITK", "pydicom", "vtk", "Pillow", "six", "retrying", "dicomweb-client",
              "requests", "certifi", "idna", "charset-normalizer", "urllib3", "packaging", "pyparsing", "pip",
              "setuptools", "wheel")
#: Installed by the PyTorch extension (its wheel matches the CUDA driver), never by pip here.
TORCH = "torch"

#: Run in Slicer's Python as a subprocess: argv[1] = JSON list of requirement strings; prints one JSON list of
#: {"requirement", "name", "installed" (version or null), "present" (importable), "ok"}. Nothing is imported.
CHECK_SCRIPT = r'''
import importlib.util, json, sys
from importlib.metadata import PackageNotFoundError, version
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
out = []
for text in json.loads(sys.argv[1]):
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate():
        continue
    try:
        have = version(req.name)
    except PackageNotFoundError:
        have = None
    try:
        present = have is not None or importlib.util.find_spec(req.name) is not None
    except (ImportError, ValueError):
        present = False
    out.append({"requirement": text, "name": req.name, "installed": have, "present": present,
                "ok": have is not None and req.specifier.contains(have, prereleases=True)})
print(json.dumps(out))
'''


def python_supported(version_info: Sequence[int] | None = None) -> bool:
    """True on Python :data:`MIN_PYTHON` or newer (Slicer 5.10+); ``version_info`` defaults to this Python's."""
    return tuple((version_info or sys.version_info)[:2]) >= MIN_PYTHON


def unsupported_text(version_info: Sequence[int] | None = None) -> str:
    """What the module shows instead of its panel on an older Slicer."""
    version_info = version_info or sys.version_info
    return (f"CervixTL needs 3D Slicer 5.10 or later (Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer); this "
            f"Slicer runs Python {version_info[0]}.{version_info[1]}. Please install a current Slicer.")


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_dependencies(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python 3.10: the one list is a plain TOML array of strings
        m = re.search(r"^\[project\].*?^dependencies\s*=\s*(\[.*?\])", text, re.S | re.M)
        if not m:
            raise ValueError(f"{path}: no [project] dependencies") from None
        return [str(r) for r in ast.literal_eval(re.sub(r"#.*", "", m.group(1)))]
    return [str(r) for r in tomllib.loads(text)["project"]["dependencies"]]


def engine_requirements(pyproject: str | os.PathLike | None = None) -> list[str]:
    """The engine's run-time requirements, from ``pyproject.toml`` beside the ``cervixtl`` package (or
    ``pyproject``), else from the installed ``cervixtl`` distribution's metadata.

    Raises:
        FileNotFoundError: neither is there.
    """
    src = engine_source_dir()
    path = Path(pyproject) if pyproject else (src / "pyproject.toml" if src is not None else None)
    if path is not None and path.is_file():
        return _pyproject_dependencies(path)
    from importlib.metadata import PackageNotFoundError, requires

    try:
        return [r for r in (requires("cervixtl") or []) if "extra ==" not in r]
    except PackageNotFoundError:
        raise FileNotFoundError("the CervixTL engine's pyproject.toml is missing and cervixtl is not installed"
                                ) from None


def check_requirements(requirements: Sequence[str], *, timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Installed version and "ok" of each requirement, asked in a subprocess of the engine's Python.

    Raises:
        RuntimeError: the check itself failed (its stderr in the message).
    """
    proc = subprocess.run([engine_python(), "-c", CHECK_SCRIPT, json.dumps(list(requirements))], capture_output=True,
                          text=True, timeout=timeout_s, env=engine_env(), stdin=subprocess.DEVNULL,
                          **popen_options())
    if proc.returncode != 0:
        raise RuntimeError("checking the installed Python packages failed:\n" + proc.stderr.strip()[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class InstallPlan:
    """What :func:`plan_install` decided (all lists of requirement strings)."""

    torch: str | None = None
    pip: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        """True when something must be installed."""
        return bool(self.torch or self.pip)


def plan_install(status: Sequence[dict[str, Any]]) -> InstallPlan:
    """From :func:`check_requirements` rows: torch (its requirement when missing or outside the engine's range),
    the pip requirements, the constraints pinning Slicer's own packages and torch to what is installed, and the
    conflicts (a Slicer-own package whose installed version the engine cannot use)."""
    own = {_canonical(n) for n in SLICER_OWN}
    plan = InstallPlan()
    for row in status:
        name = _canonical(row["name"])
        if name == TORCH:
            if not row["ok"]:
                plan.torch = row["requirement"]
            elif row["installed"]:
                plan.constraints.append(f"torch=={row['installed']}")
        elif name in own and row["installed"]:
            plan.constraints.append(f"{row['name']}=={row['installed']}")
            if not row["ok"]:
                plan.conflicts.append(f"{row['requirement']} (Slicer has {row['name']} {row['installed']})")
        elif name in own and row.get("present"):
            continue  # built with Slicer, no package metadata: never replaced
        elif not row["ok"]:
            plan.pip.append(row["requirement"])
    return plan


def pip_command(plan: InstallPlan, constraints_file: str | os.PathLike) -> list[str]:
    """``python -m pip install REQS -c CONSTRAINTS`` for the plan's pip requirements (the constraints file holds
    ``plan.constraints``)."""
    return [engine_python(), "-m", "pip", "install", "--disable-pip-version-check", *plan.pip, "-c",
            str(constraints_file)]


def loaded_and_changed(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]],
                       loaded: Sequence[str] | None = None) -> list[str]:
    """Packages whose installed version changed although Slicer has imported them (``loaded``: the top-level
    names of ``sys.modules``): the running Slicer still uses the old version, so it must be restarted."""
    loaded_names = {_canonical(n.split(".")[0]) for n in (sys.modules if loaded is None else loaded)}
    old = {_canonical(r["name"]): r["installed"] for r in before}
    return [r["name"] for r in after
            if old.get(_canonical(r["name"])) not in (None, r["installed"]) and _canonical(r["name"]) in loaded_names]


class InstallUI:
    """What :func:`ensure_installed` needs from the application (the module passes Slicer's dialogs; tests
    pass stand-ins): ``confirm(text) -> bool``, ``error(text, details)``, ``busy(text)`` (a context manager:
    the wait indication), ``ask_restart(text) -> bool`` and ``restart()``."""

    def confirm(self, text: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def error(self, text: str, details: str = "") -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def busy(self, text: str) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def ask_restart(self, text: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def restart(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def run_pip(cmd: Sequence[str], timeout_s: float = 3600.0) -> tuple[int, str]:
    """Run pip (a subprocess, no console window); returns (exit status, its whole output)."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, env=engine_env(),
                              stdin=subprocess.DEVNULL, **popen_options())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, str(exc)
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")


def ensure_installed(ui: InstallUI, torch_logic: Any, *, requirements: Sequence[str] | None = None,
                     pip_runner: Any = run_pip, work_dir: str | os.PathLike | None = None) -> bool:
    """Make the engine's requirements available in Slicer's Python; True when they all are (then or already).

    Order: check (subprocess) -> conflicts reported -> one confirmation listing what will be installed -> torch
    with ``torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=...)`` (the PyTorch
    extension; None = not installed) -> pip with Slicer's own packages and torch pinned (a constraints file),
    its log in the error dialog when it fails -> check again -> restart prompt when an imported package changed.
    """
    import tempfile

    if not python_supported():
        ui.error(unsupported_text())
        return False
    reqs = list(requirements) if requirements is not None else engine_requirements()
    with ui.busy("Checking CervixTL's Python packages…"):
        before = check_requirements(reqs)
    plan = plan_install(before)
    if plan.conflicts:
        ui.error("CervixTL cannot use this Slicer's own packages: " + "; ".join(plan.conflicts) + ". They are not "
                 "changed (Slicer needs them); use a Slicer version whose packages the engine supports.")
        return False
    if not plan.needed:
        return True
    listing = ([f"{plan.torch} (PyTorch extension)"] if plan.torch else []) + plan.pip
    if not ui.confirm("CervixTL needs these Python packages in Slicer's Python:\n\n  " + "\n  ".join(listing)
                      + "\n\nInstall them now? This downloads several hundred MB and can take minutes. Slicer's own "
                      "packages (" + ", ".join(c.split("==")[0] for c in plan.constraints) + ") are kept as they are."):
        return False
    if plan.torch:
        if torch_logic is None:
            ui.error("CervixTL needs PyTorch, which the PyTorch extension installs (it picks the build for your "
                     "GPU). Install the 'PyTorch' extension from the Extensions Manager, restart Slicer, and try "
                     "again.")
            return False
        spec = plan.torch[len(_name(plan.torch)):].strip() or None
        if torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=spec) is None:
            ui.error("PyTorch was not installed, so CervixTL cannot run yet.")
            return False
    if plan.pip:
        with tempfile.TemporaryDirectory(prefix="cervixtl-pip-", dir=work_dir) as tmp:
            constraints = Path(tmp) / "constraints.txt"
            pins = list(plan.constraints)
            if plan.torch:  # pin the torch the PyTorch extension just installed
                pins += [f"torch=={r['installed']}" for r in check_requirements([plan.torch]) if r["installed"]]
            constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
            with ui.busy("Installing " + ", ".join(_name(r) for r in plan.pip) + "…"):
                rc, log = pip_runner(pip_command(plan, constraints))
        if rc != 0:
            ui.error("Installing CervixTL's Python packages failed (nothing of Slicer's own was changed); see "
                     "the details for pip's log.", log)
            return False
    after = check_requirements(reqs)
    still = [r["requirement"] for r in after if not r["ok"]]
    if still:
        ui.error("Still missing after the installation: " + ", ".join(still), json.dumps(after, indent=1))
        return False
    changed = loaded_and_changed(before, after)
    if changed and ui.ask_restart("These packages changed while Slicer was using them: " + ", ".join(changed)
                                  + ". Restart Slicer now so that the new versions are used?"):
        ui.restart()
    return True
