"""What the CervixTLTraining module does, without Qt: case library, fine-tuning, comparison, model versions.

:class:`TrainingLogic` talks to the engine only through the ``cervixtl`` command line in separate processes
(``cases``, ``finetune``, ``compare``, ``models``) and fills MRML nodes of the scene it is given:

* the case table (``vtkMRMLTableNode``): case id, date added, site, structures, Dice proposal vs final CTV;
* the live training curve (two tables + a ``vtkMRMLPlotChartNode``), fed from ``--progress json`` lines;
* the comparison table (per structure Dice / HD95 (mm) / surface Dice of source and new model, Wilcoxon p, n)
  with a bar chart and a plain verdict (:mod:`.verdict`);
* the model-versions table (parent, cases used, validation metrics, date, active).

Every engine call goes through CervixTL's one runner (``CervixTLLib.engine``): with ``on_done`` a method queues
its command on :attr:`TrainingLogic.tasks` (a background :class:`~CervixTLLib.engine.TaskQueue` the GUI polls
from its timer, so no click blocks the GUI) and calls ``on_done(value)`` later; without, it runs the command to
the end (scripts, the self-test, tests). Long runs (fine-tuning, comparison) are
:class:`~CervixTLLib.engine.EngineProcess` objects; the GUI calls :meth:`TrainingLogic.poll` from the same
timer; :meth:`TrainingLogic.cancel` stops the whole process tree. What the engine prints is read by
``CervixTLLib.contract`` only (its JSON contract; no key guessing); every path comes from the engine.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cervixtl.splits import split_cases
from CervixTLLib import contract, nodes
from CervixTLLib.engine import EngineError, EngineProcess, EngineResult, TaskQueue, run_engine

from . import estimates, tables
from .verdict import StructureComparison, classify, verdict

#: Seconds between SIGTERM and SIGKILL when a cancelled run does not stop by itself (a training step or a
#: validation pass may be under way when the cancel arrives).
KILL_GRACE_S = 20.0

#: One-line explanation of each freezing strategy, shown under the selector.
FREEZE_HELP: dict[str, str] = {
    "encoder": "Freeze the encoder and train the decoder only: keeps the source model's image features; "
               "the safest choice with few cases.",
    "all-but-last-N": "Freeze everything except the last N blocks: adapts only the final layers "
                      "(few parameters, fast, least risk of forgetting).",
    "none": "Train every layer: most flexible, but needs more cases and can forget what the source model knew.",
}



def freeze_option(strategy: str, last_n: int = 2) -> str:
    """The ``--freeze`` value: "encoder", "none" or "all-but-last-<N>" for strategy "all-but-last-N"."""
    if strategy == "all-but-last-N":
        return f"all-but-last-{int(last_n)}"
    return strategy


@dataclass
class FinetuneRequest:
    """The options of one ``cervixtl finetune`` run.

    Attributes:
        source: registry model NAME[@VER] to start from, or "none" (train from scratch).
        name: name of the new model (a new version is added under it).
        cases: case ids (or one case-library folder).
        freeze: "encoder", "none" or "all-but-last-<N>".
        epochs / minutes: the budget; when ``minutes`` is set it wins.
        val_fraction: fraction of cases held out for validation (0..0.9).
        device: "auto", "cpu" or "cuda".
    """

    source: str
    name: str
    cases: list[str]
    freeze: str = "encoder"
    epochs: int | None = 20
    minutes: float | None = None
    val_fraction: float = 0.2
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    activate: bool = False

    def to_args(self) -> list[str]:
        """The engine arguments, ``finetune ... --progress json``."""
        args = ["finetune", "--source", self.source or "none", "--cases", ",".join(self.cases),
                "--name", self.name, "--freeze", self.freeze, "--val-fraction", f"{self.val_fraction:g}",
                "--device", self.device, "--seed", str(int(self.seed)), "--progress", "json", "--json"]
        if self.minutes:
            args += ["--minutes", f"{float(self.minutes):g}"]
        elif self.epochs:
            args += ["--epochs", str(int(self.epochs))]
        if self.resume:
            args.append("--resume")
        if self.activate:
            args.append("--activate")
        return args


@dataclass
class JobStatus:
    """What the GUI shows about the running (or last) background job.

    Attributes:
        kind: "finetune", "compare" or "" (no job).
        running: still running.
        fraction: 0..1 progress.
        message: the engine's last progress message.
        eta_s: estimated seconds left (NaN when unknown).
        error: one readable line when the job failed or was cancelled, else None.
        returncode: exit status once finished.
        cancelled: the job was stopped with :meth:`TrainingLogic.cancel`.
        new_records: progress records received in this poll.
        log: the engine's stderr log once the job ended (for "Show Details").
    """

    kind: str = ""
    running: bool = False
    fraction: float = 0.0
    message: str = ""
    eta_s: float = math.nan
    error: str | None = None
    returncode: int | None = None
    cancelled: bool = False
    new_records: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""

    @property
    def eta_text(self) -> str:
        """"about 3 min left" or ""."""
        return f"about {estimates.format_duration(self.eta_s)} left" if math.isfinite(self.eta_s) else ""


def _num(x: Any) -> float:
    """A finite or NaN float from a JSON value (None / missing -> NaN)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def comparison_rows(data: dict, source: str, new: str) -> list[StructureComparison]:
    """Per-structure rows (source vs new) from the JSON of ``cervixtl compare --json``.

    It holds ``models`` (the specs, in ``--models`` order), ``structures``, ``summary`` (model -> structure ->
    metric -> {n, mean, median, ...}) and ``tests`` (paired Wilcoxon per structure, metric and model pair a/b,
    with ``median_difference`` = b - a). ``source`` and ``new`` are the specs the comparison was started with.

    Raises:
        EngineError: a spec is not among the compared models.
    """
    data = contract.parse(data, "compare", ("models", "structures", "summary", "tests"))
    models = [str(m) for m in data.get("models", [])]
    for spec in (source, new):
        if spec not in models:
            raise EngineError(f"the comparison did not compare {spec} (it compared {', '.join(models)})")
    src, new_ = source, new
    summary = data.get("summary") or {}
    tests = [t for t in data.get("tests") or [] if isinstance(t, dict)]

    def mean(model: str, structure: str, metric: str) -> float:
        entry = ((summary.get(model) or {}).get(structure) or {}).get(metric)
        return _num(entry.get("mean")) if isinstance(entry, dict) else _num(entry)

    rows = []
    for s in data.get("structures") or []:
        test = next((t for t in tests if t.get("structure") == s and t.get("metric") == "dice"
                     and {t.get("a"), t.get("b")} == {src, new_}), {})
        diff = _num(test.get("median_difference"))
        if test.get("a") == new_:  # the engine's difference is b - a: make it new - source
            diff = -diff
        n = test.get("n")
        if not isinstance(n, int):
            entry = ((summary.get(new_) or {}).get(s) or {}).get("dice") or {}
            n = int(entry.get("n") or 0) if isinstance(entry, dict) else 0
        rows.append(StructureComparison(
            structure=str(s), n=int(n),
            dice_source=mean(src, s, "dice"), dice_new=mean(new_, s, "dice"),
            hd95_source=mean(src, s, "hd95_mm"), hd95_new=mean(new_, s, "hd95_mm"),
            sdice_source=mean(src, s, "surface_dice"), sdice_new=mean(new_, s, "surface_dice"),
            p_value=_num(test.get("p_value")), median_difference=diff))
    return rows


