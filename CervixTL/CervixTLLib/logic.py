"""Qt-free logic of the CervixTL module: propose contours with the engine process, load the result into the
scene, export, save a case for training, list/import models.

``CervixTL.CervixTLLogic`` (the Slicer module logic) inherits this class; tests use it directly against the
real MRML scene of ``slicer-core``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import contract, nodes
from .engine import EngineError, EngineProcess, contour_args, run_engine


def unique_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/<stem>_<YYYYmmdd-HHMMSS>[_n]<suffix>`` that does not exist yet (creates ``folder``)."""
    import time

    folder.mkdir(parents=True, exist_ok=True)
    base = f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = folder / f"{base}{suffix}", 1
    while path.exists():
        n += 1
        path = folder / f"{base}_{n}{suffix}"
    return path


@dataclass
class ContourJob:
    """A running ``cervixtl contour``: the process, its folder and the CT node it works on."""

    process: EngineProcess
    workdir: Path
    out_path: Path
    summary_path: Path
    ct_node: Any
    model: str | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def ptv_margin(self) -> float | list[float] | None:
        """The PTV margin (mm, isotropic or R,L,A,P,S,I) the engine used, None when the model predicted the PTV
        itself (from the engine summary of a finished job)."""
        ptv = self.summary.get("ptv") or {}
        return ptv.get("margin_mm") if ptv.get("source") == "margin" else None

    def poll(self) -> dict[str, Any] | None:
        """Latest new progress record (or None); never blocks."""
        new = self.process.poll()
        self.progress.extend(new)
        return new[-1] if new else None

    @property
    def running(self) -> bool:
        """True while the engine process runs."""
        return self.process.running

    def cancel(self) -> None:
        """Stop the engine (it writes nothing)."""
        self.process.cancel()


