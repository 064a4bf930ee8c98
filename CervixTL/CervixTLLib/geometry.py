"""Voxel-grid conversion between Slicer (RAS) and the CervixTL engine (LPS).

Slicer volume nodes hold an IJK->RAS 4 x 4 matrix; the engine's :class:`cervixtl.image.Image` holds spacing
(mm, x,y,z), origin (LPS mm, centre of voxel 0) and a direction matrix whose columns are the LPS unit vectors
of the i, j, k axes. LPS = diag(-1, -1, 1) RAS, so IJK->LPS is IJK->RAS with its first two rows negated.
Both sides index voxel arrays (k, j, i) = (z, y, x) (``slicer.util.arrayFromVolume`` order), so arrays are
shared unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: RAS <-> LPS flip (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_matrix_from_ras(ijk_to_ras: np.ndarray) -> np.ndarray:
    """IJK->LPS (4 x 4) from an IJK->RAS matrix (4 x 4, mm)."""
    return RAS_TO_LPS @ np.asarray(ijk_to_ras, dtype=float).reshape(4, 4)


def ras_matrix_from_lps(ijk_to_lps: np.ndarray) -> np.ndarray:
    """IJK->RAS (4 x 4) from an IJK->LPS matrix (4 x 4, mm)."""
    return RAS_TO_LPS @ np.asarray(ijk_to_lps, dtype=float).reshape(4, 4)


def grid_from_ijk_to_ras(ijk_to_ras: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float],
                                                          np.ndarray]:
    """(spacing mm (x,y,z), origin LPS mm, direction 3 x 3 with LPS unit columns) of an IJK->RAS matrix.

    Raises:
        ValueError: a zero-length axis (degenerate matrix).
    """
    m = lps_matrix_from_ras(ijk_to_ras)
    axes = m[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"degenerate IJK->RAS matrix (voxel spacing {spacing.tolist()} mm)")
    direction = axes / spacing[None, :]
    return (tuple(float(s) for s in spacing), tuple(float(o) for o in m[:3, 3]), direction)  # type: ignore[return-value]


def ijk_to_ras_from_grid(spacing: Sequence[float], origin_lps: Sequence[float],
                         direction_lps: np.ndarray) -> np.ndarray:
    """IJK->RAS (4 x 4) from an engine grid: spacing mm (x,y,z), origin LPS mm, direction (LPS columns)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction_lps, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)[None, :]
    m[:3, 3] = np.asarray(origin_lps, dtype=float)
    return ras_matrix_from_lps(m)


def parse_margin_text(text: str) -> float | tuple[float, float, float, float, float, float]:
    """A margin typed by the user: one number (isotropic mm) or six ``R,L,A,P,S,I`` numbers (mm, 0..50).

    Raises:
        ValueError: not 1 or 6 numbers, or a value outside 0..50 mm.
    """
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"margin {text!r}: expected a number of mm or six numbers R,L,A,P,S,I") from None
    if len(values) not in (1, 6):
        raise ValueError(f"margin {text!r}: expected 1 or 6 values (R,L,A,P,S,I), got {len(values)}")
    if any(not (0.0 <= v <= 50.0) for v in values):
        raise ValueError(f"margin {text!r}: every value must be between 0 and 50 mm")
    return values[0] if len(values) == 1 else tuple(values)  # type: ignore[return-value]


def format_margin(margin: float | Sequence[float]) -> str:
    """Command-line form of a margin (``"7"`` or ``"10,10,15,15,10,10"``)."""
    if isinstance(margin, (int, float)):
        return f"{float(margin):g}"
    return ",".join(f"{float(v):g}" for v in margin)
