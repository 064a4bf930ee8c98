"""The one image type of CervixTL and its geometry.

Conventions (the same as DICOM and ITK/SimpleITK):

* ``Image.array`` is indexed **(z, y, x)**, i.e. ``array[k, j, i]`` -- the order of
  ``SimpleITK.GetArrayFromImage``.
* ``spacing``, ``origin`` and the index tuples passed to geometry helpers are in **(x, y, z)** = (i, j, k)
  order, as in SimpleITK.
* Physical points are in millimetres in the **LPS** patient frame: +x towards the patient's Left, +y
  Posterior, +z Superior. RAS (Slicer) is used only at the Slicer boundary.
* ``direction`` is a 3 x 3 matrix whose *columns* are the LPS unit vectors of the i, j, k index axes, so the
  physical position of voxel index (i, j, k) is ``origin + direction @ (spacing * (i, j, k))``.
* ``origin`` is the physical position of the **centre** of voxel (0, 0, 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from .errors import BadInput, GeometryMismatch

#: Patient direction names and their unit vectors in LPS.
PATIENT_DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "R": (-1.0, 0.0, 0.0),
    "L": (1.0, 0.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "S": (0.0, 0.0, 1.0),
    "I": (0.0, 0.0, -1.0),
}


@dataclass
class Image:
    """A 3D image on a voxel grid placed in LPS millimetres.

    Attributes:
        array: voxel values, shape (nz, ny, nx).
        spacing: voxel size in mm, (x, y, z) order.
        origin: LPS position in mm of the centre of voxel (0, 0, 0).
        direction: 3 x 3 matrix, columns = LPS unit vectors of the i, j, k (x, y, z) index axes.
        meta: free-form, non-identifying metadata (modality, series description, series UID, ...).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise BadInput(f"expected a 3D image, got an array of shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if len(self.spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise BadInput(f"invalid voxel spacing {self.spacing}: every spacing must be a positive number of mm")

    # ------------------------------------------------------------------ construction / conversion
    @classmethod
    def from_sitk(cls, img: sitk.Image, meta: dict[str, Any] | None = None) -> Image:
        """Wrap a 3D SimpleITK image (its array becomes (z, y, x))."""
        if img.GetDimension() != 3:
            raise BadInput(f"expected a 3D image, got {img.GetDimension()}D")
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise BadInput(f"expected a scalar image, got {img.GetNumberOfComponentsPerPixel()} components per voxel")
        return cls(
            array=sitk.GetArrayFromImage(img),
            spacing=img.GetSpacing(),
            origin=img.GetOrigin(),
            direction=np.array(img.GetDirection()).reshape(3, 3),
            meta=dict(meta or {}),
        )

    def to_sitk(self) -> sitk.Image:
        """Return a SimpleITK image with the same voxels and geometry."""
        arr = self.array
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(tuple(self.direction.ravel()))
        return img

    def with_array(self, array: np.ndarray, **meta: Any) -> Image:
        """A new image on the same grid with other voxel values (shape must match)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise GeometryMismatch(f"array shape {array.shape} does not match the grid {self.array.shape}")
        return Image(array, self.spacing, self.origin, self.direction.copy(), {**self.meta, **meta})

    # ------------------------------------------------------------------ geometry
    @property
    def size(self) -> tuple[int, int, int]:
        """Grid size in voxels, (x, y, z) order."""
        nz, ny, nx = self.array.shape
        return (nx, ny, nz)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(np.prod(self.spacing))

    def index_to_physical(self, ijk: Sequence[float] | np.ndarray) -> np.ndarray:
        """LPS position (mm) of a continuous index (i, j, k) = (x, y, z) order."""
        return np.asarray(self.origin) + self.direction @ (np.asarray(self.spacing) * np.asarray(ijk, dtype=float))

    def physical_to_index(self, xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous index (i, j, k) of an LPS point (mm)."""
        return np.linalg.solve(self.direction, np.asarray(xyz, dtype=float) - np.asarray(self.origin)) / np.asarray(
            self.spacing
        )

    def orientation_code(self) -> str:
        """Three-letter ITK/DICOM orientation code of the index axes, e.g. ``"LPS"`` (i towards Left, j
        Posterior, k Superior) or ``"RAS"``. Oblique axes take the closest direction."""
        return orientation_code(self.direction)

    def axis_directions(self) -> list[str]:
        """For each *array* axis (z, y, x), the patient direction (R/L/A/P/S/I) that increasing index goes to.

        Raises:
            BadInput: the image is oblique (an index axis is not along a patient axis).
        """
        out = []
        for col in (2, 1, 0):  # array axes z, y, x <-> index axes k, j, i
            v = self.direction[:, col]
            m = int(np.argmax(np.abs(v)))
            if abs(abs(v[m]) - 1.0) > 1e-3:
                raise BadInput(
                    "oblique image orientation (direction cosines not along patient axes) is not supported here"
                )
            out.append("LPS"[m] if v[m] > 0 else "RAI"[m])
        return out

    def same_geometry(self, other: Image, tol: float = 1e-3) -> bool:
        """True when ``other`` has the same size and (within ``tol`` mm / direction cosine) spacing, origin and
        direction."""
        return not geometry_differences(self, other, tol)

    def require_same_geometry(self, other: Image, what: str = "mask", tol: float = 1e-3,
                              against: str = "the CT grid") -> None:
        """Raise :class:`GeometryMismatch` naming every difference between this grid and ``other``'s
        (``against`` names this grid in the message)."""
        diffs = geometry_differences(self, other, tol)
        if diffs:
            raise GeometryMismatch(f"{what} does not match {against}: " + "; ".join(diffs))

    def copy_geometry(self) -> dict[str, Any]:
        """Geometry as a JSON-friendly dict (size, spacing, origin, direction; (x, y, z) order, LPS mm)."""
        return {
            "size": list(self.size),
            "spacing_mm": [round(s, 6) for s in self.spacing],
            "origin_mm": [round(o, 6) for o in self.origin],
            "direction": [round(float(d), 6) for d in self.direction.ravel()],
            "orientation": self.orientation_code(),
        }


def ijk_to_lps_matrix(img: Image) -> np.ndarray:
    """4 x 4 matrix from voxel index (i, j, k) to LPS mm: ``origin + direction @ (spacing * ijk)``. The one
    IJK -> LPS helper (its inverse, :func:`lps_to_ijk_matrix`, maps LPS mm to continuous indices)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(img.direction, dtype=float) * np.asarray(img.spacing, dtype=float)[None, :]
    m[:3, 3] = img.origin
    return m


def lps_to_ijk_matrix(img: Image) -> np.ndarray:
    """4 x 4 matrix from LPS mm to continuous voxel index (i, j, k); the inverse of :func:`ijk_to_lps_matrix`."""
    return np.linalg.inv(ijk_to_lps_matrix(img))


def orientation_code(direction: np.ndarray) -> str:
    """Orientation code (e.g. ``"LPS"``) of a 3 x 3 LPS direction matrix whose columns are the index axes."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    code = ""
    for col in range(3):
        v = d[:, col]
        m = int(np.argmax(np.abs(v)))
        code += "LPS"[m] if v[m] > 0 else "RAI"[m]
    return code


def geometry_differences(a: Image, b: Image, tol: float = 1e-3) -> list[str]:
    """Human-readable list of the differences between two voxel grids (empty when they match)."""
    diffs: list[str] = []
    if a.size != b.size:
        diffs.append(f"size {b.size} vs {a.size} voxels")
    if not np.allclose(a.spacing, b.spacing, atol=tol, rtol=0):
        diffs.append(f"spacing {_fmt(b.spacing)} vs {_fmt(a.spacing)} mm")
    if not np.allclose(a.origin, b.origin, atol=max(tol, 1e-3 * max(a.spacing)), rtol=0):
        diffs.append(f"origin {_fmt(b.origin)} vs {_fmt(a.origin)} mm")
    if not np.allclose(a.direction, b.direction, atol=1e-4, rtol=0):
        diffs.append(f"direction {orientation_code(b.direction)} vs {orientation_code(a.direction)}")
    return diffs


def _xyz(v: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Three numbers (x, y, z) as a float triple."""
    x, y, z = (float(t) for t in v)
    return (x, y, z)


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"


# ---------------------------------------------------------------------------- resampling
def resample_to_spacing(image: Image, spacing: Sequence[float], *, label: bool = False, default: float | None = None) -> Image:
    """Resample ``image`` to a new voxel ``spacing`` (mm, (x, y, z) order) covering the same physical box.

    The outer edges of the grid are kept: the first voxel's corner stays where it was, so the image is not
    shifted by half a voxel (origin is a voxel *centre*, so the new origin moves by ``(new - old) / 2`` along
    each index axis). Linear interpolation for intensities, nearest neighbour for labels (``label=True``).

    Args:
        image: input image.
        spacing: target spacing in mm, (x, y, z).
        label: nearest-neighbour interpolation and integer output.
        default: value outside the input (default: the image minimum, or 0 for labels).
    """
    sp = np.asarray(spacing, dtype=float)
    old_sp = np.asarray(image.spacing)
    extent = np.asarray(image.size) * old_sp
    new_size = np.maximum(1, np.round(extent / sp).astype(int))
    new_origin = image.index_to_physical(-0.5 + 0.5 * sp / old_sp)
    ref = Image(np.zeros(new_size[::-1], dtype=np.uint8), _xyz(sp), _xyz(new_origin), image.direction)
    return resample_to_reference(image, ref, label=label, default=default)


def resample_to_reference(image: Image, reference: Image, *, label: bool = False, default: float | None = None) -> Image:
    """Resample ``image`` onto the voxel grid of ``reference`` (physical positions are preserved).

    Linear interpolation for intensities, nearest neighbour for labels. Voxels of the reference outside the
    input get ``default`` (image minimum, or 0 for labels).
    """
    src = image.to_sitk()
    ref = reference.to_sitk()
    if default is None:
        default = 0.0 if label else float(np.min(image.array)) if image.array.size else 0.0
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    pixel = src.GetPixelID() if label else sitk.sitkFloat32
    out = sitk.Resample(src, ref, sitk.Transform(), interp, float(default), pixel)
    arr = sitk.GetArrayFromImage(out)
    if image.array.dtype == bool:
        arr = arr.astype(bool)
    return Image(arr, reference.spacing, reference.origin, reference.direction.copy(), dict(image.meta))


def reorient(image: Image, code: str = "LPS") -> Image:
    """Permute/flip the voxel axes so that the index axes point to ``code`` (e.g. ``"LPS"``); no interpolation,
    physical positions unchanged."""
    out = sitk.DICOMOrient(image.to_sitk(), code)
    res = Image.from_sitk(out, image.meta)
    if image.array.dtype == bool:
        res.array = res.array.astype(bool)
    return res