class ContourLogic:
    """Engine-facing actions of the CervixTL module (no Qt)."""

    def __init__(self, models_dir: str | os.PathLike | None = None, cases_dir: str | os.PathLike | None = None
                 ) -> None:
        self.models_dir = str(models_dir) if models_dir else None
        self.cases_dir = str(cases_dir) if cases_dir else None

    # ------------------------------------------------------------------ contouring
    def start_contour(self, ct_node: Any, *, model: str | None = None, device: str = "auto", fast: bool = False,
                      ptv_mm: float | Sequence[float] | None = None, threads: int | None = None) -> ContourJob:
        """Write the CT to a temporary NRRD and start ``cervixtl contour`` on it (returns at once).

        Raises:
            ValueError: no usable CT node.
            EngineError: the engine cannot be started.
        """
        workdir = Path(tempfile.mkdtemp(prefix="cervixtl-contour-"))
        try:
            ct_path = nodes.write_volume(ct_node, workdir / "ct.nrrd")
            out = workdir / "proposal.seg.nrrd"
            summary = workdir / "proposal_summary.json"
            args = contour_args(ct_path, out, model=model or None, device=device, fast=fast, ptv_mm=ptv_mm,
                                models_dir=self.models_dir, summary_path=summary, threads=threads)
            proc = EngineProcess(args)
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return ContourJob(proc, workdir, out, summary, ct_node, model)

    def finish_contour(self, job: ContourJob, output_node: Any = None, name: str | None = None) -> Any:
        """Load the finished job's result into ``output_node`` (or a new segmentation node) under the CT's
        study; keeps a copy of the original proposal for :meth:`save_case`.

        Raises:
            EngineError: the engine failed (its one-line message) or was cancelled; the scene is unchanged.
        """
        try:
            result = job.process.result()
            job.progress.extend(result.progress[len(job.progress):])
            if result.cancelled:
                raise EngineError("contouring was cancelled; nothing was changed", result.returncode)
            if not result.ok:
                raise EngineError(contract.error_text(result), result.returncode)
            if not job.out_path.is_file():
                raise EngineError("the engine finished but wrote no segmentation", result.returncode)
            summary = job.summary = self.read_summary(job)
            node_name = name or f"{job.ct_node.GetName()} CervixTL"
            try:
                seg_node = nodes.load_segmentation_file(job.out_path, job.ct_node, name=node_name,
                                                        target_node=output_node)
            except ValueError as exc:
                raise EngineError(str(exc)) from None
            nodes.tie_to_ct(seg_node, job.ct_node)
            nodes.keep_proposal_copy(seg_node, job.ct_node)
            model = summary["model"]
            seg_node.SetAttribute(nodes.MODEL_ATTRIBUTE, f"{model['name']}@{model['version']}")
            return seg_node
        finally:
            shutil.rmtree(job.workdir, ignore_errors=True)

    @staticmethod
    def read_summary(job: ContourJob) -> dict[str, Any]:
        """The engine's summary of a finished job (``cervixtl-contour/1``, read by :mod:`.contract`).

        Raises:
            EngineError: missing or not the contract's summary.
        """
        try:
            text = job.summary_path.read_text(encoding="utf-8")
        except OSError:
            raise EngineError("the engine finished but wrote no contouring summary") from None
        return contract.parse(text, "contour", ("model", "ptv"))

    def contour(self, ct_node: Any, *, output_node: Any = None, timeout_s: float = 600.0, **kwargs: Any) -> Any:
        """Blocking :meth:`start_contour` + :meth:`finish_contour` (self-test, scripts)."""
        job = self.start_contour(ct_node, **kwargs)
        if job.process.wait(timeout_s) is None:
            job.cancel()
            job.process.wait()
            shutil.rmtree(job.workdir, ignore_errors=True)
            raise EngineError(f"contouring did not finish within {timeout_s:.0f} s; nothing was changed")
        return self.finish_contour(job, output_node)

    # ------------------------------------------------------------------ models
    @staticmethod
    def catalogue() -> list[dict[str, Any]]:
        """Downloadable models from the extension's ``Resources/Models.json`` ([] when unavailable); read by the
        engine's torch-free catalogue reader (``cervixtl.models`` imports torch lazily)."""
        try:
            from cervixtl.models.download import read_catalogue

            return list(read_catalogue())
        except Exception:  # noqa: BLE001 - the catalogue is optional
            return []

    # ------------------------------------------------------------------ export / cases
    @staticmethod
    def export_segmentation(seg_node: Any, ct_node: Any, path: str | os.PathLike) -> Path:
        """Write ``.seg.nrrd`` or NIfTI/NRRD label map (+ sidecar) on the CT grid, atomically.

        Raises:
            ValueError: the segmentation belongs to another CT.
        """
        nodes.check_same_ct(seg_node, ct_node, "export")
        return nodes.write_segmentation_node(seg_node, ct_node, path)

    def export_rtstruct(self, ct_node: Any, seg_node: Any, folder: str | os.PathLike, *, dicom_database: Any = None,
                        slicer_rt: Any = None, label: str = "CervixTL") -> Path:
        """DICOM RTSTRUCT of ``seg_node`` in ``folder``, referring to the CT series the user loaded.

        The default path is the engine's exporter (``cervixtl rtstruct export``) on exactly the CT's own instance
        files (the ``DICOM.instanceUIDs`` Slicer's DICOM module sets on the volume, looked up in
        ``dicom_database``, i.e. ``slicer.dicomDatabase``): it refers to those instances and is validated. Only
        when the CT was not loaded from DICOM and SlicerRT is installed (``slicer_rt``: a
        ``DicomRtImportExportPluginClass``) are the CT AND the segmentation exported with SlicerRT as a new
        study (SlicerRT refuses an RTSTRUCT without its primary image). The file name is new each time
        (``RS_<label>_<date-time>.dcm``): an earlier export is never overwritten.

        Returns:
            The RTSTRUCT file (engine), or the folder SlicerRT wrote into.

        Raises:
            ValueError: the segmentation belongs to another CT, the CT's DICOM files are missing, or neither
                path is possible.
            EngineError: the engine's exporter failed (one line).
        """
        nodes.check_same_ct(seg_node, ct_node, "export an RTSTRUCT")
        files = nodes.ct_instance_files(ct_node, dicom_database)
        if files:
            out = unique_path(Path(folder), f"RS_{label}", ".dcm")
            with tempfile.TemporaryDirectory(prefix="cervixtl-export-") as tmp:
                series = Path(tmp) / "ct"
                series.mkdir()
                for i, f in enumerate(files):  # only this series, whatever else its folder holds
                    shutil.copyfile(f, series / f"{i:05d}.dcm")
                seg_file = nodes.write_segmentation_node(seg_node, ct_node, Path(tmp) / "contours.seg.nrrd")
                run_engine(["rtstruct", "export", str(series), str(seg_file), str(out),
                            "--structure-set-label", label], timeout_s=600)
            return out
        if slicer_rt is not None:
            return nodes.export_with_slicer_rt(slicer_rt, ct_node, seg_node, Path(folder))
        raise ValueError("the CT was not loaded from DICOM: an RTSTRUCT must refer to the CT's DICOM series "
                         "(load the CT from the DICOM database, or install SlicerRT to export CT + RTSTRUCT as a "
                         "new study)")

    def save_case(self, ct_node: Any, seg_node: Any, *, site: str | None = None,
                  names: Sequence[str] | None = None) -> str:
        """Store the CT, the edited contours and the model's original proposal in the case library with
        ``cervixtl cases add`` (anonymised: no names, dates or UIDs are written); returns the case id."""
        nodes.check_same_ct(seg_node, ct_node, "save the case")
        with tempfile.TemporaryDirectory(prefix="cervixtl-case-") as tmp:
            ct_path = nodes.write_volume(ct_node, Path(tmp) / "ct.nii.gz")
            final = nodes.write_segmentation_node(seg_node, ct_node, Path(tmp) / "final.seg.nrrd", names)
            args = ["cases", "add", str(ct_path), str(final)]
            proposal = nodes.proposal_copy(seg_node)
            if proposal is not None:
                args += ["--proposal", str(nodes.write_segmentation_node(proposal, ct_node,
                                                                         Path(tmp) / "proposal.seg.nrrd", names))]
            if site:
                args += ["--site", site]
            if self.cases_dir:
                args += ["--cases-dir", self.cases_dir]
            out = run_engine(args, timeout_s=600)
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        if not lines:
            raise EngineError("cervixtl cases add printed no case id")
        return lines[-1]
