"""What the CervixTLTraining module does, without Qt: case library, fine-tuning, comparison, model versions.

:class:`TrainingLogic` talks to the engine only through the ``cervixtl`` command line in separate processes
(``cases``, ``finetune``, ``compare``, ``models``) and fills MRML nodes of the scene it is given:

* the case table (``vtkMRMLTableNode``): case id, date added, site, structures, Dice proposal vs final CTV;
* the live training curve (two tables + a ``vtkMRMLPlotChartNode``), fed from ``--progress json`` lines;
* the comparison table (per structure Dice / HD95 (mm) / surface Dice of source and new model, Wilcoxon p, n)
  with a bar chart and a plain verdict (:mod:`.verdict`);
* the model-versions table (parent, cases used, validation metrics, date, active).

Long runs are :class:`~.engine.BackgroundProcess` objects; the GUI calls :meth:`TrainingLogic.poll` from a
timer, so it never freezes; :meth:`TrainingLogic.cancel` stops the engine cleanly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cervixtl.splits import split_cases

from . import estimates, nodes_io, tables
from .engine import BackgroundProcess, EngineError, engine_env, engine_python, run_engine
from .verdict import StructureComparison, classify, verdict

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
                "--device", self.device, "--seed", str(int(self.seed)), "--progress", "json"]
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

    @property
    def eta_text(self) -> str:
        """"about 3 min left" or ""."""
        return f"about {estimates.format_duration(self.eta_s)} left" if math.isfinite(self.eta_s) else ""


# ---------------------------------------------------------------------------------------------- normalisers
def _first(d: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def _as_list(data: Any, key: str) -> list[dict]:
    if isinstance(data, dict):
        data = data.get(key, data.get("items", []))
    return [d for d in (data or []) if isinstance(d, dict)]


def normalise_case(d: dict) -> dict[str, Any]:
    """One case-library entry as {id, added, site, structures (list), ctv_dice, dice (dict)}."""
    structures = _first(d, "structures", "segments", default=[])
    if isinstance(structures, dict):
        structures = list(structures)
    structures = [s.get("name", "") if isinstance(s, dict) else str(s) for s in structures]
    dice = _first(d, "proposal_dice", "proposal_vs_final_dice", "dice", default={}) or {}
    if isinstance(dice, list):
        dice = {str(e.get("name")): e.get("dice") for e in dice if isinstance(e, dict)}
    ctv = dice.get("CTV") if isinstance(dice, dict) else None
    return {"id": str(_first(d, "id", "case_id", default="")),
            "added": str(_first(d, "added", "date_added", "created", default="")),
            "site": str(_first(d, "site", default="") or ""),
            "structures": structures,
            "dice": dice if isinstance(dice, dict) else {},
            "ctv_dice": float(ctv) if isinstance(ctv, (int, float)) else math.nan,
            "path": _first(d, "path", "folder", "dir", default=None)}


def normalise_model(d: dict) -> dict[str, Any]:
    """One registry entry as {name, version, spec, active, parent, cases, freeze, val_dice, created,
    derivation}."""
    card = d.get("card") if isinstance(d.get("card"), dict) else d
    parent = card.get("parent") or d.get("parent")
    if isinstance(parent, dict):
        parent = f"{parent.get('name')}@{parent.get('version')}"
    training = card.get("training") or {}
    validation = card.get("validation") or {}
    val_dice = {}
    if isinstance(validation, dict):
        for k, v in validation.items():
            if isinstance(v, dict) and isinstance(v.get("dice"), (int, float)):
                val_dice[k] = float(v["dice"])
    name = str(_first(d, "name", default=card.get("name", "")))
    version = str(_first(d, "version", default=card.get("version", "")))
    return {"name": name, "version": version, "spec": f"{name}@{version}",
            "active": bool(d.get("active", False)), "parent": parent or "",
            "cases": training.get("cases") if isinstance(training, dict) else None,
            "freeze": training.get("freeze", "") if isinstance(training, dict) else "",
            "val_dice": val_dice, "created": str(_first(d, "created", default=card.get("created", ""))),
            "derivation": str(card.get("derivation", "")), "path": d.get("path")}


def _num(x: Any) -> float:
    """A finite or NaN float from a JSON value (None / missing -> NaN)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def comparison_rows(data: dict, source: str, new: str) -> list[StructureComparison]:
    """Per-structure rows (source vs new) from ``compare.json`` of ``cervixtl compare``.

    That file holds ``models`` (the specs, in ``--models`` order), ``structures``, ``summary`` (model ->
    structure -> metric -> {n, mean, median, ...}) and ``tests`` (paired Wilcoxon per structure, metric and
    model pair a/b, with ``median_difference`` = b - a). ``source`` / ``new`` are matched against ``models``;
    a name without version (or not found) falls back to the first / second model.
    """
    models = [str(m) for m in data.get("models", [])]

    def pick(spec: str, index: int) -> str:
        if spec in models:
            return spec
        same_name = [m for m in models if m.split("@")[0] == spec.split("@")[0]]
        if len(same_name) == 1:
            return same_name[0]
        return models[index] if len(models) > index else spec

    src, new_ = pick(source, 0), pick(new, 1)
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
class TrainingLogic:
    """Qt-free logic of the CervixTLTraining module (see the module docstring).

    Args:
        scene: the ``vtkMRMLScene`` whose table / plot nodes are filled.
        cases_dir / models_dir: override ``CERVIXTL_CASES_DIR`` / ``CERVIXTL_MODELS_DIR`` for the engine.
    """

    def __init__(self, scene: Any, cases_dir: str | None = None, models_dir: str | None = None) -> None:
        self.scene = scene
        self.env: dict[str, str] = {}
        if cases_dir:
            self.env["CERVIXTL_CASES_DIR"] = str(cases_dir)
        if models_dir:
            self.env["CERVIXTL_MODELS_DIR"] = str(models_dir)
        self.job: BackgroundProcess | None = None
        self.job_kind = ""
        self.job_request: FinetuneRequest | None = None
        self.compare_out: Path | None = None
        self.curve: tables.TrainingCurve | None = None
        self.last_held_out: list[str] = []
        self._last_status = JobStatus()

    # ------------------------------------------------------------------ helpers
    def _run(self, args: Sequence[str], *, parse_json: bool = False, timeout_s: float = 300.0) -> Any:
        return run_engine(args, parse_json=parse_json, timeout_s=timeout_s, env=self.env)

    def cases_dir(self) -> Path:
        """The case-library folder the engine uses."""
        env = {**os.environ, **self.env}
        if env.get("CERVIXTL_CASES_DIR"):
            return Path(env["CERVIXTL_CASES_DIR"])
        return Path(env.get("CERVIXTL_HOME") or Path.home() / ".cervixtl") / "cases"

    def models_dir(self) -> Path:
        """The model-registry folder the engine uses."""
        env = {**os.environ, **self.env}
        if env.get("CERVIXTL_MODELS_DIR"):
            return Path(env["CERVIXTL_MODELS_DIR"])
        return Path(env.get("CERVIXTL_HOME") or Path.home() / ".cervixtl") / "models"

    # ------------------------------------------------------------------ case library
    def list_cases(self) -> list[dict[str, Any]]:
        """Cases of the library (``cervixtl cases list --json``), normalised by :func:`normalise_case`."""
        return [normalise_case(d) for d in _as_list(self._run(["cases", "list", "--json"], parse_json=True), "cases")]

    CASE_COLUMNS = (("Case ID", "string"), ("Added", "string"), ("Site", "string"), ("Structures", "string"),
                    ("CTV Dice proposal vs final", "double"))

    def update_cases_table(self, table_node: Any = None) -> Any:
        """Fill (or create) the case table node; returns it."""
        table_node = table_node or tables.get_or_add_node(self.scene, "vtkMRMLTableNode", "CervixTL cases")
        rows = [[c["id"], c["added"], c["site"], ", ".join(c["structures"]), c["ctv_dice"]]
                for c in self.list_cases()]
        return tables.fill_table(table_node, self.CASE_COLUMNS, rows)

    def remove_case(self, case_id: str) -> None:
        """Remove one case from the library."""
        self._run(["cases", "remove", case_id])

    def add_case(self, ct_path: str | os.PathLike, final_path: str | os.PathLike,
                 proposal_path: str | os.PathLike | None = None, site: str | None = None) -> str:
        """Add a case from files; returns the new case id (the engine anonymises and checks geometry)."""
        args = ["cases", "add", str(ct_path), str(final_path)]
        if proposal_path:
            args += ["--proposal", str(proposal_path)]
        if site:
            args += ["--site", site]
        out = self._run(args).strip().splitlines()
        if not out:
            raise EngineError("'cervixtl cases add' printed no case id")
        return out[-1].strip()

    def add_case_from_nodes(self, volume_node: Any, final_segmentation: Any, proposal_segmentation: Any = None,
                            site: str | None = None) -> str:
        """Add the CT volume node and its final (edited) segmentation -- and the model's original proposal when
        given -- to the case library; returns the case id. Temporary files are removed afterwards."""
        tmp = Path(tempfile.mkdtemp(prefix="cervixtl_case_"))
        try:
            ct = nodes_io.write_volume(self.scene, volume_node, tmp / "ct.nrrd")
            final = nodes_io.write_segmentation_on_grid(self.scene, final_segmentation, volume_node,
                                                        tmp / "final.seg.nrrd")
            proposal = None
            if proposal_segmentation is not None:
                proposal = nodes_io.write_segmentation_on_grid(self.scene, proposal_segmentation, volume_node,
                                                               tmp / "proposal.seg.nrrd")
            return self.add_case(ct, final, proposal, site)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def case_folder(self, case_id: str) -> Path:
        """The folder of a case (from ``cases show --json`` when it says, else ``<cases dir>/<id>``)."""
        try:
            info = self._run(["cases", "show", case_id, "--json"], parse_json=True)
        except EngineError:
            info = {}
        p = normalise_case(info).get("path") if isinstance(info, dict) else None
        return Path(p) if p else self.cases_dir() / case_id

    def load_case(self, case_id: str) -> tuple[Any, Any]:
        """Load a case's CT and final segmentation into the scene; returns (volume node, segmentation node)."""
        folder = self.case_folder(case_id)
        ct = next((folder / n for n in ("ct.nii.gz", "ct.nrrd") if (folder / n).exists()), None)
        final = folder / "final.seg.nrrd"
        if ct is None or not final.exists():
            raise EngineError(f"case {case_id}: its CT or final segmentation is missing in {folder}")
        vol = nodes_io.read_volume(self.scene, ct, f"case {case_id} CT")
        seg = nodes_io.read_segmentation(self.scene, final, f"case {case_id} final", vol)
        return vol, seg

    # ------------------------------------------------------------------ model versions
    def list_models(self) -> list[dict[str, Any]]:
        """Registry versions (``cervixtl models list --json``), normalised by :func:`normalise_model`; the
        training summary and validation metrics are read from each package's ``model.json``."""
        out = []
        for d in _as_list(self._run(["models", "list", "--json"], parse_json=True), "models"):
            if "card" not in d and d.get("path"):
                try:
                    d = {**d, "card": json.loads((Path(d["path"]) / "model.json").read_text(encoding="utf-8"))}
                except (OSError, json.JSONDecodeError):
                    pass
            out.append(normalise_model(d))
        return out

    VERSION_COLUMNS = (("Model", "string"), ("Active", "string"), ("Parent", "string"), ("Cases used", "string"),
                       ("Freeze", "string"), ("Validation Dice", "string"), ("Created", "string"))

    def update_versions_table(self, table_node: Any = None, models: list[dict[str, Any]] | None = None) -> Any:
        """Fill (or create) the model-versions table node (from ``models`` of :meth:`list_models`, read when
        not given); returns it."""
        table_node = table_node or tables.get_or_add_node(self.scene, "vtkMRMLTableNode", "CervixTL model versions")
        rows = []
        for m in (self.list_models() if models is None else models):
            vd = ", ".join(f"{k} {v:.3f}" for k, v in m["val_dice"].items())
            rows.append([m["spec"], "yes" if m["active"] else "", m["parent"] or "(none)",
                         "" if m["cases"] is None else str(m["cases"]), m["freeze"], vd, m["created"]])
        return tables.fill_table(table_node, self.VERSION_COLUMNS, rows)

    def show_model(self, spec: str) -> dict[str, Any]:
        """The model card of ``spec`` (``cervixtl models show --json``)."""
        return self._run(["models", "show", spec, "--json"], parse_json=True)

    def activate(self, spec: str) -> None:
        """Make ``spec`` the active version of its name."""
        self._run(["models", "activate", spec])

    def rollback(self, name: str) -> None:
        """Re-activate the previously active version of ``name``."""
        self._run(["models", "rollback", name])

    def export_model(self, spec: str, dest_dir: str | os.PathLike) -> None:
        """Write the model package (card + weights) of ``spec`` to ``dest_dir`` to share with another site."""
        self._run(["models", "export", spec, str(dest_dir)])

    def import_model(self, path: str, sha256: str | None = None) -> str:
        """Import a model package folder or URL into the registry (SHA-256 verified); returns the engine's
        message."""
        args = ["models", "import", path] + (["--sha256", sha256] if sha256 else [])
        return self._run(args, timeout_s=1800).strip()

    # ------------------------------------------------------------------ devices and estimates
    def measure_step(self, model: str | None, device: str = "cpu", steps: int = 2,
                     timeout_s: float = 300.0) -> estimates.StepTiming:
        """Measure one training step of ``model`` on ``device`` in a separate process (``steptime.py``);
        ``steps=0`` only reports which devices exist."""
        script = Path(__file__).with_name("steptime.py")
        cmd = [engine_python(), str(script), "--device", device, "--steps", str(int(steps))]
        if model and model != "none":
            cmd += ["--model", model]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=engine_env(self.env),
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EngineError(f"timing a training step took more than {timeout_s:.0f} s") from None
        if proc.returncode != 0:
            raise EngineError(estimates.friendly_error(proc.stderr, proc.returncode))
        d = json.loads(proc.stdout.strip().splitlines()[-1])
        if d.get("step_s") is None:
            d["step_s"] = math.nan
        return estimates.StepTiming.from_dict(d)

    def preflight(self, request: FinetuneRequest, n_cases: int | None = None) -> list[str]:
        """Problems that stop a run before it starts: not enough cases, not enough disk space."""
        problems = []
        n = len(request.cases) if n_cases is None else n_cases
        msg = estimates.check_enough_cases(n, request.val_fraction)
        if msg:
            problems.append(msg)
        msg = estimates.check_disk_space(self.models_dir())
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

    def start_finetune(self, request: FinetuneRequest, curve: tables.TrainingCurve | None = None
                       ) -> BackgroundProcess:
        """Start ``cervixtl finetune`` in the background; the training curve is reset (unless resuming)."""
        self._check_idle()
        self.curve = curve or self.curve or tables.TrainingCurve(self.scene)
        if not request.resume:
            self.curve.reset()
        self.job = BackgroundProcess(request.to_args(), env=self.env)
        self.job_kind, self.job_request = "finetune", request
        self.last_held_out = split_cases(request.cases, request.val_fraction, request.seed)[1]
        self._last_status = JobStatus(kind="finetune", running=True, message="starting")
        return self.job

    def start_compare(self, models: Sequence[str], cases: Sequence[str], out_dir: str | os.PathLike
                      ) -> BackgroundProcess:
        """Start ``cervixtl compare --models ... --cases ... --json --out DIR`` in the background."""
        self._check_idle()
        self.compare_out = Path(out_dir)
        args = ["compare", "--models", *models, "--cases", ",".join(cases), "--out", str(out_dir), "--json",
                "--progress", "json"]
        self.job = BackgroundProcess(args, env=self.env)
        self.job_kind = "compare"
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
            st.returncode = job.returncode
            st.error = job.error_message()
            st.eta_s = math.nan
            if st.returncode == 0:
                st.fraction = 1.0
        return st

    def cancel(self) -> None:
        """Stop the background job (the engine leaves the active model and finished checkpoints untouched)."""
        if self.job is not None:
            self.job.cancel()

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.2) -> JobStatus:
        """Poll until the job ends (scripts and tests; the GUI uses a timer)."""
        t0 = time.monotonic()
        st = self.poll()
        while st.running and (timeout_s is None or time.monotonic() - t0 < timeout_s):
            time.sleep(interval_s)
            st = self.poll()
        return st

    def new_model_spec(self) -> str | None:
        """``name@version`` of the model the last finished fine-tuning run wrote (from its progress lines or
        the registry's newest version of that name)."""
        if self.job is None or self.job_request is None:
            return None
        for rec in reversed(self.job.records):
            for k in ("model", "new_model", "spec"):
                if isinstance(rec.get(k), str) and "@" in rec[k]:
                    return rec[k]
        try:
            out = json.loads(self.job.stdout) if self.job.stdout.strip().startswith("{") else {}
        except json.JSONDecodeError:
            out = {}
        if isinstance(out.get("model"), str) and "@" in out["model"]:
            return out["model"]
        versions = [m for m in self.list_models() if m["name"] == self.job_request.name]
        if not versions:
            return None

        def order(m: dict[str, Any]) -> tuple:
            v = m["version"]
            return (1, int(v), "") if v.isdigit() else (0, 0, v)

        return max(versions, key=order)["spec"]

    # ------------------------------------------------------------------ comparison
    def held_out_cases(self, spec: str) -> list[str]:
        """Case ids the model ``spec`` held out of its training: from its card when the card lists them, else
        the held-out split of the run this logic started for that model name, else []."""
        if not spec:
            return []
        if self.job_request is not None and spec.split("@")[0] == self.job_request.name and self.last_held_out:
            return list(self.last_held_out)
        try:
            card = self.show_model(spec)
        except EngineError:
            return []
        card = card.get("card", card) if isinstance(card, dict) else {}
        training = card.get("training") or {}
        for key in ("val_cases", "validation_cases", "held_out_cases", "held_out", "val_case_ids"):
            ids = training.get(key)
            if isinstance(ids, list) and ids:
                return [str(i) for i in ids]
        return []

    COMPARE_COLUMNS = (("Structure", "string"), ("n", "int"), ("Dice source", "double"), ("Dice new", "double"),
                       ("HD95 mm source", "double"), ("HD95 mm new", "double"), ("Surface Dice source", "double"),
                       ("Surface Dice new", "double"), ("Wilcoxon p (Dice)", "double"), ("Result", "string"))

    def read_comparison(self, source: str, new: str, compare_json: str | os.PathLike | None = None
                        ) -> list[StructureComparison]:
        """Rows of a finished comparison (``compare.json`` in the job's ``--out`` folder by default)."""
        path = Path(compare_json) if compare_json else (self.compare_out or Path(".")) / "compare.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EngineError(f"cannot read the comparison {path}: {exc}") from None
        return comparison_rows(data, source, new)

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
