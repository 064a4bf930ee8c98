"""cervixtl.runner: the engine command line as a separate process (shared by both Slicer modules).

Real child processes throughout: ``python -m cervixtl ...`` for the engine's own progress and error lines, and
stand-in interpreters (``$CERVIXTL_PYTHON`` pointing at a small script) for a child that sleeps, ignores
SIGTERM or prints a chosen mix of stdout / stderr lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from cervixtl import runner
from cervixtl.runner import (
    EngineError,
    EngineProcess,
    engine_command,
    engine_env,
    engine_python,
    error_line,
    parse_progress_line,
    run_engine,
)

REPO = Path(__file__).resolve().parents[2]
posix_only = pytest.mark.skipif(os.name != "posix", reason="stand-in interpreters are POSIX scripts")


def _stand_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    """Make ``$CERVIXTL_PYTHON`` a script that runs ``body`` with this interpreter (engine args ignored)."""
    script = tmp_path / "stand_in_python"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body), encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("CERVIXTL_PYTHON", str(script))
    return script


# ============================================================================ pure functions
def test_progress_lines_are_parsed_and_everything_else_is_not() -> None:
    rec = parse_progress_line('  {"stage": "network", "fraction": 0.5, "message": "x"}\n')
    assert rec == {"stage": "network", "fraction": 0.5, "message": "x"}
    for other in ("plain text", "", "{not json", '{"no": "stage"}', "[1, 2]", '"stage"', "{}"):
        assert parse_progress_line(other) is None, other


def test_error_line_picks_the_engines_own_line() -> None:
    lines = ['{"stage": "read", "fraction": 0}', "some log", "cervixtl: error: ct.nrrd: no such file",
             "cervixtl: warning: later text"]
    assert error_line(lines, 2) == "cervixtl: error: ct.nrrd: no such file"
    assert error_line("\n".join(lines), 2) == "cervixtl: error: ct.nrrd: no such file"  # text works too
    internal = "log\ncervixtl: internal error: KeyError: 'x' (set CERVIXTL_DEBUG=1 for details)\n"
    assert error_line(internal, 1).startswith("cervixtl: internal error: KeyError")
    # no engine line (e.g. a crash before the CLI ran): the end of the traceback, not a later log line
    tb = "Traceback (most recent call last):\n  File x\nModuleNotFoundError: No module named 'torch'\n\n"
    assert error_line(tb, 1) == "ModuleNotFoundError: No module named 'torch'"
    assert error_line(["a", "b" * 1000], 1) == "b" * runner.MAX_LINE_CHARS
    assert error_line(['{"stage": "x", "fraction": 1}', "   "], 3) == "the engine stopped with exit status 3"
    assert error_line([], -9) == "the engine stopped with exit status -9"
    assert error_line(lines, -15, cancelled=True) == "cancelled"


def test_interpreter_command_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CERVIXTL_PYTHON", raising=False)
    assert engine_python() == sys.executable
    assert engine_command(["info", Path("ct.nrrd"), 3]) == [sys.executable, "-m", "cervixtl", "info", "ct.nrrd", "3"]
    monkeypatch.setenv("CERVIXTL_PYTHON", "/opt/py/bin/python3")
    assert engine_python() == "/opt/py/bin/python3"
    # inside the Slicer application: its PythonSlicer launcher (found on PATH)
    monkeypatch.delenv("CERVIXTL_PYTHON")
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text("#!/bin/sh\n", encoding="utf-8")
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace(app=object()))
    assert runner.inside_slicer_app() and engine_python() == str(launcher)
    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace())  # slicer-core libraries only
    assert not runner.inside_slicer_app() and engine_python() == sys.executable

    # the folder holding the cervixtl package goes first on the child's PYTHONPATH
    assert runner.engine_source_dir() == REPO
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = engine_env({"CERVIXTL_MODELS_DIR": "/m"})
    assert env["PYTHONPATH"] == os.pathsep.join([str(REPO), "/elsewhere"])
    assert env["PYTHONUNBUFFERED"] == "1" and env["CERVIXTL_MODELS_DIR"] == "/m"
    assert env["PATH"] == os.environ["PATH"]
    monkeypatch.delenv("PYTHONPATH")
    assert engine_env()["PYTHONPATH"] == str(REPO)


def test_runner_is_stdlib_only_at_import_and_never_imports_slicer_or_qt() -> None:
    code = ("import sys, cervixtl.runner; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('slicer', 'qt', 'vtk', 'numpy', 'torch', 'SimpleITK', 'psutil')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# ============================================================================ real engine child
def test_real_engine_progress_then_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ct.nii.gz").write_bytes(b"")  # present (a missing path is refused before any progress)
    proc = EngineProcess(["contour", str(tmp_path / "ct.nii.gz"), str(tmp_path / "out.seg.nrrd"), "--model",
                          "no-such-model", "--models-dir", str(tmp_path / "models"), "--progress", "json"])
    seen: list[dict] = []
    t0 = time.monotonic()
    while proc.running and time.monotonic() - t0 < 120:
        seen += proc.poll()  # what the GUI timer does: never blocks
        time.sleep(0.05)
    assert proc.wait(10) == 2 and proc.returncode == 2 and not proc.running
    assert [r["stage"] for r in seen] == ["load-model", "error"] and seen == proc.records
    assert seen[-1]["kind"] == "model" and seen[-1]["message"].startswith("unknown model 'no-such-model'")
    assert seen[0]["fraction"] == 0.0 and seen[0]["message"] == "loading model"
    assert not any(ln.lstrip().startswith("{") for ln in proc.stderr_lines)  # progress is not log text
    msg = proc.error_message()
    assert msg.startswith("cervixtl: error: unknown model 'no-such-model'") and "\n" not in msg
    res = proc.result()
    assert not res.ok and not res.cancelled and res.returncode == 2 and res.error == msg
    assert res.progress == seen and res.stdout == ""


def test_run_engine_returns_stdout_or_raises_one_line(tmp_path: Path) -> None:
    out = run_engine(["--help"], timeout_s=120)
    assert "contour" in out
    with pytest.raises(EngineError) as exc:
        run_engine(["info", str(tmp_path / "missing.nii.gz")], timeout_s=120)
    err = exc.value
    assert str(err).startswith("cervixtl: error:") and "missing.nii.gz" in str(err) and "\n" not in str(err)
    assert err.returncode == 2 and "missing.nii.gz" in err.stderr
    # the module's wording hook gets the whole stderr and the exit status
    with pytest.raises(EngineError, match=r"^2: .*missing\.nii\.gz"):
        run_engine(["info", str(tmp_path / "missing.nii.gz")], timeout_s=120,
                   describe=lambda stderr, rc: f"{rc}: {stderr.strip().splitlines()[-1]}")


# ============================================================================ stand-in children
@posix_only
def test_cancel_of_a_long_child_returns_promptly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in_python(tmp_path, monkeypatch, """
        import sys, time
        print('{"stage": "train", "fraction": 0.1, "message": "epoch 1"}', file=sys.stderr, flush=True)
        time.sleep(30)
    """)
    proc = EngineProcess(["finetune"])
    t0 = time.monotonic()
    while not proc.records and time.monotonic() - t0 < 20:
        proc.poll()
        time.sleep(0.02)
    assert proc.running and proc.returncode is None and proc.error_message() is None
    assert proc.wait(0.2) is None and proc.running  # a time-out leaves it running
    t0 = time.monotonic()
    proc.cancel()
    rc = proc.wait(10)
    assert time.monotonic() - t0 < 5
    assert rc == -signal.SIGTERM and proc.cancelled and not proc.running
    assert [r["stage"] for r in proc.records] == ["train"]
    res = proc.result()
    assert res.cancelled and not res.ok and res.error == "cancelled"
    proc.cancel()  # cancelling a finished process is harmless


@posix_only
def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in_python(tmp_path, monkeypatch, """
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", file=sys.stderr, flush=True)
        time.sleep(30)
    """)
    proc = EngineProcess(["finetune"], kill_after_s=0.5)
    t0 = time.monotonic()
    while not proc.stderr_lines and time.monotonic() - t0 < 20:
        proc.poll()
        time.sleep(0.02)
    t0 = time.monotonic()
    proc.cancel()
    assert proc.wait(10) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - t0 < 5


@posix_only
def test_output_streams_are_sorted_and_the_describe_hook_words_errors(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in_python(tmp_path, monkeypatch, """
        import json, os, sys
        print(json.dumps({"stage": "a", "fraction": 0.5}), file=sys.stderr)
        print("plain log line", file=sys.stderr)
        print('{"not": "progress"}', file=sys.stderr)
        print("", file=sys.stderr)
        print("{broken json", file=sys.stderr)
        print(json.dumps({"stage": "b", "fraction": 1.0}), file=sys.stderr)
        print(json.dumps({"args": sys.argv[1:], "cwd": os.getcwd(), "x": os.environ.get("X_EXTRA")}))
        print("cervixtl: error: it went wrong", file=sys.stderr)
        sys.exit(2)
    """)
    work = tmp_path / "work"
    work.mkdir()
    proc = EngineProcess(["compare", "--json"], env={"X_EXTRA": "1"}, cwd=work,
                         describe=lambda stderr, rc, cancelled: f"{rc}/{cancelled}/{stderr.splitlines()[-1]}")
    assert proc.pid > 0 and proc.args == ["compare", "--json"]
    assert proc.wait(30) == 2
    assert [r["stage"] for r in proc.records] == ["a", "b"]
    assert proc.stderr_lines == ["plain log line", '{"not": "progress"}', "{broken json",
                                 "cervixtl: error: it went wrong"]
    out = json.loads(proc.stdout)
    assert out == {"args": ["-m", "cervixtl", "compare", "--json"], "cwd": str(work), "x": "1"}
    assert proc.error_message() == "2/False/cervixtl: error: it went wrong"


@posix_only
def test_run_engine_json_time_out_and_start_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in_python(tmp_path, monkeypatch, """
        import sys, time
        if "sleep" in sys.argv:
            time.sleep(30)
        print('[{"name": "tiny"}]' if "list" in sys.argv else "not json at all")
    """)
    assert run_engine(["models", "list", "--json"], timeout_s=30, parse_json=True) == [{"name": "tiny"}]
    with pytest.raises(EngineError, match="did not print JSON: not json at all"):
        run_engine(["models", "show"], timeout_s=30, parse_json=True)
    t0 = time.monotonic()
    with pytest.raises(EngineError, match=r"cervixtl models sleep did not finish within 1 s") as exc:
        run_engine(["models", "sleep", "x"], timeout_s=1)
    assert exc.value.returncode is None and time.monotonic() - t0 < 10

    monkeypatch.setenv("CERVIXTL_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(EngineError, match="cannot start the CervixTL engine with .*no-such-python"):
        run_engine(["--help"], timeout_s=30)
    with pytest.raises(EngineError, match="cannot start the CervixTL engine"):
        EngineProcess(["--help"])
