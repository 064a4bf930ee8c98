"""Fill MRML table and plot nodes (works with Slicer and with the ``slicer-core`` libraries; no Qt).

Functions take the scene / nodes as arguments and use only VTK and MRML calls, so that tests can run them on a
real ``vtkMRMLScene``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import vtk

#: Progress ``stage`` values whose ``val_dice`` is a new validation result.
VALIDATION_STAGES = ("validate", "validation", "val")
#: Column types understood by :func:`fill_table`.
_ARRAY_TYPES = {"string": vtk.vtkStringArray, "double": vtk.vtkDoubleArray, "int": vtk.vtkIntArray}


def fill_table(table_node: Any, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> Any:
    """Replace the content of ``table_node`` (a ``vtkMRMLTableNode``) by ``rows``.

    Args:
        columns: (name, type) per column; type is "string", "double" or "int".
        rows: one sequence of values per row, in column order; None becomes "" / NaN / 0.
    """
    table = vtk.vtkTable()
    arrays = []
    for name, kind in columns:
        arr = _ARRAY_TYPES[kind]()
        arr.SetName(name)
        arrays.append((arr, kind))
    for row in rows:
        for (arr, kind), value in zip(arrays, row):
            if kind == "string":
                arr.InsertNextValue("" if value is None else str(value))
            elif kind == "double":
                arr.InsertNextValue(math.nan if value is None else float(value))
            else:
                arr.InsertNextValue(0 if value is None else int(value))
    for arr, _ in arrays:
        table.AddColumn(arr)
    table_node.SetAndObserveTable(table)
    table_node.Modified()
    return table_node


def table_rows(table_node: Any) -> list[dict[str, Any]]:
    """The rows of a ``vtkMRMLTableNode`` as dicts column name -> value (for tests and the GUI)."""
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    out = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c, name in enumerate(names):
            arr = table.GetColumn(c)
            row[name] = arr.GetValue(r)
        out.append(row)
    return out


def get_or_add_node(scene: Any, class_name: str, name: str) -> Any:
    """The first node of ``class_name`` called ``name`` in ``scene``, added when there is none."""
    node = scene.GetFirstNode(name, class_name)
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
    return node


def set_series(scene: Any, chart: Any, series_name: str, table_node: Any, x_column: str | None,
               y_column: str, *, plot_type: str = "line", color: tuple[float, float, float] = (0.2, 0.4, 0.8),
               label_column: str | None = None) -> Any:
    """Get or add the ``vtkMRMLPlotSeriesNode`` called ``series_name`` plotting ``y_column`` of ``table_node``
    (against ``x_column``, or bars labelled by ``label_column``) and make sure ``chart`` shows it."""
    series = get_or_add_node(scene, "vtkMRMLPlotSeriesNode", series_name)
    series.SetAndObserveTableNodeID(table_node.GetID())
    if x_column:
        series.SetXColumnName(x_column)
    series.SetYColumnName(y_column)
    if label_column:
        series.SetLabelColumnName(label_column)
    if plot_type == "bar":
        series.SetPlotType(series.PlotTypeBar)
    else:
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleNone)
        series.SetLineStyle(series.LineStyleSolid)
    series.SetColor(*color)
    if not chart.HasPlotSeriesNodeID(series.GetID()):
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return series


class TrainingCurve:
    """The live loss / validation-Dice curve of a fine-tuning run, fed from the engine's JSON progress lines.

    Two ``vtkMRMLTableNode`` (loss per step; validation Dice per step, which arrives less often) and one
    ``vtkMRMLPlotChartNode`` with a series for each. Call :meth:`reset` before a new run and :meth:`add` with
        every progress record; records without ``step`` are ignored, a repeated step is not added twice, and the
    validation Dice is taken from ``stage="validate"`` records only (training lines repeat the best value so
    far). A resumed run restarts at its last checkpoint: points after that step are dropped and re-drawn.
    """

    LOSS_COLUMNS = (("step", "int"), ("epoch", "int"), ("loss", "double"), ("elapsed_s", "double"))
    VAL_COLUMNS = (("step", "int"), ("epoch", "int"), ("val_dice", "double"))

    def __init__(self, scene: Any, loss_table: Any = None, val_table: Any = None, chart: Any = None) -> None:
        self.scene = scene
        self.loss_table = loss_table or get_or_add_node(scene, "vtkMRMLTableNode", "CervixTL training loss")
        self.val_table = val_table or get_or_add_node(scene, "vtkMRMLTableNode", "CervixTL validation Dice")
        self.chart = chart or get_or_add_node(scene, "vtkMRMLPlotChartNode", "CervixTL training curve")
        self._last_loss_step: int | None = None
        self._last_val_step: int | None = None
        if self._has_columns(self.loss_table, self.LOSS_COLUMNS) and self._has_columns(self.val_table,
                                                                                       self.VAL_COLUMNS):
            # existing curve (e.g. a run to resume): keep its points
            self._last_loss_step = self._last_step(self.loss_table)
            self._last_val_step = self._last_step(self.val_table)
            self._connect()
        else:
            self.reset()

    @staticmethod
    def _has_columns(table_node: Any, columns: Sequence[tuple[str, str]]) -> bool:
        table = table_node.GetTable()
        return [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == [n for n, _ in columns]

    @staticmethod
    def _last_step(table_node: Any) -> int | None:
        table = table_node.GetTable()
        n = table.GetNumberOfRows()
        return int(table.GetColumn(0).GetValue(n - 1)) if n else None

    def _connect(self) -> None:
        self.chart.SetTitle("Fine-tuning: training loss and validation Dice")
        self.chart.SetXAxisTitle("step")
        self.chart.SetYAxisTitle("loss / Dice")
        set_series(self.scene, self.chart, "CervixTL loss", self.loss_table, "step", "loss", color=(0.85, 0.33, 0.1))
        set_series(self.scene, self.chart, "CervixTL validation Dice", self.val_table, "step", "val_dice",
                   color=(0.0, 0.45, 0.74))

    def reset(self) -> None:
        """Empty both tables and (re)connect the chart's series."""
        fill_table(self.loss_table, self.LOSS_COLUMNS, [])
        fill_table(self.val_table, self.VAL_COLUMNS, [])
        self._last_loss_step = self._last_val_step = None
        self._connect()

    @staticmethod
    def _append(table_node: Any, values: Sequence[float]) -> None:
        table = table_node.GetTable()
        for c, v in enumerate(values):
            arr = table.GetColumn(c)
            if isinstance(arr, vtk.vtkIntArray):
                arr.InsertNextValue(int(v))
            else:
                arr.InsertNextValue(float(v))
        table.Modified()
        table_node.Modified()

    @staticmethod
    def _truncate(table_node: Any, first_dropped_step: int) -> None:
        """Drop the last rows whose step is >= ``first_dropped_step`` (rows are in step order)."""
        table = table_node.GetTable()
        n = table.GetNumberOfRows()
        keep = n
        while keep > 0 and table.GetColumn(0).GetValue(keep - 1) >= first_dropped_step:
            keep -= 1
        if keep < n:
            for c in range(table.GetNumberOfColumns()):
                table.GetColumn(c).SetNumberOfTuples(keep)
            table.Modified()
            table_node.Modified()

    def add(self, rec: dict[str, Any]) -> bool:
        """Add the loss and/or validation Dice of one progress record; True when a table changed."""
        step = rec.get("step")
        if step is None:
            return False
        step = int(step)
        loss, vd = rec.get("loss"), rec.get("val_dice")
        has_loss = isinstance(loss, (int, float)) and math.isfinite(loss)
        # Only validation records carry a fresh validation Dice (training lines repeat the best so far).
        is_val = str(rec.get("stage", "")).lower() in VALIDATION_STAGES
        has_val = is_val and isinstance(vd, (int, float)) and math.isfinite(vd)
        changed = False
        for table, last, attr, has in ((self.loss_table, self._last_loss_step, "_last_loss_step", has_loss),
                                       (self.val_table, self._last_val_step, "_last_val_step", has_val)):
            if last is not None and step < last:  # a resumed run went back to its checkpoint
                self._truncate(table, step if has else step + 1)
                setattr(self, attr, self._last_step(table))
                changed = True
        epoch = int(rec.get("epoch") or 0)
        if has_loss and step != self._last_loss_step:
            self._append(self.loss_table, (step, epoch, float(loss), float(rec.get("elapsed_s") or math.nan)))
            self._last_loss_step = step
            changed = True
        if has_val and step != self._last_val_step:
            self._append(self.val_table, (step, epoch, float(vd)))
            self._last_val_step = step
            changed = True
        return changed

    @property
    def n_loss(self) -> int:
        """Number of loss points."""
        return self.loss_table.GetNumberOfRows()

    @property
    def n_val(self) -> int:
        """Number of validation-Dice points."""
        return self.val_table.GetNumberOfRows()