# ---------------------------------------------------------------------------------------------- logic
Done = Optional[Callable[[Any], Any]]  # noqa: UP045 - evaluated at run time (Python 3.9 loads this file)


class TrainingLogic:
    """Qt-free logic of the CervixTLTraining module (see the module docstring).

    Args:
        scene: the ``vtkMRMLScene`` whose table / plot nodes are filled.
        cases_dir / models_dir: override ``CERVIXTL_CASES_DIR`` / ``CERVIXTL_MODELS_DIR`` for the engine.

    Attributes:
        tasks: the background queue of quick engine commands (polled by the GUI's timer).
        report_error: ``report_error(message, log)`` for a failed background command (the GUI shows a dialog);
            without it the last one is kept in :attr:`last_error`.
    """

    def __init__(self, scene: Any, cases_dir: str | None = None, models_dir: str | None = None) -> None:
        self.scene = scene
        self.env: dict[str, str] = {}
        if cases_dir:
            self.env["CERVIXTL_CASES_DIR"] = str(cases_dir)
        if models_dir:
            self.env["CERVIXTL_MODELS_DIR"] = str(models_dir)
        self.tasks = TaskQueue(self.env)
        self.report_error: Callable[[str, str], Any] | None = None
        self.last_error: tuple[str, str] | None = None
        self.job: EngineProcess | None = None
        self.job_kind = ""
        self.job_request: FinetuneRequest | None = None
        self.compare_models: tuple[str, str] | None = None
        self.curve: tables.TrainingCurve | None = None
        self.last_held_out: list[str] = []
        self._last_status = JobStatus()

    # ------------------------------------------------------------------ the one way to call the engine
    def call(self, args: Sequence[str], parse: Callable[[str], Any] = lambda out: out, on_done: Done = None, *,
             message: str = "", timeout_s: float = 300.0, script: str | os.PathLike | None = None,
             cleanup: Callable[[], Any] | None = None) -> Any:
        """``cervixtl ARGS`` (or ``PYTHON SCRIPT ARGS``); ``parse(stdout)`` is the value.

        With ``on_done``: queued on :attr:`tasks`; ``on_done(value)`` once it succeeded, :attr:`report_error`
        once it failed; ``cleanup()`` after either. Without: run to the end and return the value.

        Raises:
            EngineError: (without ``on_done``) the command failed (one line).
        """
        if on_done is None:
            try:
                if script is None:
                    return parse(run_engine(args, timeout_s=timeout_s, env=self.env))
                proc = EngineProcess(args, env=self.env, script=script)
                if proc.wait(timeout_s) is None:
                    proc.kill()
                    raise EngineError(f"{Path(script).name} did not finish within {timeout_s:.0f} s")
                result = proc.result()
                if not result.ok:
                    raise EngineError(contract.error_text(result), result.returncode, result.log)
                return parse(result.stdout)
            finally:
                if cleanup is not None:
                    cleanup()

        def finished(result: EngineResult) -> None:
            try:
                if not result.ok:
                    self._failed(contract.error_text(result), result.log)
                    return
                try:
                    value = parse(result.stdout)
                except EngineError as exc:
                    self._failed(str(exc), result.log)
                    return
                on_done(value)
            finally:
                if cleanup is not None:
                    cleanup()

        self.tasks.submit(args, finished, message, script=script)
        return None

    def _failed(self, message: str, log: str) -> None:
        self.last_error = (message, log)
        if self.report_error is not None:
            self.report_error(message, log)

    def cases_dir(self) -> Path:
        """The case-library folder, as the engine resolves it (``~`` and ``$CERVIXTL_HOME`` included)."""
        from cervixtl.cases import CaseLibrary

        return CaseLibrary(self.env.get("CERVIXTL_CASES_DIR") or None).root

    # ------------------------------------------------------------------ case library
    def list_cases(self, on_done: Done = None) -> list[dict[str, Any]] | None:
        """Cases of the library (``cervixtl cases list --json``, read by ``contract.case_rows``)."""
        return self.call(["cases", "list", "--json"], contract.case_rows, on_done, message="Reading the cases…")

    CASE_COLUMNS = (("Case ID", "string"), ("Added", "string"), ("Site", "string"), ("Structures", "string"),
                    ("CTV Dice proposal vs final", "double"))

    def fill_cases_table(self, cases: list[dict[str, Any]], table_node: Any = None) -> Any:
        """Fill (or create) the case table node from :meth:`list_cases` rows; returns it."""
        table_node = table_node or tables.get_or_add_node(self.scene, "vtkMRMLTableNode", "CervixTL cases")
        rows = [[c["id"], c["added"], c["site"], ", ".join(c["structures"]),
                 float(c["proposal_vs_final_dice"].get("CTV", math.nan))] for c in cases]
        return tables.fill_table(table_node, self.CASE_COLUMNS, rows)

    def update_cases_table(self, table_node: Any = None, on_done: Done = None) -> Any:
        """Re-read the library into the case table node (returns it; with ``on_done``, passes it later)."""
        if on_done is None:
            return self.fill_cases_table(self.list_cases(), table_node)
        return self.list_cases(lambda cases: on_done(self.fill_cases_table(cases, table_node)))

    def remove_case(self, case_id: str, on_done: Done = None) -> None:
        """Remove one case from the library."""
        return self.call(["cases", "remove", case_id], on_done=on_done, message="Removing the case…")

    def add_case(self, ct_path: str | os.PathLike, final_path: str | os.PathLike,
                 proposal_path: str | os.PathLike | None = None, site: str | None = None, on_done: Done = None,
                 cleanup: Callable[[], Any] | None = None) -> str | None:
        """Add a case from files (the engine anonymises and checks geometry); the value is the new case id."""
        args = ["cases", "add", str(ct_path), str(final_path)]
        if proposal_path:
            args += ["--proposal", str(proposal_path)]
        if site:
            args += ["--site", site]
        return self.call(args, _last_line("cases add"), on_done, message="Adding the case…", cleanup=cleanup)

    def add_case_from_nodes(self, volume_node: Any, final_segmentation: Any, proposal_segmentation: Any = None,
                            site: str | None = None, on_done: Done = None) -> str | None:
        """Add the CT volume node and its final (edited) segmentation -- and the model's original proposal when
        given -- to the case library (temporary files removed afterwards); the value is the case id.

        Raises:
            ValueError: a segmentation belongs to another CT.
        """
        nodes.check_same_ct(final_segmentation, volume_node, "add the case")
        if proposal_segmentation is not None:
            nodes.check_same_ct(proposal_segmentation, volume_node, "add the case")
        tmp = Path(tempfile.mkdtemp(prefix="cervixtl_case_"))
        try:
            ct = nodes.write_volume(volume_node, tmp / "ct.nrrd")
            final = nodes.write_segmentation_node(final_segmentation, volume_node, tmp / "final.seg.nrrd")
            proposal = (nodes.write_segmentation_node(proposal_segmentation, volume_node, tmp / "proposal.seg.nrrd")
                        if proposal_segmentation is not None else None)
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.add_case(ct, final, proposal, site, on_done,
                             cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True))

    def case_folder(self, case_id: str) -> Path:
        """The folder of a case, from the engine (it checks the id before it touches the file system)."""
        from cervixtl.cases import CaseLibrary
        from cervixtl.errors import CervixTLError

        try:
            return CaseLibrary(self.cases_dir()).path(case_id)
        except CervixTLError as exc:
            raise EngineError(str(exc)) from None

    def load_case(self, case_id: str) -> tuple[Any, Any]:
        """Load a case's CT and final segmentation into the scene, detached from the library's files (a Save
        never writes into the library); returns (volume node, segmentation node)."""
        folder = self.case_folder(case_id)
        ct = next((folder / n for n in ("ct.nii.gz", "ct.nrrd") if (folder / n).exists()), None)
        final = folder / "final.seg.nrrd"
        if ct is None or not final.exists():
            raise EngineError(f"case {case_id}: its CT or final segmentation is missing in {folder}")
        vol = nodes.read_file_detached(self.scene, ct, f"case {case_id} CT")
        seg = nodes.read_file_detached(self.scene, final, f"case {case_id} final", segmentation=True,
                                       reference_volume=vol)
        return vol, seg

    # ------------------------------------------------------------------ model versions
    def list_models(self, on_done: Done = None) -> list[dict[str, Any]] | None:
        """Registry versions (``cervixtl models list --json``, ``contract.model_rows``) with the training
        summary and validation Dice of each card (read by the engine's torch-free card reader)."""
        return self.call(["models", "list", "--json"], _with_cards, on_done, message="Reading the models…")

    VERSION_COLUMNS = (("Model", "string"), ("Active", "string"), ("Parent", "string"), ("Cases used", "string"),
                       ("Freeze", "string"), ("Validation Dice", "string"), ("Created", "string"))

    def update_versions_table(self, table_node: Any = None, models: list[dict[str, Any]] | None = None) -> Any:
        """Fill (or create) the model-versions table node (from ``models`` of :meth:`list_models`, read when
        not given); returns it."""
        table_node = table_node or tables.get_or_add_node(self.scene, "vtkMRMLTableNode", "CervixTL model versions")
        rows = []
        for m in (self.list_models() if models is None else models):
            vd = ", ".join(f"{k} {v:.3f}" for k, v in m["val_dice"].items())
            active = ("yes (bundled)" if m["source"] == "bundled" else "yes") if m["active"] else ""
            rows.append([m["spec"], active, m["parent"] or "(none)",
                         "" if m["cases"] is None else str(m["cases"]), m["freeze"], vd, m["created"]])
        return tables.fill_table(table_node, self.VERSION_COLUMNS, rows)

    def show_model(self, spec: str, on_done: Done = None) -> dict[str, Any] | None:
        """The model card of ``spec`` (``cervixtl models show --json``)."""
        return self.call(["models", "show", spec, "--json"], contract.model_card, on_done,
                         message="Reading the model card…")

    def activate(self, spec: str, on_done: Done = None, *, bundled_path: str | None = None) -> None:
        """Make ``spec`` the active version of its name. The bundled demo model (``bundled_path``: its package
        folder) is not in the registry yet: it is imported into it and activated."""
        if bundled_path:
            return self.call(["models", "import", bundled_path, "--activate"], on_done=on_done,
                             message="Importing the bundled model…", timeout_s=1800)
        return self.call(["models", "activate", spec], on_done=on_done, message="Activating…")

    def rollback(self, name: str, on_done: Done = None) -> None:
        """Re-activate the previously active version of ``name``."""
        return self.call(["models", "rollback", name], on_done=on_done, message="Rolling back…")

    def export_model(self, spec: str, dest_dir: str | os.PathLike, on_done: Done = None) -> None:
        """Write the model package (card + weights) of ``spec`` to ``dest_dir`` to share with another site."""
        return self.call(["models", "export", spec, str(dest_dir)], on_done=on_done, message="Exporting…")

    def import_model(self, path: str, sha256: str | None = None, on_done: Done = None) -> str | None:
        """Import a model package folder or URL into the registry (SHA-256 verified); the value is the engine's
        message."""
        args = ["models", "import", path] + (["--sha256", sha256] if sha256 else [])
        return self.call(args, lambda out: out.strip(), on_done, message="Importing the model…", timeout_s=1800)

    # ------------------------------------------------------------------ devices and estimates
    def devices(self, on_done: Done = None) -> dict[str, Any] | None:
        """The engine's devices (``cervixtl devices --json``; torch never runs in Slicer's process)."""
        return self.call(["devices", "--json"], contract.devices, on_done, message="Looking for a GPU…")

    def measure_step(self, model: str | None, device: str = "cpu", steps: int = 2, timeout_s: float = 300.0,
                     on_done: Done = None) -> estimates.StepTiming | None:
        """Measure one training step of ``model`` on ``device`` in an engine process (``steptime.py``)."""
        args = ["--device", device, "--steps", str(int(steps))] + (
            ["--model", model] if model and model != "none" else [])
        return self.call(args, _step_timing, on_done, message="Timing a training step…", timeout_s=timeout_s,
                         script=Path(__file__).with_name("steptime.py"))

    def preflight(self, request: FinetuneRequest, n_cases: int | None = None) -> list[str]:
        """Problems that stop a run before it starts: not enough cases, not enough disk space."""
        problems = []
        n = len(request.cases) if n_cases is None else n_cases
        msg = estimates.check_enough_cases(n, request.val_fraction)
        if msg:
            problems.append(msg)
        msg = estimates.check_disk_space(self.cases_dir())
        if msg:
            problems.append(msg)
        return problems

    def time_estimate(self, request: FinetuneRequest, timing: estimates.StepTiming,
                      steps_per_epoch: int | None = None) -> tuple[int, float]:
        """(planned steps, estimated seconds) of ``request`` at the measured ``timing``."""
        n_train, n_val = estimates.split_counts(len(request.cases), request.val_fraction)
        if request.minutes:
            return (int(request.minutes * 60 / timing.step_s) if timing.step_s > 0 else 0,
                    float(request.minutes) * 60.0)
        steps = estimates.planned_steps(n_train, request.epochs or 0, steps_per_epoch)
        return steps, estimates.estimate_training_s(timing.step_s, steps, timing.startup_s, n_val,
                                                    request.epochs or 0)

    # ------------------------------------------------------------------ background jobs
    def _check_idle(self) -> None:
        if self.job is not None and self.job.running:
            raise EngineError(f"a {self.job_kind} run is still going; wait for it or cancel it first")

    def start_finetune(self, request: FinetuneRequest, curve: tables.TrainingCurve | None = None) -> EngineProcess:
        """Start ``cervixtl finetune`` in the background; the training curve is reset (unless resuming)."""
        self._check_idle()
        self.curve = curve or self.curve or tables.TrainingCurve(self.scene)
        if not request.resume:
            self.curve.reset()
        self.job = EngineProcess(request.to_args(), env=self.env, kill_after_s=KILL_GRACE_S)
        self.job_kind, self.job_request = "finetune", request
        self.last_held_out = split_cases(request.cases, request.val_fraction, request.seed)[1]
        self._last_status = JobStatus(kind="finetune", running=True, message="starting")
        return self.job

    def start_compare(self, models: Sequence[str], cases: Sequence[str], out_dir: str | os.PathLike
                      ) -> EngineProcess:
        """Start ``cervixtl compare --models ... --cases ... --json --out DIR`` in the background."""
        self._check_idle()
        args = ["compare", "--models", *models, "--cases", ",".join(cases), "--out", str(out_dir), "--json",
                "--progress", "json"]
        self.job = EngineProcess(args, env=self.env, kill_after_s=KILL_GRACE_S)
        self.job_kind = "compare"
        self.compare_models = (str(models[0]), str(models[1]))
        self._last_status = JobStatus(kind="compare", running=True, message="starting")
        return self.job

    def poll(self) -> JobStatus:
        """Read what the background job printed since the last call, feed the training curve, and return the
        job's status (call it from a GUI timer; never blocks)."""
        job = self.job
        if job is None:
            return JobStatus()
        st = self._last_status
        new = job.poll()
        for rec in new:
            if self.curve is not None and self.job_kind == "finetune":
                self.curve.add(rec)
            st.fraction = float(rec.get("fraction", st.fraction) or 0.0)
            st.message = str(rec.get("message") or rec.get("stage") or st.message)
            eta = rec.get("eta_s")
            if isinstance(eta, (int, float)) and math.isfinite(eta):
                st.eta_s = float(eta)
            elif 0 < st.fraction < 1 and isinstance(rec.get("elapsed_s"), (int, float)):
                st.eta_s = float(rec["elapsed_s"]) * (1.0 - st.fraction) / st.fraction
        st.new_records = new
        st.cancelled = job.cancelled
        st.running = job.running
        if not st.running:
            result = job.result()
            st.returncode = result.returncode
            st.error = None if result.ok else contract.error_text(result)
            st.log = result.log
            st.eta_s = math.nan
            if st.returncode == 0:
                st.fraction = 1.0
        return st

    @property
    def job_active(self) -> bool:
        """True from :meth:`start_finetune` / :meth:`start_compare` until :meth:`poll` reported the end."""
        return self.job is not None and self._last_status.running

    def cancel(self) -> None:
        """Stop the background job, its whole process tree (the engine leaves the active model and finished
        checkpoints untouched)."""
        if self.job is not None:
            self.job.cancel()

    def kill(self) -> None:
        """Kill every engine process of this logic at once (module clean-up)."""
        if self.job is not None:
            self.job.kill()
        self.tasks.kill()

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.2) -> JobStatus:
        """Poll until the job ends (scripts and tests; the GUI uses a timer)."""
        t0 = time.monotonic()
        st = self.poll()
        while st.running and (timeout_s is None or time.monotonic() - t0 < timeout_s):
            time.sleep(interval_s)
            st = self.poll()
        return st

    def new_model_spec(self) -> str | None:
        """``name@version`` of the model the last finished fine-tuning run wrote (its ``--json`` result)."""
        if self.job is None or self.job_kind != "finetune" or self.job.running or self.job.returncode != 0:
            return None
        return contract.finetune_spec(self.job.stdout)

    # ------------------------------------------------------------------ comparison
    def held_out_cases(self, spec: str, on_done: Done = None) -> list[str] | None:
        """Case ids the model ``spec`` held out of its training (its card's ``training.val_case_ids``)."""
        if on_done is None:
            return contract.held_out_cases(self.show_model(spec)) if spec else []
        return self.show_model(spec, lambda card: on_done(contract.held_out_cases(card)))

    COMPARE_COLUMNS = (("Structure", "string"), ("n", "int"), ("Dice source", "double"), ("Dice new", "double"),
                       ("HD95 mm source", "double"), ("HD95 mm new", "double"), ("Surface Dice source", "double"),
                       ("Surface Dice new", "double"), ("Wilcoxon p (Dice)", "double"), ("Result", "string"))

    def read_comparison(self, source: str | None = None, new: str | None = None) -> list[StructureComparison]:
        """Rows of the finished comparison (the ``--json`` result of the last :meth:`start_compare`)."""
        if self.job is None or self.job_kind != "compare" or self.compare_models is None:
            raise EngineError("no finished comparison")
        src, new_ = (source or self.compare_models[0]), (new or self.compare_models[1])
        return comparison_rows(contract.parse(self.job.stdout, "compare"), src, new_)

    def update_compare_nodes(self, rows: Sequence[StructureComparison], table_node: Any = None,
                             chart_node: Any = None) -> str:
        """Fill the comparison table and its bar chart (mean Dice of source and new per structure); returns
        the verdict sentence."""
        table_node = table_node or tables.get_or_add_node(self.scene, "vtkMRMLTableNode", "CervixTL comparison")
        chart_node = chart_node or tables.get_or_add_node(self.scene, "vtkMRMLPlotChartNode",
                                                          "CervixTL comparison chart")
        data = [[r.structure, r.n, r.dice_source, r.dice_new, r.hd95_source, r.hd95_new, r.sdice_source,
                 r.sdice_new, r.p_value, classify(r)] for r in rows]
        tables.fill_table(table_node, self.COMPARE_COLUMNS, data)
        chart_node.SetTitle("Held-out cases: mean Dice, source vs new model")
        chart_node.SetXAxisTitle("structure")
        chart_node.SetYAxisTitle("Dice")
        tables.set_series(self.scene, chart_node, "CervixTL Dice source", table_node, None, "Dice source",
                          plot_type="bar", color=(0.6, 0.6, 0.6), label_column="Structure")
        tables.set_series(self.scene, chart_node, "CervixTL Dice new", table_node, None, "Dice new",
                          plot_type="bar", color=(0.0, 0.45, 0.74), label_column="Structure")
        return verdict(rows)


def _last_line(command: str) -> Callable[[str], str]:
    def parse(out: str) -> str:
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        if not lines:
            raise EngineError(f"cervixtl {command} printed nothing")
        return lines[-1]
    return parse


def _with_cards(stdout: str) -> list[dict[str, Any]]:
    """``contract.model_rows`` plus, from each package's card (the engine's reader): cases used, freeze and the
    validation Dice per structure."""
    from cervixtl.errors import CervixTLError
    from cervixtl.models.card import ModelCard

    out = []
    for row in contract.model_rows(stdout):
        try:
            card = ModelCard.read(row["path"])
            training, validation = dict(card.training or {}), dict(card.validation or {})
        except (CervixTLError, OSError, ValueError):
            training, validation = {}, {}
        out.append({**row, "cases": training.get("cases"), "freeze": str(training.get("freeze", "")),
                    "val_dice": {k: float(v["dice"]) for k, v in validation.items()
                                 if isinstance(v, dict) and isinstance(v.get("dice"), (int, float))}})
    return out


def _step_timing(stdout: str) -> estimates.StepTiming:
    try:
        d = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EngineError("timing a training step printed no result") from None
    if d.get("step_s") is None:
        d["step_s"] = math.nan
    return estimates.StepTiming.from_dict(d)
