"""Issue 14 defect 10: Slicer 5.8 (Python 3.9) must load the modules and say clearly that it is not supported.

Python 3.9 is not installed here, so the files that Slicer's process reads when it loads the modules (module
files, both Libs, ``cervixtl/runner.py``) are checked for what 3.9 cannot run: ``X | Y`` unions evaluated at
run time (in a file without ``from __future__ import annotations``, or outside annotations), ``match``
statements and other 3.10-only syntax (``ast.parse(feature_version=(3, 9))``), ``zip(strict=)`` and
``dataclass(slots=/kw_only=)``. The widgets are then set up as Python 3.9 and must show the refusal instead of
the panel.
"""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = sorted([*REPO.glob("CervixTL/*.py"), *REPO.glob("CervixTL/CervixTLLib/*.py"),
                *REPO.glob("CervixTLTraining/*.py"), *REPO.glob("CervixTLTraining/CervixTLTrainingLib/*.py"),
                REPO / "cervixtl" / "runner.py"])
TYPE_NAMES = {"None", "int", "float", "str", "bool", "bytes", "list", "dict", "tuple", "set", "Path", "Any"}


def _annotation_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        anns = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            anns = [a.annotation for a in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs,
                                           node.args.vararg, node.args.kwarg] if a is not None] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            anns = [node.annotation]
        for a in anns:
            if a is not None:
                ids.update(id(n) for n in ast.walk(a))
    return ids


def _typelike(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and node.value is None) or (
        isinstance(node, ast.Name) and node.id in TYPE_NAMES) or isinstance(node, ast.Subscript)


def _problems(path: Path) -> list[str]:
    src = path.read_text(encoding="utf-8")
    out = []
    try:
        ast.parse(src, feature_version=(3, 9))
    except SyntaxError as exc:
        out.append(f"{path.name}:{exc.lineno}: Python 3.9 cannot parse this ({exc.msg})")
    tree = ast.parse(src)
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations"
                                                                                   for a in n.names)
                 for n in tree.body)
    in_ann = _annotation_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and (_typelike(node.left)
                                                                             or _typelike(node.right)):
            if id(node) in in_ann and not future:
                out.append(f"{path.name}:{node.lineno}: X | Y annotation without 'from __future__ import annotations'")
            elif id(node) not in in_ann:
                out.append(f"{path.name}:{node.lineno}: X | Y union evaluated at run time")
        if isinstance(node, ast.Call) and any(k.arg == "strict" for k in node.keywords) and getattr(
                node.func, "id", "") == "zip":
            out.append(f"{path.name}:{node.lineno}: zip(strict=) is Python 3.10+")
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dataclass" and any(
                k.arg in ("slots", "kw_only") for k in node.keywords):
            out.append(f"{path.name}:{node.lineno}: dataclass(slots/kw_only) is Python 3.10+")
    return out


def test_files_loaded_by_slicer_are_python_39_compatible() -> None:
    assert len(FILES) > 15
    problems = [p for f in FILES for p in _problems(f)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_what_39_cannot_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x: float | None) -> None:\n    return isinstance(x, int | float)\n", encoding="utf-8")
    assert len(_problems(bad)) == 2
    bad.write_text("match 1:\n    case 1:\n        pass\n", encoding="utf-8")
    assert _problems(bad)


@pytest.mark.slicer
@pytest.mark.parametrize("module_name", ["CervixTL", "CervixTLTraining"])
def test_on_python_39_the_panel_says_slicer_510_is_needed(module_name: str, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    import mrml_harness
    from test_cervixtl_ui import _install_slicer_stand_ins

    mrml_harness.make_slicer_env()
    _install_slicer_stand_ins(monkeypatch, tmp_path)
    labels: list = []
    qt = types.ModuleType("qt")
    qt.QLabel = lambda text: labels.append(text) or text
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.syspath_prepend(str(REPO / module_name))
    monkeypatch.delitem(sys.modules, module_name, raising=False)
    from CervixTLLib import deps

    monkeypatch.setattr(deps.sys, "version_info", (3, 9, 10, "final", 0))
    module = __import__(module_name)
    parent = types.SimpleNamespace()
    getattr(module, module_name)(parent)
    assert parent.helpText.startswith("CervixTL needs 3D Slicer 5.10 or later (Python 3.10 or newer); this "
                                      "Slicer runs Python 3.9")
    w = getattr(module, module_name + "Widget").__new__(getattr(module, module_name + "Widget"))
    getattr(module, module_name + "Widget").__init__(w)
    w.layout = types.SimpleNamespace(addWidget=lambda x: None)
    w.setup()
    assert w.unsupported and labels and "Slicer 5.10 or later" in labels[0]
    w.enter()
    w.exit()
    w.cleanup()  # nothing else runs


def test_additional_module_paths_route_finds_the_engine_of_the_checkout(tmp_path: Path) -> None:
    """README route 2: only the two module folders on the path (as Slicer's Additional module paths do), no
    site-packages (``python -S``: no installed cervixtl): the Lib finds the engine beside them in the checkout
    and the engine's processes get it on their PYTHONPATH."""
    import subprocess

    code = ("import sys; sys.path[:0] = [{a!r}, {b!r}]; import CervixTLLib.engine as e; import cervixtl; "
            "print(cervixtl.__file__); print(e.engine_env()['PYTHONPATH'].split(__import__('os').pathsep)[0])"
            ).format(a=str(REPO / "CervixTL"), b=str(REPO / "CervixTLTraining"))
    res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert res.returncode == 0, res.stderr
    engine_file, child_path = res.stdout.split()
    assert Path(engine_file) == REPO / "cervixtl" / "__init__.py" and Path(child_path) == REPO
